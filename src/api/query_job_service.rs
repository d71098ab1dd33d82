//! QueryJobService: start, inspect, list, cancel and watch jobs.

use super::{
    QueryRules, guard, job_convert,
    page_token::{self, PageRequest, PageSizes},
    status,
};
use crate::{
    auth::Access,
    engine::{Job, Jobs},
    jobs::JobId,
    proto as pb,
    sync::lock,
};
use futures::{Stream, StreamExt};
use std::{pin::Pin, sync::Arc};
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tonic_types::FieldViolation;

const JOB_PAGES: PageSizes = PageSizes {
    default: 50,
    max: 500,
};

pub struct QueryJobApi {
    jobs: Arc<Jobs>,
    rules: Arc<QueryRules>,
    converted: Arc<Converted>,
}

/// The wire form of each job's latest snapshot, converted once however many subscribers send it.
#[derive(Default)]
struct Converted(std::sync::Mutex<std::collections::HashMap<JobId, ConvertedSnapshot>>);

/// A snapshot and its wire form.
type ConvertedSnapshot = (Arc<Job>, Arc<pb::Job>);

impl Converted {
    fn of(&self, job: &Arc<Job>) -> Result<Arc<pb::Job>, Status> {
        let mut cache = lock(&self.0);
        if let Some((snapshot, wire)) = cache.get(&job.id)
            && Arc::ptr_eq(snapshot, job)
        {
            return Ok(wire.clone());
        }
        let wire = Arc::new(job_convert::job_to_proto(job)?);
        if job.state.is_final() {
            // Finished jobs are sent once more at most; keep the map to the jobs still moving.
            cache.remove(&job.id);
        } else {
            cache.insert(job.id.clone(), (job.clone(), wire.clone()));
        }
        Ok(wire)
    }
}

impl QueryJobApi {
    pub fn new(jobs: Arc<Jobs>, rules: Arc<QueryRules>) -> Self {
        QueryJobApi {
            jobs,
            rules,
            converted: Arc::default(),
        }
    }

    /// The job, if it exists for this caller: another owner's job is NOT_FOUND like an unknown one,
    /// so job names tell nothing of other callers' work.
    async fn job(&self, name: &str, access: &Access) -> Result<Arc<Job>, Status> {
        let id = job_id(name)?;
        self.jobs
            .get(&id)
            .await
            .map_err(|e| status::job_store(&e))?
            .filter(|job| access.sees_job_of(job.owner.as_deref()))
            .ok_or_else(|| status::job_not_found(name))
    }
}

fn job_id(name: &str) -> Result<JobId, Status> {
    JobId::from_name(name).ok_or_else(|| {
        status::invalid_argument(vec![FieldViolation::new(
            "name",
            "must be a job name, jobs/{32 hex digits}",
        )])
    })
}

type Events = Pin<Box<dyn Stream<Item = Result<pb::WatchJobResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::query_job_service_server::QueryJobService for QueryJobApi {
    type WatchJobStream = Events;

    async fn start_query(
        &self,
        request: Request<pb::StartQueryRequest>,
    ) -> Result<Response<pb::StartQueryResponse>, Status> {
        let access = guard::access(request.extensions())?;
        let note = guard::Note::of(request.extensions());
        let query = self.rules.parse(request.into_inner().query, &access)?;
        note.accounts(guard::touched(&query));
        let job = self
            .jobs
            .join_or_start(query, Vec::new(), access.owner())
            .await
            .map_err(|e| status::job_start(&e))?;
        Ok(Response::new(pb::StartQueryResponse {
            job: Some(job_convert::job_to_proto(&job)?),
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let access = guard::access(request.extensions())?;
        let job = self.job(&request.into_inner().name, &access).await?;
        Ok(Response::new(pb::GetJobResponse {
            job: Some(job_convert::job_to_proto(&job)?),
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let access = guard::access(request.extensions())?;
        let asked = request.into_inner();
        let mut violations = Vec::new();
        let mut states = Vec::new();
        for (index, value) in asked.states.iter().enumerate() {
            match job_convert::state_from_proto(*value) {
                Some(state) => states.push(state),
                None => violations.push(FieldViolation::new(
                    format!("states[{index}]"),
                    "must be a job state, not UNSPECIFIED",
                )),
            }
        }
        // Tokens are bound to the state filter, as record page tokens are bound to their query.
        let fingerprint = page_token::fingerprint_bytes(format!("{:?}", asked.states).as_bytes());
        let page = PageRequest::parse(
            asked.page_size,
            &asked.page_token,
            JOB_PAGES,
            Some(fingerprint),
            &mut violations,
        );
        if !violations.is_empty() {
            return Err(status::invalid_argument(violations));
        }
        let matching: Vec<Arc<Job>> = self
            .jobs
            .list()
            .await
            .map_err(|e| status::job_store(&e))?
            .into_iter()
            .filter(|job| states.is_empty() || states.contains(&job.state))
            .filter(|job| access.sees_job_of(job.owner.as_deref()))
            .collect();
        let (matching, next_page_token) = page.slice(&matching);
        let jobs = matching
            .iter()
            .map(|job| job_convert::job_to_proto(job))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs,
            next_page_token,
        }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let access = guard::access(request.extensions())?;
        let name = request.into_inner().name;
        let id = self.job(&name, &access).await?.id.clone();
        let job = self
            .jobs
            .cancel(&id)
            .await
            .map_err(|e| status::job_store(&e))?
            .ok_or_else(|| status::job_not_found(&name))?;
        Ok(Response::new(pb::CancelJobResponse {
            job: Some(job_convert::job_to_proto(&job)?),
        }))
    }

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let access = guard::access(request.extensions())?;
        let name = request.into_inner().name;
        let id = self.job(&name, &access).await?.id.clone();
        let updates = self
            .jobs
            .subscribe(&id)
            .await
            .map_err(|e| status::job_store(&e))?
            .ok_or_else(|| status::job_not_found(&name))?;
        Ok(Response::new(events(updates, self.converted.clone())))
    }
}

enum Watching {
    First(watch::Receiver<Arc<Job>>),
    Next(watch::Receiver<Arc<Job>>),
    /// A job already finished when the watch began: its snapshot went out, the final event follows.
    FinalOf(Arc<Job>),
    Done,
}

/// The current snapshot (always first), then each newer one this subscriber gets to see (the latest
/// when it falls behind), ending with the final one. Each subscriber only ever holds the latest snapshot.
fn events(updates: watch::Receiver<Arc<Job>>, converted: Arc<Converted>) -> Events {
    futures::stream::unfold(Watching::First(updates), move |watching| {
        let converted = converted.clone();
        async move {
            let (job, kind, next) = match watching {
                Watching::First(mut updates) => {
                    let job = updates.borrow_and_update().clone();
                    let next = if job.state.is_final() {
                        Watching::FinalOf(job.clone())
                    } else {
                        Watching::Next(updates)
                    };
                    (job, pb::JobEventKind::Snapshot, next)
                }
                Watching::Next(mut updates) => {
                    // The store dropped the job (expired): the stream ends.
                    updates.changed().await.ok()?;
                    let job = updates.borrow_and_update().clone();
                    let kind = job_convert::event_kind(&job);
                    let next = if job.state.is_final() {
                        Watching::Done
                    } else {
                        Watching::Next(updates)
                    };
                    (job, kind, next)
                }
                Watching::FinalOf(job) => (job, pb::JobEventKind::Final, Watching::Done),
                Watching::Done => return None,
            };
            let event = converted.of(&job).map(|wire| pb::WatchJobResponse {
                kind: kind as i32,
                job: Some((*wire).clone()),
            });
            let next = if event.is_err() { Watching::Done } else { next };
            Some((event, next))
        }
    })
    .boxed()
}
