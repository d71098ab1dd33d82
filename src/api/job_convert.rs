//! Jobs on the wire.

use super::{convert, status};
use crate::{
    engine::Job,
    jobs::{JobChange, JobState},
    proto as pb,
};
use tonic::Status;

pub fn state_to_proto(state: JobState) -> pb::JobState {
    match state {
        JobState::Queued => pb::JobState::Queued,
        JobState::Running => pb::JobState::Running,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

pub fn state_from_proto(value: i32) -> Option<JobState> {
    match pb::JobState::try_from(value).ok()? {
        pb::JobState::Queued => Some(JobState::Queued),
        pb::JobState::Running => Some(JobState::Running),
        pb::JobState::Succeeded => Some(JobState::Succeeded),
        pb::JobState::Failed => Some(JobState::Failed),
        pb::JobState::Cancelled => Some(JobState::Cancelled),
        pb::JobState::Unspecified => None,
    }
}

pub fn job_to_proto(job: &Job) -> Result<pb::Job, Status> {
    let report = match &job.report {
        Some(report) => {
            let mut wire =
                convert::report_to_proto(report).map_err(|e| status::engine(&e.into()))?;
            wire.job = job.id.name();
            Some(wire)
        }
        None => None,
    };
    Ok(pb::Job {
        name: job.id.name(),
        state: state_to_proto(job.state) as i32,
        query: Some(convert::query_to_proto(&job.query)),
        parts: job
            .parts
            .iter()
            .map(|part| pb::JobPart {
                provider_account: part.account.id.to_string(),
                provider: convert::provider_kind_to_proto(part.account.kind) as i32,
                state: state_to_proto(part.state) as i32,
                progress_note: part.note.clone(),
                polls: part.polls.min(i32::MAX as u32) as i32,
                next_poll_time: part.next_poll_at.map(convert::time_to_proto),
                error: part
                    .error
                    .as_ref()
                    .map(|e| status::upstream_failure(&part.account, e)),
                upstream_token: part
                    .upstream_query
                    .as_ref()
                    .map(|q| q.token.clone())
                    .unwrap_or_default(),
                upstream_create_time: part
                    .upstream_query
                    .as_ref()
                    .map(|q| convert::time_to_proto(q.created_at)),
                last_upstream_status: part
                    .upstream_query
                    .as_ref()
                    .map_or(0, |q| i32::from(q.last_status)),
            })
            .collect(),
        report,
        error: job
            .error
            .as_deref()
            .map(|error| status::to_rpc_status(status::engine(error))),
        create_time: Some(convert::time_to_proto(job.create_time)),
        update_time: Some(convert::time_to_proto(job.update_time)),
        expire_time: job.expire_time.map(convert::time_to_proto),
    })
}

/// The event kind of a snapshot after the first: FINAL once the job has ended.
pub fn event_kind(job: &Job) -> pb::JobEventKind {
    if job.state.is_final() {
        pb::JobEventKind::Final
    } else {
        match job.last_change {
            JobChange::StateChanged => pb::JobEventKind::StateChanged,
            JobChange::Progress => pb::JobEventKind::Progress,
        }
    }
}
