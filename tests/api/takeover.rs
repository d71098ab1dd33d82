//! One poller per job across replicas: the replica that runs a job holds its lease; killed (SIGKILL,
//! no clean stop) mid-poll, another replica takes the lease within 1.5x its TTL and polls the same
//! Atlas token on (no second create); every replica restarted, the job is still found and its token
//! reused; two replicas up poll a token no more than one does. Real `costd serve` processes, a real
//! redis-server, one sandbox whose counters are the truth.

use crate::{
    binary::{serve, serving_addr},
    helpers::*,
    jobs::{org, start},
    redis_kit::RedisServer,
    replicas::{LEASE_TTL, final_job, get, kestrel_april, replica, sandbox, total},
};
use costd::{proto as pb, sandbox::SandboxHandle};
use pb::query_job_service_client::QueryJobServiceClient;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::Channel;

/// A `costd serve` child process on the sandbox's Atlas organization Kestrel, its jobs in redis.
struct ChildReplica {
    child: tokio::process::Child,
    jobs: QueryJobServiceClient<Channel>,
    _config: tempfile::NamedTempFile,
}

impl ChildReplica {
    async fn start(sandbox: &SandboxHandle, redis_url: &str) -> Self {
        let kestrel = kestrel(sandbox);
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:0"

[atlas]
poll_initial_ms = 40
poll_max_ms = 80

[jobs]
store = "redis"

[jobs.redis]
url = {{ env = "REDIS_URL" }}
lease_ttl_ms = {lease}

[[providers]]
kind = "atlas"
id = "atlas-kestrel"
base_url = "{base}"
org_id = "{org}"
credentials = {{ public_key = {{ env = "ATLAS_PUBLIC_KEY" }}, private_key = {{ env = "ATLAS_PRIVATE_KEY" }} }}
"#,
            lease = LEASE_TTL.as_millis(),
            base = sandbox.base_url(),
            org = kestrel.id,
        );
        let (file, mut command) = serve(
            &config,
            &[
                ("REDIS_URL", redis_url),
                ("ATLAS_PUBLIC_KEY", &kestrel.api_key.public_key),
                ("ATLAS_PRIVATE_KEY", &kestrel.api_key.private_key),
            ],
        );
        let mut child = command.spawn().expect("costd starts");
        let (addr, mut lines) = serving_addr(&mut child).await;
        // Both pipes are drained for as long as it lives, so its logging never blocks it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let mut errors = BufReader::new(child.stderr.take().expect("piped")).lines();
        tokio::spawn(async move { while let Ok(Some(_)) = errors.next_line().await {} });
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("a uri")
            .connect_lazy();
        ChildReplica {
            child,
            jobs: QueryJobServiceClient::new(channel),
            _config: file,
        }
    }

    async fn start_query(&self, asked: pb::CostQuery) -> pb::Job {
        self.jobs
            .clone()
            .start_query(pb::StartQueryRequest { query: Some(asked) })
            .await
            .expect("started")
            .into_inner()
            .job
            .expect("a job")
    }

    /// SIGKILL, as a crash or an OOM kill: nothing is released, nothing written on the way out.
    async fn kill(mut self) {
        self.child.kill().await.expect("killed");
    }
}

fn kestrel(sandbox: &SandboxHandle) -> &costd::sandbox::AtlasOrg {
    sandbox
        .atlas()
        .dataset()
        .orgs()
        .iter()
        .find(|o| o.name.starts_with("Kestrel"))
        .expect("seeded")
}

fn april() -> pb::CostQuery {
    query("2025-04-01", "2025-05-01", &[], pb::Granularity::None)
}

/// Polls of `org` so far, as the sandbox counted them.
fn polls(sandbox: &SandboxHandle, org: &str) -> usize {
    sandbox.atlas().counters(org).polls
}

/// Waits until the sandbox has seen more than `seen` polls of `org`.
async fn poll_after(sandbox: &SandboxHandle, org: &str, seen: usize) {
    let scope = costd::sandbox::Scope::atlas(org);
    while polls(sandbox, org) <= seen {
        sandbox
            .wait_for_requests(&scope, sandbox.request_count(&scope) + 1)
            .await;
    }
}

#[tokio::test]
async fn a_replica_killed_mid_poll_is_taken_over_within_one_and_a_half_lease_ttls_on_the_same_token()
 {
    let redis = RedisServer::start().await;
    let sandbox = sandbox();
    let a = ChildReplica::start(&sandbox, &redis.url()).await;
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
    let (a, b) = tokio::join!(
        ChildReplica::start(&sandbox, &url),
        ChildReplica::start(&sandbox, &url)
    );
    let kestrel = kestrel(&sandbox).id;
    sandbox.atlas().set_org_processing_polls(kestrel, 40);
    let job = a.start_query(april()).await;
    within(poll_after(&sandbox, kestrel, 2)).await;

    tokio::join!(a.kill(), b.kill());
    let c = ChildReplica::start(&sandbox, &redis.url()).await;
    let found = c
        .jobs
        .clone()
        .get_job(pb::GetJobRequest {
            name: job.name.clone(),
        })
        .await
        .expect("found after every replica was replaced")
        .into_inner()
        .job
        .expect("a job");
    let mut events = c
        .jobs
        .clone()
        .watch_job(pb::WatchJobRequest {
            name: job.name.clone(),
        })
        .await
        .expect("watching")
        .into_inner();
    let mut last = None;
    while let Some(event) = within(events.message()).await.expect("a message") {
        last = event.job;
    }
    let last = last.expect("a final event");

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
