//! Jobs have owners: another principal can neither get, watch, cancel nor list a job (NOT_FOUND, as for
//! a job that never was), unless its grant says `jobs = "all"`; identical queries of two principals
//! share the upstream work but not the job.

use super::kit::*;
use crate::helpers::*;
use costd::{
    config::{AuthConfig, JobVisibility},
    proto::{self as pb, query_job_service_client::QueryJobServiceClient},
};
use tonic::Code;

struct Callers {
    app: TestApp,
    signer: Signer,
    _files: Files,
}

impl Callers {
    async fn spawn() -> Self {
        let files = Files::new();
        let signer = Signer::es256("key-1");
        let auth = AuthConfig {
            jwt: Some(jwt(&files, &[&signer])),
            grants: vec![
                grant("svc-*", &["team-*"], JobVisibility::Own),
                grant("auditor", &["*"], JobVisibility::All),
            ],
        };
        Callers {
            app: spawn_with_auth(None, Some(auth), |_| {}).await,
            signer,
            _files: files,
        }
    }

    fn token(&self, principal: &str) -> String {
        self.signer.sign(&claims(principal))
    }

    fn jobs(&self) -> QueryJobServiceClient<tonic::transport::Channel> {
        QueryJobServiceClient::new(self.app.channel.clone())
    }

    async fn start(&self, principal: &str) -> pb::Job {
        let asked = only_accounts(
            query("2026-03-01", "2026-04-01", &[], pb::Granularity::None),
            &["team-acme"],
        );
        within(self.jobs().start_query(bearer(
            pb::StartQueryRequest { query: Some(asked) },
            &self.token(principal),
        )))
        .await
        .expect("started")
        .into_inner()
        .job
        .expect("a job")
    }

    async fn get(&self, principal: &str, name: &str) -> Result<pb::Job, tonic::Status> {
        let request = pb::GetJobRequest {
            name: name.to_string(),
        };
        let answer = within(self.jobs().get_job(bearer(request, &self.token(principal)))).await?;
        Ok(answer.into_inner().job.expect("a job"))
    }

    async fn list(&self, principal: &str) -> Vec<String> {
        let request = pb::ListJobsRequest::default();
        within(
            self.jobs()
                .list_jobs(bearer(request, &self.token(principal))),
        )
        .await
        .expect("listed")
        .into_inner()
        .jobs
        .into_iter()
        .map(|job| job.name)
        .collect()
    }

    /// Watches to the final event as `principal`.
    async fn finished(&self, principal: &str, name: &str) -> pb::Job {
        let request = pb::WatchJobRequest {
            name: name.to_string(),
        };
        let events = within(
            self.jobs()
                .watch_job(bearer(request, &self.token(principal))),
        )
        .await
        .expect("watching")
        .into_inner();
        last_job_of(events).await
    }
}

#[tokio::test]
async fn another_principals_job_cannot_be_read_watched_cancelled_or_listed() {
    // Arrange
    let callers = Callers::spawn().await;
    let job = callers.start("svc-a").await;
    let never = "jobs/0123456789abcdef0123456789abcdef";

    // Act
    let read = callers.get("svc-b", &job.name).await;
    let watched = within(callers.jobs().watch_job(bearer(
        pb::WatchJobRequest {
            name: job.name.clone(),
        },
        &callers.token("svc-b"),
    )))
    .await;
    let cancelled = within(callers.jobs().cancel_job(bearer(
        pb::CancelJobRequest {
            name: job.name.clone(),
        },
        &callers.token("svc-b"),
    )))
    .await;
    let unknown = callers.get("svc-b", never).await;

    // Assert
    for status in [
        read.expect_err("not B's"),
        watched.expect_err("not B's"),
        cancelled.expect_err("not B's"),
    ] {
        assert_eq!(status.code(), Code::NotFound);
        // Worded as for a job that never was, so a name tells nothing of other callers' work.
        assert_eq!(
            status.message().replace(&job.name, "NAME"),
            unknown
                .as_ref()
                .expect_err("unknown")
                .message()
                .replace(never, "NAME")
        );
    }
    assert!(callers.list("svc-b").await.is_empty());
    assert_eq!(callers.list("svc-a").await, std::slice::from_ref(&job.name));
    let finished = callers.finished("svc-a", &job.name).await;
    assert_eq!(
        finished.state,
        pb::JobState::Succeeded as i32,
        "B's cancel did not reach A's job"
    );
}

#[tokio::test]
async fn a_grant_with_jobs_all_sees_every_job_and_identical_queries_share_the_upstream_call() {
    // Arrange
    let callers = Callers::spawn().await;

    // Act
    let of_a = callers.start("svc-a").await;
    let of_b = callers.start("svc-b").await;
    let finished_a = callers.finished("svc-a", &of_a.name).await;
    let finished_b = callers.finished("svc-b", &of_b.name).await;
    let seen_by_auditor = callers.list("auditor").await;
    let read_by_auditor = callers.get("auditor", &of_a.name).await;

    // Assert
    assert_ne!(of_a.name, of_b.name, "never each other's job");
    assert_eq!(finished_a.state, pb::JobState::Succeeded as i32);
    assert_eq!(finished_b.state, pb::JobState::Succeeded as i32);
    assert_eq!(
        callers.app.sandbox.total_requests(),
        1,
        "one upstream call for one month of one team, whoever asked"
    );
    let mut expected = vec![of_a.name.clone(), of_b.name.clone()];
    let mut seen = seen_by_auditor.clone();
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected);
    assert_eq!(read_by_auditor.expect("auditor reads all").name, of_a.name);
    assert_eq!(callers.list("svc-a").await, [of_a.name]);
}
