//! The job table through the real server: watching a job from QUEUED to SUCCEEDED with its progress,
//! one Atlas query however many jobs ask, cancel, retention, slow subscribers, and GetCosts handing
//! pending work to a job.

use crate::helpers::*;
use costd::{clock::ManualClock, domain::ProviderKind, proto as pb, sandbox::Scope};
use pb::query_job_service_client::QueryJobServiceClient;
use std::{sync::Arc, time::Duration};
use tonic::transport::Channel;
use tonic_types::StatusExt;

async fn spawn_jobs(
    clock: Arc<dyn costd::clock::Clock>,
    kinds: &[ProviderKind],
    accounts: &'static [&'static str],
) -> TestApp {
    spawn_app_full(clock, kinds, move |settings, _| {
        if !accounts.is_empty() {
            settings
                .accounts
                .retain(|a| accounts.contains(&a.id.as_str()));
        }
    })
    .await
}

pub(crate) fn jobs(app: &TestApp) -> QueryJobServiceClient<Channel> {
    QueryJobServiceClient::new(app.channel.clone())
}

pub(crate) fn org(app: &TestApp, name: &str) -> &'static str {
    app.sandbox
        .atlas()
        .dataset()
        .orgs()
        .iter()
        .find(|o| o.name.starts_with(name))
        .expect("seeded")
        .id
}

pub(crate) async fn start(app: &TestApp, asked: pb::CostQuery) -> pb::Job {
    jobs(app)
        .start_query(pb::StartQueryRequest { query: Some(asked) })
        .await
        .expect("started")
        .into_inner()
        .job
        .expect("job")
}

/// Every event of a watch, to the end.
pub(crate) async fn watch_all(app: &TestApp, name: &str) -> Vec<pb::WatchJobResponse> {
    let mut stream = jobs(app)
        .watch_job(pb::WatchJobRequest {
            name: name.to_string(),
        })
        .await
        .expect("watching")
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = within(stream.message()).await.expect("a message") {
        events.push(event);
    }
    events
}

#[tokio::test]
async fn a_watcher_sees_the_job_run_with_growing_polls_to_exact_totals() {
    let app = spawn_jobs(
        Arc::new(costd::clock::SystemClock),
        &[ProviderKind::Atlas],
        &["atlas-kestrel"],
    )
    .await;
    app.sandbox
        .atlas()
        .set_org_processing_polls(org(&app, "Kestrel"), 4);
    let asked = query(
        "2025-04-01",
        "2025-05-01",
        &[pb::GroupBy::Service],
        pb::Granularity::None,
    );

    let job = start(&app, asked).await;
    assert!(
        job.name.starts_with("jobs/") && job.name.len() == 5 + 32,
        "{}",
        job.name
    );
    assert!([pb::JobState::Queued as i32, pb::JobState::Running as i32].contains(&job.state));
    let events = watch_all(&app, &job.name).await;

    let kinds: Vec<i32> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds.first(), Some(&(pb::JobEventKind::Snapshot as i32)));
    assert_eq!(kinds.last(), Some(&(pb::JobEventKind::Final as i32)));
    let polls: Vec<i32> = events
        .iter()
        .filter_map(|e| e.job.as_ref())
        .map(|j| j.parts[0].polls)
        .collect();
    assert!(
        polls.windows(2).all(|w| w[0] <= w[1]),
        "polls only grow: {polls:?}"
    );
    let notes: Vec<&str> = events
        .iter()
        .filter_map(|e| e.job.as_ref())
        .map(|j| j.parts[0].progress_note.as_str())
        .collect();
    assert!(
        notes.iter().any(|n| n.contains("processing, poll")),
        "{notes:?}"
    );
    let processing = events
        .iter()
        .filter_map(|e| e.job.as_ref())
        .map(|j| &j.parts[0])
        .find(|p| p.last_upstream_status == 102)
        .expect("a processing poll");
    assert_eq!(
        processing.upstream_token.len(),
        64,
        "the part records the upstream query's token"
    );
    assert!(processing.upstream_create_time.is_some());
    let last = events
        .last()
        .and_then(|e| e.job.clone())
        .expect("final job");
    assert_eq!(last.state, pb::JobState::Succeeded as i32);
    assert_eq!(last.parts[0].state, pb::JobState::Succeeded as i32);
    let report = last.report.expect("the report");
    assert_eq!(report.job, job.name);
    let dataset = app.sandbox.atlas().dataset();
    let kestrel = dataset.org(org(&app, "Kestrel")).expect("seeded");
    let day = |text: &str| chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("date");
    let expected: i128 = kestrel
        .usage(day("2025-04-01"), day("2025-05-01"))
        .map(|u| i128::from(u.amount_cents) * 10_000_000)
        .sum();
    assert_eq!(
        nanos(report.totals.and_then(|t| t.billed_cost).as_ref()),
        expected
    );
}

#[tokio::test]
async fn a_hundred_identical_start_queries_share_one_job_and_one_atlas_query_per_org() {
    let app = spawn_jobs(
        Arc::new(costd::clock::SystemClock),
        &[ProviderKind::Atlas],
        &[],
    )
    .await;
    let asked = query("2025-05-01", "2025-06-01", &[], pb::Granularity::None);

    let started = futures::future::join_all((0..100).map(|_| start(&app, asked.clone()))).await;
    let names: std::collections::HashSet<String> = started.iter().map(|j| j.name.clone()).collect();
    for name in names.iter().take(5) {
        let events = watch_all(&app, name).await;
        assert_eq!(
            events.last().and_then(|e| e.job.as_ref()).map(|j| j.state),
            Some(pb::JobState::Succeeded as i32)
        );
    }

    assert_eq!(
        names.len(),
        1,
        "an identical StartQuery joins the running job"
    );
    for name in ["Kestrel", "Lumen", "Quarry"] {
        assert_eq!(
            app.sandbox
                .atlas()
                .counters(org(&app, name))
                .queries_created,
            1,
            "{name}"
        );
    }
}

#[tokio::test]
async fn cancelling_a_job_stops_its_polls_unless_another_job_shares_them() {
    let app = spawn_jobs(
        Arc::new(costd::clock::SystemClock),
        &[ProviderKind::Atlas],
        &["atlas-quarry"],
    )
    .await;
    let quarry = org(&app, "Quarry");
    app.sandbox.atlas().set_org_processing_polls(quarry, 10_000);
    let alone = query("2025-06-01", "2025-07-01", &[], pb::Granularity::None);
    let shared = query("2025-07-01", "2025-08-01", &[], pb::Granularity::None);
    // Another query (an identical one would join the first job) asking Atlas the same month's body.
    let shared_monthly = query("2025-07-01", "2025-08-01", &[], pb::Granularity::Monthly);

    let lonely = start(&app, alone.clone()).await;
    let first = start(&app, shared.clone()).await;
    let second = start(&app, shared_monthly).await;
    within(app.sandbox.wait_for_requests(&Scope::atlas(quarry), 6)).await;
    let cancelled = jobs(&app)
        .cancel_job(pb::CancelJobRequest {
            name: lonely.name.clone(),
        })
        .await
        .expect("cancelled")
        .into_inner()
        .job
        .expect("job");
    jobs(&app)
        .cancel_job(pb::CancelJobRequest {
            name: first.name.clone(),
        })
        .await
        .expect("cancelled");

    assert_eq!(cancelled.state, pb::JobState::Cancelled as i32);
    assert_eq!(
        app.sandbox.atlas().counters(quarry).queries_created,
        2,
        "one per distinct body"
    );
    // The lonely query's fetch stopped: asking again creates a new upstream query. The shared one goes
    // on for the second job: asking again joins it.
    start(&app, alone).await;
    start(&app, shared).await;
    within(app.sandbox.wait_for_requests(&Scope::atlas(quarry), 8)).await;
    assert_eq!(app.sandbox.atlas().counters(quarry).queries_created, 3);
    let still = jobs(&app)
        .get_job(pb::GetJobRequest { name: second.name })
        .await
        .expect("job")
        .into_inner()
        .job
        .expect("job");
    assert_eq!(still.state, pb::JobState::Running as i32);
}

#[tokio::test]
async fn a_finished_job_is_not_found_after_its_retention() {
    let clock = ManualClock::new(at("2026-11-20T00:00:00Z"));
    let app = spawn_jobs(Arc::new(clock.clone()), &[ProviderKind::TeamBilling], &[]).await;
    let job = start(
        &app,
        query("2026-01-01", "2026-02-01", &[], pb::Granularity::None),
    )
    .await;
    let events = watch_all(&app, &job.name).await;
    assert_eq!(
        events.last().and_then(|e| e.job.as_ref()).map(|j| j.state),
        Some(pb::JobState::Succeeded as i32)
    );

    let again: Vec<i32> = watch_all(&app, &job.name)
        .await
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        again,
        [
            pb::JobEventKind::Snapshot as i32,
            pb::JobEventKind::Final as i32
        ],
        "a finished job: its snapshot, then the final event"
    );

    clock.advance(chrono::Duration::minutes(59));
    let kept = jobs(&app)
        .get_job(pb::GetJobRequest {
            name: job.name.clone(),
        })
        .await;
    clock.advance(chrono::Duration::minutes(2));
    let gone = jobs(&app)
        .get_job(pb::GetJobRequest {
            name: job.name.clone(),
        })
        .await
        .expect_err("expired");

    assert!(kept.is_ok());
    assert_eq!(gone.code(), tonic::Code::NotFound);
    let listed = jobs(&app)
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert!(listed.jobs.is_empty());
}

#[tokio::test]
async fn a_stalled_subscriber_neither_delays_others_nor_misses_the_final_event() {
    let app = spawn_jobs(
        Arc::new(costd::clock::SystemClock),
        &[ProviderKind::Atlas],
        &["atlas-lumen"],
    )
    .await;
    app.sandbox
        .atlas()
        .set_org_processing_polls(org(&app, "Lumen"), 8);
    let job = start(
        &app,
        query("2025-09-01", "2025-10-01", &[], pb::Granularity::None),
    )
    .await;
    // Subscribed, then not read until the job is over.
    let mut stalled = jobs(&app)
        .watch_job(pb::WatchJobRequest {
            name: job.name.clone(),
        })
        .await
        .expect("watching")
        .into_inner();

    let events = watch_all(&app, &job.name).await;
    assert!(
        events.len() >= 3,
        "the reading subscriber saw the job move: {}",
        events.len()
    );

    let mut stalled_events = Vec::new();
    while let Some(event) = within(stalled.message()).await.expect("a message") {
        stalled_events.push(event);
    }
    let last = stalled_events.last().expect("events");
    assert_eq!(last.kind, pb::JobEventKind::Final as i32);
    assert_eq!(
        last.job.as_ref().map(|j| j.state),
        Some(pb::JobState::Succeeded as i32)
    );
    assert!(
        last.job.as_ref().and_then(|j| j.report.as_ref()).is_some(),
        "the final event carries the report"
    );
}

#[tokio::test]
async fn get_costs_with_a_short_deadline_names_the_job_that_finishes_the_work() {
    let app = spawn_jobs(
        Arc::new(costd::clock::SystemClock),
        &[ProviderKind::Atlas, ProviderKind::TeamBilling],
        &["atlas-kestrel", "team-acme"],
    )
    .await;
    let kestrel = org(&app, "Kestrel");
    app.sandbox.atlas().set_org_processing_polls(kestrel, 15);
    let mut client = app.costs.clone();
    let mut hurried = tonic::Request::new(pb::GetCostsRequest {
        query: Some(query(
            "2025-10-01",
            "2025-11-01",
            &[],
            pb::Granularity::None,
        )),
    });
    hurried.set_timeout(Duration::from_millis(400));

    let report = client
        .get_costs(hurried)
        .await
        .expect("an answer")
        .into_inner()
        .report
        .expect("report");

    let atlas = result_of(&report, "atlas-kestrel");
    assert_eq!(atlas.state, pb::ResultState::Pending as i32);
    assert!(atlas.job.starts_with("jobs/"), "{atlas:?}");
    assert_eq!(report.job, atlas.job);
    assert_eq!(
        result_of(&report, "team-acme").state,
        pb::ResultState::Ok as i32,
        "the others answer meanwhile"
    );
    let events = watch_all(&app, &report.job).await;
    let last = events
        .last()
        .and_then(|e| e.job.clone())
        .expect("final job");
    assert_eq!(last.state, pb::JobState::Succeeded as i32);
    assert_eq!(
        app.sandbox.atlas().counters(kestrel).queries_created,
        1,
        "no second POST"
    );
}

#[tokio::test]
async fn job_names_states_and_pages_are_checked() {
    let app = spawn_jobs(
        Arc::new(costd::clock::SystemClock),
        &[ProviderKind::TeamBilling],
        &[],
    )
    .await;
    for month in 1..=3 {
        let job = start(
            &app,
            query(
                &format!("2026-0{month}-01"),
                &format!("2026-0{}-01", month + 1),
                &[],
                pb::Granularity::None,
            ),
        )
        .await;
        watch_all(&app, &job.name).await;
    }
    let mut client = jobs(&app);

    let bad_name = client
        .get_job(pb::GetJobRequest {
            name: "jobs/../../etc".into(),
        })
        .await
        .expect_err("refused");
    let unknown = client
        .get_job(pb::GetJobRequest {
            name: format!("jobs/{}", "0".repeat(32)),
        })
        .await
        .expect_err("unknown");
    let bad_states = client
        .list_jobs(pb::ListJobsRequest {
            states: vec![0],
            ..Default::default()
        })
        .await
        .expect_err("refused");
    let first = client
        .list_jobs(pb::ListJobsRequest {
            states: vec![pb::JobState::Succeeded as i32],
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .expect("page")
        .into_inner();
    let second = client
        .list_jobs(pb::ListJobsRequest {
            states: vec![pb::JobState::Succeeded as i32],
            page_size: 2,
            page_token: first.next_page_token.clone(),
        })
        .await
        .expect("page")
        .into_inner();
    let foreign = client
        .list_jobs(pb::ListJobsRequest {
            states: vec![],
            page_size: 2,
            page_token: first.next_page_token.clone(),
        })
        .await
        .expect_err("refused");

    assert_eq!(bad_name.code(), tonic::Code::InvalidArgument);
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert_eq!(
        bad_states
            .get_details_bad_request()
            .expect("details")
            .field_violations[0]
            .field,
        "states[0]"
    );
    assert_eq!((first.jobs.len(), second.jobs.len()), (2, 1));
    assert!(second.next_page_token.is_empty());
    assert_eq!(
        foreign.code(),
        tonic::Code::InvalidArgument,
        "a token is bound to its filter"
    );
}

#[tokio::test]
async fn a_job_that_fails_as_a_whole_says_why_with_the_code_getcosts_would_give() {
    let app = spawn_app_with(|settings| settings.server.max_chunks_per_query = 1).await;
    let asked = query(
        "2026-01-01T00:00:00Z",
        "2026-04-01T00:00:00Z",
        &[],
        pb::Granularity::Monthly,
    );

    let job = start(&app, asked).await;
    let events = watch_all(&app, &job.name).await;

    let last = events
        .last()
        .and_then(|e| e.job.as_ref())
        .expect("a final job");
    assert_eq!(last.state, pb::JobState::Failed as i32);
    let error = last.error.as_ref().expect("the job's error");
    assert_eq!(
        error.code,
        tonic::Code::ResourceExhausted as i32,
        "{error:?}"
    );
    let status = tonic::Status::with_details(
        tonic::Code::ResourceExhausted,
        error.message.clone(),
        prost::Message::encode_to_vec(error).into(),
    );
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "QUERY_TOO_LARGE");
    assert_eq!(info.metadata["limit"], "server.max_chunks_per_query");
}
