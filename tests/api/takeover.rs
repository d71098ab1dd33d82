//! One poller per job across replicas: the replica that runs a job holds its lease; killed (SIGKILL,
//! no clean stop) mid-poll, another replica takes the lease within 1.5x its TTL and polls the same
//! Atlas token on (no second create); every replica restarted, the job is still found and its token
//! reused; two replicas up poll a token no more than one does. Real `costd serve` processes, a real
//! redis-server, one sandbox whose counters are the truth.

use crate::{
    helpers::*,
    jobs::{org, start},
    redis_kit::RedisServer,
    replica_process::{ReplicaProcess, kestrel, poll_after, polls},
    replicas::{
        LEASE_TTL, final_job, get, kestrel_april, replica, sandbox, total, two_kestrel_replicas,
    },
};
use costd::{proto as pb, sandbox::SandboxHandle};
use std::time::Instant;

/// A replica process on the tests' prefix and lease.
async fn process(sandbox: &SandboxHandle, redis_url: &str) -> ReplicaProcess {
    ReplicaProcess::start(sandbox, redis_url, "costd", LEASE_TTL).await
}

fn april() -> pb::CostQuery {
    query("2025-04-01", "2025-05-01", &[], pb::Granularity::None)
}

#[tokio::test]
async fn a_replica_killed_mid_poll_is_taken_over_within_one_and_a_half_lease_ttls_on_the_same_token()
 {
    let redis = RedisServer::start().await;
    let sandbox = sandbox();
    let a = process(&sandbox, &redis.url()).await;
    let b = replica(&sandbox, &redis.url(), &["atlas-kestrel"]).await;
    let kestrel = org(&b, "Kestrel");
    // About 60 polls at most 80 ms apart: the job outlasts the kill and the takeover.
    sandbox.atlas().set_org_processing_polls(kestrel, 60);
    let job = a.start_query(april()).await;
    within(poll_after(&sandbox, kestrel, 3)).await;

    a.kill().await;
    let killed_at = Instant::now();
    let polls_at_kill = polls(&sandbox, kestrel);
    within(poll_after(&sandbox, kestrel, polls_at_kill)).await;
    let resumed_after = killed_at.elapsed();
    let finished = final_job(&crate::jobs::watch_all(&b, &job.name).await);

    assert!(
        resumed_after <= LEASE_TTL.mul_f64(1.5),
        "B polled again {resumed_after:?} after the kill; the lease TTL is {LEASE_TTL:?}"
    );
    assert_eq!(
        sandbox.atlas().counters(kestrel).queries_created,
        1,
        "the same token, polled on: no second create"
    );
    assert_eq!(finished.state, pb::JobState::Succeeded as i32);
    assert_eq!(
        total(&finished),
        kestrel_april(&b.sandbox),
        "the exact report"
    );
    let listed = crate::jobs::jobs(&b)
        .list_jobs(pb::ListJobsRequest::default())
        .await
        .expect("listed")
        .into_inner()
        .jobs;
    assert_eq!(
        listed.iter().map(|j| j.name.as_str()).collect::<Vec<_>>(),
        [job.name.as_str()],
        "no job lost, none added"
    );
}

#[tokio::test]
async fn with_every_replica_restarted_the_job_is_found_and_its_token_reused() {
    let redis = RedisServer::start().await;
    let sandbox = sandbox();
    let url = redis.url();
    let (a, b) = tokio::join!(process(&sandbox, &url), process(&sandbox, &url));
    let kestrel = kestrel(&sandbox).id;
    sandbox.atlas().set_org_processing_polls(kestrel, 40);
    let job = a.start_query(april()).await;
    within(poll_after(&sandbox, kestrel, 2)).await;

    tokio::join!(a.kill(), b.kill());
    let c = process(&sandbox, &redis.url()).await;
    let found = c
        .jobs()
        .get_job(pb::GetJobRequest {
            name: job.name.clone(),
        })
        .await
        .expect("found after every replica was replaced")
        .into_inner()
        .job
        .expect("a job");
    let events = c
        .jobs()
        .watch_job(pb::WatchJobRequest {
            name: job.name.clone(),
        })
        .await
        .expect("watching")
        .into_inner();
    let last = last_job_of(events).await;

    assert_eq!(found.name, job.name);
    assert_eq!(last.state, pb::JobState::Succeeded as i32);
    assert_eq!(
        sandbox.atlas().counters(kestrel).queries_created,
        1,
        "the token was reused"
    );
    assert_eq!(total(&last), kestrel_april(&sandbox), "the exact report");
}

#[tokio::test]
async fn two_replicas_poll_a_token_no_more_than_one_replica_does() {
    let redis = RedisServer::start().await;
    let sandbox = sandbox();
    let a = replica(&sandbox, &redis.url(), &["atlas-kestrel"]).await;
    let kestrel = org(&a, "Kestrel");
    // Long enough for several lease renewals and sweeps of the other replica.
    sandbox.atlas().set_org_processing_polls(kestrel, 50);
    let alone = start(&a, april()).await;
    final_job(&crate::jobs::watch_all(&a, &alone.name).await);
    let polls_alone = polls(&sandbox, kestrel);

    let b = replica(&sandbox, &redis.url(), &["atlas-kestrel"]).await;
    let may = query("2025-05-01", "2025-06-01", &[], pb::Granularity::None);
    let together = start(&a, may).await;
    let (on_a, on_b) = tokio::join!(
        crate::jobs::watch_all(&a, &together.name),
        crate::jobs::watch_all(&b, &together.name)
    );
    let polls_together = polls(&sandbox, kestrel) - polls_alone;

    assert_eq!(final_job(&on_a).state, pb::JobState::Succeeded as i32);
    assert_eq!(final_job(&on_b).report, final_job(&on_a).report);
    assert!(
        polls_together <= polls_alone,
        "{polls_together} polls with two replicas, {polls_alone} with one"
    );
    assert_eq!(sandbox.atlas().counters(kestrel).queries_created, 2);
    assert_eq!(
        get(&b, &together.name).await.expect("found").state,
        pb::JobState::Succeeded as i32
    );
}

#[tokio::test]
async fn a_replica_stopped_gracefully_hands_its_job_over_before_the_lease_would_lapse() {
    let (_redis, sandbox, mut a, b) = two_kestrel_replicas(100).await;
    let kestrel = org(&a, "Kestrel");
    let job = start(&a, april()).await;
    within(poll_after(&sandbox, kestrel, 3)).await;

    within(a.begin_stop())
        .await
        .expect("joined")
        .expect("stopped");
    let stopped_at = Instant::now();
    let polls_at_stop = polls(&sandbox, kestrel);
    within(poll_after(&sandbox, kestrel, polls_at_stop)).await;
    let resumed_after = stopped_at.elapsed();
    let finished = final_job(&crate::jobs::watch_all(&b, &job.name).await);

    // A lapsed lease would take at least two thirds of its TTL (renewed every third).
    assert!(
        resumed_after < LEASE_TTL.mul_f64(0.6),
        "B polled again {resumed_after:?} after A stopped; the lease TTL is {LEASE_TTL:?}"
    );
    assert_eq!(finished.state, pb::JobState::Succeeded as i32);
    assert_eq!(total(&finished), kestrel_april(&sandbox));
    assert_eq!(sandbox.atlas().counters(kestrel).queries_created, 1);
}
