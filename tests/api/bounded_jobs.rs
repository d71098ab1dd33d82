//! The job table is bounded: StartQuery for a query identical to a running job joins it, a table
//! holding `jobs.max_jobs` refuses new ones with RESOURCE_EXHAUSTED, and a held job's memory is
//! measured with the counting allocator.

use crate::{helpers::*, weigher::live};
use costd::{
    App,
    api::QueryRules,
    clock::SystemClock,
    domain::ProviderKind,
    jobs::{JobManager, MemoryJobStore},
    proto as pb,
    sandbox::{Fault, Sandbox, SandboxOptions},
};
use pb::query_job_service_client::QueryJobServiceClient;
use std::{collections::HashSet, net::SocketAddr, sync::Arc, time::Duration};
use tonic_types::StatusExt;

fn month(from: &str, to: &str) -> pb::CostQuery {
    query(from, to, &[pb::GroupBy::Service], pb::Granularity::None)
}

async fn start(app: &TestApp, asked: pb::CostQuery) -> Result<pb::Job, tonic::Status> {
    let job = QueryJobServiceClient::new(app.channel.clone())
        .start_query(pb::StartQueryRequest { query: Some(asked) })
        .await?;
    Ok(job.into_inner().job.expect("a job"))
}

#[tokio::test]
async fn identical_start_queries_join_the_running_job_and_its_one_upstream_request() {
    let app = spawn_app_with(|s| s.accounts.retain(|a| a.id.as_str() == "team-acme")).await;
    let acme = team_scope("team_acme");
    app.sandbox.set_persistent_fault(&acme, Fault::Hang);
    let asked = month("2026-01-01", "2026-02-01");

    let started =
        futures::future::join_all((0..50).map(|_| within(start(&app, asked.clone())))).await;
    within(app.sandbox.wait_for_requests(&acme, 1)).await;

    let names: HashSet<String> = started
        .into_iter()
        .map(|job| job.expect("started").name)
        .collect();
    assert_eq!(names.len(), 1, "one job for one query: {names:?}");
    let listed = QueryJobServiceClient::new(app.channel.clone())
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .expect("listed")
        .into_inner();
    assert_eq!(listed.jobs.len(), 1);
    assert_eq!(app.sandbox.request_count(&acme), 1, "one upstream request");
}

#[tokio::test]
async fn beyond_max_jobs_a_new_job_is_resource_exhausted_and_an_identical_one_still_joins() {
    let app = spawn_app_with(|s| {
        s.accounts.retain(|a| a.id.as_str() == "team-acme");
        s.jobs.max_jobs = 2;
    })
    .await;
    let acme = team_scope("team_acme");
    app.sandbox.set_persistent_fault(&acme, Fault::Hang);
    let january = month("2026-01-01", "2026-02-01");
    let first = start(&app, january.clone()).await.expect("first");
    start(&app, month("2026-02-01", "2026-03-01"))
        .await
        .expect("second");

    let refused = start(&app, month("2026-03-01", "2026-04-01"))
        .await
        .expect_err("the table is full");
    let mut hurried = tonic::Request::new(pb::GetCostsRequest {
        query: Some(month("2026-04-01", "2026-05-01")),
    });
    hurried.set_timeout(Duration::from_millis(500));
    let pending_refused = app
        .costs
        .clone()
        .get_costs(hurried)
        .await
        .expect_err("pending work needs a job");
    let joined = start(&app, january).await.expect("joins, takes no room");

    for status in [&refused, &pending_refused] {
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(status.get_details_retry_info().is_some(), "{status:?}");
        let info = status.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.metadata["limit"], "jobs.max_jobs");
        assert_eq!(info.metadata["allowed"], "2");
    }
    assert_eq!(joined.name, first.name);
}

/// Bytes the job table holds per finished job of a small report (three teams by service), counted by
/// the allocator on this thread: the test runs on a current-thread runtime, so the owner tasks' and
/// the store's allocations are all counted here.
#[tokio::test]
async fn a_held_job_costs_a_few_kilobytes() {
    const JOBS: u64 = 500;
    let sandbox = Sandbox::start(SandboxOptions::default()).expect("sandbox starts");
    let mut settings = costd::demo::settings(&sandbox, SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("demo settings");
    settings
        .accounts
        .retain(|a| a.provider() == ProviderKind::TeamBilling);
    let app = App::build(settings).await.expect("builds");
    let engine = app.engine();
    let rules = QueryRules {
        known_accounts: engine.account_ids(),
        max_range_days: 731,
    };
    let asked = |staleness: u64| {
        let mut query = month("2026-01-01", "2026-02-01");
        // Distinct queries over the same cached chunks: each is its own job with the same report.
        query.max_staleness = Some(prost_types::Duration {
            seconds: i64::try_from(staleness + 1).expect("small"),
            nanos: 0,
        });
        rules
            .parse(Some(query), &costd::auth::Access::Open)
            .expect("valid")
    };
    let jobs = JobManager::new(
        Arc::new(MemoryJobStore::default()),
        engine.clone(),
        Arc::new(SystemClock),
        chrono::Duration::hours(1),
        usize::MAX,
    );
    let run = |staleness: u64| {
        let jobs = jobs.clone();
        let query = asked(staleness);
        async move {
            let job = jobs
                .join_or_start(query, Vec::new(), None)
                .await
                .expect("room");
            let mut updates = jobs
                .subscribe(&job.id)
                .await
                .expect("the store answers")
                .expect("watchable");
            within(updates.wait_for(|job| job.state.is_final()))
                .await
                .expect("finishes");
        }
    };
    // The first job fills the cache and warms every lazy structure; only later jobs are counted.
    run(0).await;

    let before = live();
    for staleness in 1..=JOBS {
        run(staleness).await;
    }
    let per_job = (live() - before) / JOBS as isize;

    println!("memory per held job (3 accounts, by service, one month): {per_job} bytes");
    assert_eq!(jobs.list().await.expect("listed").len(), JOBS as usize + 1);
    assert!(
        (256..16 * 1024).contains(&per_job),
        "{per_job} bytes per job"
    );
}
