//! Several replicas on one redis: any replica serves any job, a watch on one replica streams what the
//! owner on another publishes, a cancel anywhere stops the owner's polls, a finished job outlives every
//! replica, and redis trouble fails job calls fast while cost queries go on. Real redis-server, real
//! servers sharing one sandbox, whose counters are the truth.

use crate::{
    helpers::*,
    jobs::{jobs, org, start, watch_all},
    redis_kit::RedisServer,
};
use costd::{
    clock::SystemClock,
    config::JobStoreSettings,
    domain::{CostFilter, CostQuery, Granularity, Period, ProviderKind},
    engine::{Engine, Job},
    jobs::{
        JOB_FORMAT, JobChange, JobId, JobSnapshot, JobState, JobStore, RedisJobStore,
        RedisStoreOptions, Writer,
    },
    proto as pb,
    sandbox::{SandboxHandle, SandboxOptions, Scope},
};
use secrecy::SecretString;
use std::{sync::Arc, time::Duration};
use tonic_types::StatusExt;

mod kit;
pub(crate) use kit::*;

/// How long a job call may take to fail while redis is down.
const FAIL_FAST: Duration = Duration::from_secs(1);
#[tokio::test]
async fn a_job_started_on_one_replica_is_watched_to_its_exact_report_on_every_replica() {
    let redis = RedisServer::start().await;
    let sandbox = sandbox();
    let a = replica(&sandbox, &redis.url(), &["atlas-kestrel"]).await;
    let b = replica(&sandbox, &redis.url(), &["atlas-kestrel"]).await;
    let c = replica(&sandbox, &redis.url(), &["atlas-kestrel"]).await;
    let kestrel = org(&a, "Kestrel");
    sandbox.atlas().set_org_processing_polls(kestrel, 6);
    let asked = query("2025-04-01", "2025-05-01", &[], pb::Granularity::None);

    let job = start(&a, asked).await;
    let (on_a, on_b, on_c) = tokio::join!(
        watch_all(&a, &job.name),
        watch_all(&b, &job.name),
        watch_all(&c, &job.name)
    );

    let expected = kestrel_april(&a.sandbox);
    for (replica, events) in [("A", &on_a), ("B", &on_b), ("C", &on_c)] {
        assert_eq!(
            events.first().map(|e| e.kind),
            Some(pb::JobEventKind::Snapshot as i32),
            "{replica}"
        );
        let last = final_job(events);
        assert_eq!(last.state, pb::JobState::Succeeded as i32, "{replica}");
        assert_eq!(total(&last), expected, "{replica}: the exact report");
        assert_eq!(
            last.report.as_ref().map(|r| r.job.as_str()),
            Some(job.name.as_str())
        );
    }
    assert!(
        on_b.iter()
            .any(|e| e.kind == pb::JobEventKind::Progress as i32),
        "B saw the polls A made: {:?}",
        on_b.iter().map(|e| e.kind).collect::<Vec<_>>()
    );
    let listed = jobs(&c)
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .expect("listed")
        .into_inner();
    assert_eq!(
        listed
            .jobs
            .iter()
            .map(|j| j.name.as_str())
            .collect::<Vec<_>>(),
        [job.name.as_str()],
        "C lists the job A runs"
    );
    assert_eq!(
        total(&get(&b, &job.name).await.expect("B finds it")),
        expected
    );
    assert_eq!(sandbox.atlas().counters(kestrel).queries_created, 1);
}

#[tokio::test]
async fn a_cancel_on_another_replica_stops_the_owners_polls_and_stays_cancelled() {
    let redis = RedisServer::start().await;
    let sandbox = sandbox();
    let a = replica(&sandbox, &redis.url(), &["atlas-quarry"]).await;
    let b = replica(&sandbox, &redis.url(), &["atlas-quarry"]).await;
    let quarry = org(&a, "Quarry");
    sandbox.atlas().set_org_processing_polls(quarry, 10_000);
    let asked = query("2025-06-01", "2025-07-01", &[], pb::Granularity::None);
    let job = start(&a, asked.clone()).await;
    within(sandbox.wait_for_requests(&Scope::atlas(quarry), 4)).await;

    let cancelled = jobs(&b)
        .cancel_job(pb::CancelJobRequest {
            name: job.name.clone(),
        })
        .await
        .expect("cancelled on B")
        .into_inner()
        .job
        .expect("job");
    // A's owner saw it: its fetch, waited for by nobody else, stopped. Asking A again therefore makes
    // a new upstream query rather than joining the old one.
    let again = start(&a, asked).await;
    within(async {
        while sandbox.atlas().counters(quarry).queries_created < 2 {
            sandbox
                .wait_for_requests(
                    &Scope::atlas(quarry),
                    sandbox.request_count(&Scope::atlas(quarry)) + 1,
                )
                .await;
        }
    })
    .await;

    assert_eq!(cancelled.state, pb::JobState::Cancelled as i32);
    assert_eq!(sandbox.atlas().counters(quarry).queries_created, 2);
    assert_eq!(
        get(&a, &job.name).await.expect("found on A").state,
        pb::JobState::Cancelled as i32,
        "the owner never wrote over the cancel"
    );
    assert_eq!(
        get(&b, &again.name).await.expect("found on B").state,
        pb::JobState::Running as i32
    );
}

#[tokio::test]
async fn a_finished_job_outlives_every_replica_that_ran_or_watched_it() {
    let redis = RedisServer::start().await;
    let sandbox = sandbox();
    let a = replica(&sandbox, &redis.url(), &["atlas-kestrel"]).await;
    sandbox
        .atlas()
        .set_org_processing_polls(org(&a, "Kestrel"), 2);
    let job = start(
        &a,
        query("2025-04-01", "2025-05-01", &[], pb::Granularity::None),
    )
    .await;
    let finished = final_job(&watch_all(&a, &job.name).await);
    let mut stopping = a;
    within(stopping.begin_stop())
        .await
        .expect("joined")
        .expect("stopped");
    drop(stopping);

    let c = replica(&sandbox, &redis.url(), &["atlas-kestrel"]).await;
    let found = get(&c, &job.name).await.expect("found by a new replica");

    assert_eq!(found.state, pb::JobState::Succeeded as i32);
    assert_eq!(found.report, finished.report, "the same report, exactly");
    assert_eq!(total(&found), kestrel_april(&c.sandbox));
    assert_eq!(
        final_job(&watch_all(&c, &job.name).await).report,
        finished.report
    );
}

#[tokio::test]
async fn with_redis_down_job_calls_fail_fast_cost_queries_go_on_and_all_recovers() {
    let mut redis = RedisServer::start().await;
    let sandbox = sandbox();
    let app = replica(&sandbox, &redis.url(), &["team-acme"]).await;
    let asked = query("2026-01-01", "2026-02-01", &[], pb::Granularity::None);
    let before = app.get_costs(asked.clone()).await.expect("answered");
    let job = start(&app, asked.clone()).await;
    final_job(&watch_all(&app, &job.name).await);
    let sent = sandbox.total_requests();
    let up_before = store_up(&app).await;

    redis.kill().await;
    let cached = app.get_costs(asked.clone()).await.expect("still answered");
    let mut refusals = Vec::new();
    for call in 0..4 {
        let outcome = tokio::time::timeout(FAIL_FAST, async {
            match call {
                0 => get(&app, &job.name).await.map(drop),
                1 => jobs(&app)
                    .start_query(pb::StartQueryRequest {
                        query: Some(asked.clone()),
                    })
                    .await
                    .map(drop),
                2 => jobs(&app)
                    .list_jobs(pb::ListJobsRequest::default())
                    .await
                    .map(drop),
                _ => jobs(&app)
                    .watch_job(pb::WatchJobRequest {
                        name: job.name.clone(),
                    })
                    .await
                    .map(drop),
            }
        })
        .await
        .unwrap_or_else(|_| panic!("job call {call} answered within {FAIL_FAST:?}"));
        refusals.push(outcome.expect_err("refused while redis is down"));
    }
    let up_while_down = store_up(&app).await;
    redis.restart().await;
    let restarted = start(&app, asked).await;
    let after = final_job(&watch_all(&app, &restarted.name).await);
    let up_after = store_up(&app).await;

    assert_eq!(cached.totals, before.totals);
    assert_eq!(
        sandbox.total_requests(),
        sent,
        "the cached answer sent nothing"
    );
    for refused in &refusals {
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        assert!(
            refused.get_details_retry_info().is_some(),
            "RetryInfo: {refused:?}"
        );
        assert!(!refused.message().contains("127.0.0.1"), "{refused:?}");
    }
    assert_eq!(
        after.state,
        pb::JobState::Succeeded as i32,
        "jobs work again, without a restart of costd"
    );
    assert_eq!(
        (up_before, up_while_down, up_after),
        (1.0, 0.0, 1.0),
        "the scrape says when the store is away"
    );
}

/// `costd_job_store_up{store="redis"}` as scraped now.
async fn store_up(app: &TestApp) -> f64 {
    crate::metrics::scrape(app)
        .await
        .get(r#"costd_job_store_up{store="redis"}"#)
        .copied()
        .expect("the job store gauge")
}

#[tokio::test]
async fn a_password_in_the_redis_url_works_and_is_never_logged() {
    let password = "redis-pass-7f3a9c1e5b";
    let redis = RedisServer::start_with_password(password).await;
    let sandbox = sandbox();
    let a = replica(&sandbox, &redis.url(), &["team-acme"]).await;
    let b = replica(&sandbox, &redis.url(), &["team-acme"]).await;
    let wrong = replica(
        &sandbox,
        &redis.url().replace(password, "not-the-password"),
        &["team-acme"],
    )
    .await;

    let job = start(
        &a,
        query("2026-02-01", "2026-03-01", &[], pb::Granularity::None),
    )
    .await;
    let on_b = final_job(&watch_all(&b, &job.name).await);
    let refused = get(&wrong, &job.name).await.expect_err("wrong password");

    assert_eq!(on_b.state, pb::JobState::Succeeded as i32);
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    for text in [captured().logs(), format!("{refused:?}")] {
        assert!(!text.contains(password), "the password leaked");
        assert!(!text.contains("not-the-password"), "a password leaked");
    }
}

#[tokio::test]
async fn a_late_poller_writing_after_a_cancel_never_turns_cancelled_into_succeeded() {
    let redis = RedisServer::start().await;
    let owner = store_on(&redis);
    let other = store_on(&redis);
    let id = JobId::from_name(&format!("jobs/{}", "c".repeat(32))).expect("a name");
    let kept = Duration::from_secs(60);
    owner
        .insert(&stored_job(&id, 0, JobState::Running), kept)
        .await
        .expect("inserted");
    let mut watching = other.subscribe(&id).await.expect("read").expect("known");

    // Another replica cancels what it read; the owner's poller, not yet aware, writes on.
    let cancelled = other
        .publish(
            &stored_job(&id, 1, JobState::Cancelled),
            kept,
            Writer::Other,
        )
        .await
        .expect("written");
    let late_progress = owner
        .publish(&stored_job(&id, 1, JobState::Running), kept, Writer::Owner)
        .await
        .expect("answered");
    let late_success = owner
        .publish(
            &stored_job(&id, 2, JobState::Succeeded),
            kept,
            Writer::Owner,
        )
        .await
        .expect("answered");
    let seen = within(watching.wait_for(|job| job.state.is_final()))
        .await
        .expect("the watch ends on the final state")
        .state;

    assert!(cancelled);
    assert!(!late_progress, "same version: refused");
    assert!(!late_success, "onto a final job: refused");
    let stored = owner.get(&id).await.expect("read").expect("kept");
    assert_eq!((stored.state, stored.version), (JobState::Cancelled, 1));
    assert_eq!(seen, JobState::Cancelled);
}

#[tokio::test]
async fn an_identical_query_started_on_another_replica_joins_the_running_job_and_its_one_token() {
    let (_redis, sandbox, a, b) = two_kestrel_replicas(20).await;
    let kestrel = org(&a, "Kestrel");
    let asked = query("2025-04-01", "2025-05-01", &[], pb::Granularity::None);

    let on_a = start(&a, asked.clone()).await;
    let on_b = start(&b, asked.clone()).await;
    let finished = final_job(&watch_all(&b, &on_b.name).await);
    let creates = sandbox.atlas().counters(kestrel).queries_created;
    // Finished, the job no longer claims its query: the next one is a job of its own.
    let after = start(&b, asked).await;

    assert_eq!(on_b.name, on_a.name, "B joined A's job");
    assert_eq!(finished.state, pb::JobState::Succeeded as i32);
    assert_eq!(total(&finished), kestrel_april(&a.sandbox));
    assert_ne!(after.name, on_a.name);
    assert_eq!(
        jobs(&a)
            .list_jobs(pb::ListJobsRequest::default())
            .await
            .expect("listed")
            .into_inner()
            .jobs
            .len(),
        2,
        "the joined job and the one after it"
    );
    assert_eq!(creates, 1, "one Atlas query for both replicas' callers");
}

#[tokio::test]
async fn list_providers_says_whether_the_job_store_is_reached_and_never_where_it_is() {
    let password = "store-pass-5d1e0b7c";
    let mut redis = RedisServer::start_with_password(password).await;
    let sandbox = sandbox();
    let app = replica(&sandbox, &redis.url(), &["team-acme"]).await;
    let alone = spawn_app().await;
    let store_of = |answer: pb::ListProvidersResponse| answer.job_store.expect("the job store");

    let before = store_of(app.list_providers().await);
    redis.kill().await;
    let began = std::time::Instant::now();
    let down = store_of(app.list_providers().await);
    let answered_in = began.elapsed();
    redis.restart().await;
    let after = store_of(app.list_providers().await);

    assert_eq!(
        (before.kind.as_str(), before.up, before.error.as_str()),
        ("redis", true, "")
    );
    assert_eq!((down.kind.as_str(), down.up), ("redis", false));
    assert!(down.error.contains("unreachable"), "{down:?}");
    for secret in [password, "127.0.0.1", &redis.url()] {
        assert!(!down.error.contains(secret), "{down:?}");
    }
    assert!(answered_in <= FAIL_FAST, "answered in {answered_in:?}");
    assert!(after.up, "reached again without a restart: {after:?}");
    assert_eq!(
        store_of(alone.list_providers().await),
        pb::JobStoreStatus {
            kind: "memory".to_string(),
            up: true,
            error: String::new(),
        }
    );
}

#[tokio::test]
async fn a_rediss_store_is_reached_through_a_private_ca_and_refused_under_any_other() {
    let password = "tls-pass-93be0c4a";
    let ca = crate::auth::kit::Ca::new("redis test CA");
    let stranger = crate::auth::kit::Ca::new("another CA");
    let pair = ca.server(1);
    let redis = RedisServer::start_tls(&pair.cert, &pair.key, &ca.pem(), password).await;
    let sandbox = sandbox();
    let accounts = &["team-acme"];
    let a = replica_trusting(&sandbox, &redis.url(), accounts, Some(ca.pem())).await;
    let b = replica_trusting(&sandbox, &redis.url(), accounts, Some(ca.pem())).await;
    let other_ca = replica_trusting(&sandbox, &redis.url(), accounts, Some(stranger.pem())).await;
    let web_roots = replica(&sandbox, &redis.url(), accounts).await;

    let job = start(
        &a,
        query("2026-03-01", "2026-04-01", &[], pb::Granularity::None),
    )
    .await;
    let on_b = final_job(&watch_all(&b, &job.name).await);
    let refused = [
        get(&other_ca, &job.name).await.expect_err("another CA"),
        get(&web_roots, &job.name)
            .await
            .expect_err("the web's roots"),
    ];

    assert!(redis.url().starts_with("rediss://"));
    assert_eq!(on_b.state, pb::JobState::Succeeded as i32);
    for refusal in &refused {
        assert_eq!(refusal.code(), tonic::Code::Unavailable, "{refusal:?}");
    }
    for text in [captured().logs(), format!("{refused:?}")] {
        assert!(!text.contains(password), "the password leaked");
    }
}

#[tokio::test]
async fn a_job_stored_in_a_newer_format_is_refused_clearly_and_one_without_a_format_still_read() {
    let redis = RedisServer::start().await;
    let sandbox = sandbox();
    let a = replica(&sandbox, &redis.url(), &["team-acme"]).await;
    let newer = start(
        &a,
        query("2026-01-01", "2026-02-01", &[], pb::Granularity::None),
    )
    .await;
    let older = start(
        &a,
        query("2026-02-01", "2026-03-01", &[], pb::Granularity::None),
    )
    .await;
    final_job(&watch_all(&a, &newer.name).await);
    final_job(&watch_all(&a, &older.name).await);
    let mut raw = redis.connection().await;
    let key = |name: &str| format!("costd:job:{}", name.trim_start_matches("jobs/"));
    let format: u32 = redis::AsyncCommands::hget(&mut raw, key(&newer.name), "format")
        .await
        .expect("read");
    let () = redis::AsyncCommands::hset(&mut raw, key(&newer.name), "format", JOB_FORMAT + 1)
        .await
        .expect("written");
    let () = redis::AsyncCommands::hdel(&mut raw, key(&older.name), "format")
        .await
        .expect("written");

    let refused = get(&a, &newer.name).await.expect_err("a newer format");
    let listed = jobs(&a)
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .expect_err("the list holds a job of a newer format");
    let read = get(&a, &older.name)
        .await
        .expect("a job from before formats");

    assert_eq!(format, JOB_FORMAT, "every write names its format");
    for refusal in [&refused, &listed] {
        assert_eq!(
            refusal.code(),
            tonic::Code::FailedPrecondition,
            "{refusal:?}"
        );
        assert_eq!(
            refusal.get_details_error_info().map(|info| info.reason),
            Some("JOB_STORE_FORMAT_NEWER".to_string())
        );
        assert!(refusal.message().contains("newer costd"), "{refusal:?}");
    }
    assert_eq!(read.state, pb::JobState::Succeeded as i32);
}

#[tokio::test]
async fn an_older_replica_never_writes_over_a_job_of_a_newer_format() {
    let redis = RedisServer::start().await;
    let store = store_on(&redis);
    let id = JobId::from_name(&format!("jobs/{}", "d".repeat(32))).expect("a name");
    let kept = Duration::from_secs(60);
    store
        .insert(&stored_job(&id, 0, JobState::Running), kept)
        .await
        .expect("inserted");
    let mut raw = redis.connection().await;
    let key = format!("costd:job:{}", id.as_hex());
    let () = redis::AsyncCommands::hset(&mut raw, &key, "format", JOB_FORMAT + 1)
        .await
        .expect("written");

    let written = store
        .publish(
            &stored_job(&id, 1, JobState::Cancelled),
            kept,
            Writer::Other,
        )
        .await;
    let version: u64 = redis::AsyncCommands::hget(&mut raw, &key, "version")
        .await
        .expect("read");

    assert_eq!(
        written,
        Err(costd::jobs::StoreError::NewerFormat {
            found: JOB_FORMAT + 1,
            known: JOB_FORMAT
        })
    );
    assert_eq!(version, 0, "left as the newer replica wrote it");
}

#[tokio::test]
async fn get_costs_on_another_replica_names_the_running_job_instead_of_asking_atlas_again() {
    let (_redis, sandbox, a, b) = two_kestrel_replicas(20).await;
    let kestrel = org(&a, "Kestrel");
    let asked = query("2025-04-01", "2025-05-01", &[], pb::Granularity::None);

    let job = start(&a, asked.clone()).await;
    let answer = b.get_costs(asked).await.expect("answered");
    let finished = final_job(&watch_all(&b, &answer.job).await);

    assert_eq!(answer.job, job.name, "B's answer names A's job");
    assert_eq!(
        result_of(&answer, "atlas-kestrel").state,
        pb::ResultState::Pending as i32
    );
    assert_eq!(result_of(&answer, "atlas-kestrel").job, job.name);
    assert_eq!(total(&finished), kestrel_april(&a.sandbox));
    assert_eq!(
        sandbox.atlas().counters(kestrel).queries_created,
        1,
        "B asked Atlas nothing"
    );
}
