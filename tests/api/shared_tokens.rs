//! One poller per Atlas query token across replicas: jobs of different owners that share one token
//! (one fetch on the replica that ran them) end on one poller when that replica dies, since a job is
//! taken over only with its token's lease; and a taken-over query's processing limit counts from
//! when Atlas created it. Real redis-server, real replicas on one sandbox whose counters and request
//! log are the truth.

use crate::{
    auth::kit::{Files, Signer, bearer, claims, grant, jwt},
    helpers::*,
    redis_kit::RedisServer,
    replica_process::{ReplicaProcess, kestrel, poll_after, polls},
    replicas::{LEASE_TTL, kestrel_april, kestrel_replica, sandbox, store_on, stored_job, total},
};
use costd::{
    config::{AuthConfig, JobVisibility},
    domain::{AccountRef, FetchProgress, ProviderAccountId, ProviderKind, UpstreamQuery},
    engine::Job,
    jobs::{JobId, JobState, JobStore, PartSnapshot},
    proto::{self as pb, query_job_service_client::QueryJobServiceClient},
    sandbox::{SandboxHandle, Scope},
};
use redis::AsyncCommands;
use sha2::{Digest, Sha256};
use std::{sync::Arc, time::Instant};
use tonic::transport::Channel;

/// The replicas' longest poll interval; a poller waits at least three quarters of it (jitter).
const POLL_MAX_MS: u64 = 80;

/// Callers with JWT identities, each principal the owner of its own jobs.
struct Callers {
    files: Files,
    signer: Signer,
}

impl Callers {
    fn new() -> Self {
        let callers = Callers {
            files: Files::new(),
            signer: Signer::es256("key-1"),
        };
        // Written once: the in-process replicas' settings and the process's TOML name this file.
        jwt(&callers.files, &[&callers.signer]);
        callers
    }

    fn auth(&self) -> AuthConfig {
        AuthConfig {
            jwt: Some(jwt(&self.files, &[&self.signer])),
            grants: vec![grant("svc-*", &["atlas-*"], JobVisibility::Own)],
        }
    }

    /// The same settings as TOML, for a `costd serve` process.
    fn toml(&self) -> String {
        format!(
            r#"
[auth.jwt]
jwks = {{ file = "{jwks}" }}
issuer = "{issuer}"
audience = "{audience}"

[[auth.grants]]
principal = "svc-*"
accounts = ["atlas-*"]
"#,
            jwks = self.files.path("jwks.json").display(),
            issuer = crate::auth::kit::ISSUER,
            audience = crate::auth::kit::AUDIENCE,
        )
    }

    fn token(&self, principal: &str) -> String {
        self.signer.sign(&claims(principal))
    }

    /// An in-process replica serving Kestrel's Atlas organization with these callers, polling as
    /// the replica processes do.
    async fn replica(&self, sandbox: &SandboxHandle, redis_url: &str) -> TestApp {
        let auth = self.auth();
        kestrel_replica(sandbox, redis_url, |settings| {
            settings.auth = Some(auth);
            settings.atlas.poll_initial_ms = 40;
            settings.atlas.poll_max_ms = POLL_MAX_MS;
        })
        .await
    }

    async fn start(&self, channel: &Channel, principal: &str, asked: pb::CostQuery) -> pb::Job {
        let request = bearer(
            pb::StartQueryRequest { query: Some(asked) },
            &self.token(principal),
        );
        within(QueryJobServiceClient::new(channel.clone()).start_query(request))
            .await
            .expect("started")
            .into_inner()
            .job
            .expect("a job")
    }

    /// Watches `name` to its final event as `principal`.
    async fn finished(&self, channel: &Channel, principal: &str, name: &str) -> pb::Job {
        let request = bearer(
            pb::WatchJobRequest {
                name: name.to_string(),
            },
            &self.token(principal),
        );
        let events = within(QueryJobServiceClient::new(channel.clone()).watch_job(request))
            .await
            .expect("watching")
            .into_inner();
        last_job_of(events).await
    }
}

fn april() -> pb::CostQuery {
    query("2025-04-01", "2025-05-01", &[], pb::Granularity::None)
}

/// When the sandbox received each poll of `org` after `since`, in order.
fn polls_since(sandbox: &SandboxHandle, org: &str, since: Instant) -> Vec<Instant> {
    let scope = Scope::atlas(org);
    sandbox
        .requests()
        .into_iter()
        .filter(|r| r.scope == scope && r.method == http::Method::GET && r.received_at > since)
        .map(|r| r.received_at)
        .collect()
}

#[tokio::test]
async fn two_owners_jobs_on_one_token_end_on_one_poller_when_their_replica_is_killed() {
    // Arrange: A (a process, to be killed) runs svc-a's and svc-b's jobs for one query: one fetch,
    // one Atlas token; B and C are alive.
    let redis = RedisServer::start().await;
    let sandbox = sandbox();
    let callers = Callers::new();
    let url = redis.url();
    let a = ReplicaProcess::start_with(&sandbox, &url, "costd", LEASE_TTL, &callers.toml()).await;
    let (b, c) = tokio::join!(
        callers.replica(&sandbox, &url),
        callers.replica(&sandbox, &url)
    );
    let kestrel = kestrel(&sandbox).id;
    // About 70 polls at most 80 ms apart: the jobs outlast the kill and the takeover by seconds.
    sandbox.atlas().set_org_processing_polls(kestrel, 70);
    let first = callers.start(&a.channel, "svc-a", april()).await;
    // A few polls apart, so the jobs' leases are renewed at different moments. (Their takeover in one
    // sweep is not forced: runs without the token lease mostly saw both taken at once, so the
    // mechanism itself is checked step by step on the store below.)
    within(poll_after(&sandbox, kestrel, 2)).await;
    let second = callers.start(&a.channel, "svc-b", april()).await;
    // Both jobs have written the token they wait for.
    within(poll_after(&sandbox, kestrel, polls(&sandbox, kestrel) + 2)).await;

    // Act
    a.kill().await;
    let killed_at = Instant::now();
    let mut finished = Vec::new();
    for replica in [&b.channel, &c.channel] {
        for (principal, job) in [("svc-a", &first), ("svc-b", &second)] {
            finished.push(callers.finished(replica, principal, &job.name).await);
        }
    }

    // Assert
    assert_ne!(first.name, second.name, "one job per owner");
    let expected = kestrel_april(&sandbox);
    for job in &finished {
        assert_eq!(job.state, pb::JobState::Succeeded as i32, "{}", job.name);
        assert_eq!(total(job), expected, "{}: the exact report", job.name);
    }
    assert_eq!(
        sandbox.atlas().counters(kestrel).queries_created,
        1,
        "one token for both owners, polled on after the kill"
    );
    let after_kill = polls_since(&sandbox, kestrel, killed_at);
    let (Some(first_poll), Some(last_poll)) = (after_kill.first(), after_kill.last()) else {
        panic!("nobody polled after the kill");
    };
    // One poller waits at least 3/4 of the poll interval between polls; two would poll about twice
    // as often.
    let span_ms = last_poll.duration_since(*first_poll).as_millis() as u64;
    let one_pollers_most = 1 + span_ms / (POLL_MAX_MS * 3 / 4);
    assert!(
        after_kill.len() as u64 <= one_pollers_most,
        "{} polls in {span_ms} ms after the kill; one poller sends at most {one_pollers_most}",
        after_kill.len()
    );
}

/// A running job of `owner` whose Atlas part waits for `token`.
fn polling_job(owner: &str, token: &str) -> Job {
    let id = JobId::from_name(&format!("jobs/{:032x}", rand::random::<u128>())).expect("an id");
    let mut job = stored_job(&id, 1, JobState::Running);
    job.owner = Some(owner.to_string());
    let progress = FetchProgress {
        polls: 3,
        note: "processing".to_string(),
        next_poll_at: None,
        upstream_query: Some(UpstreamQuery {
            organization: "0123456789abcdef01234567".to_string(),
            body: "{}".to_string(),
            token: token.to_string(),
            created_at: chrono::Utc::now(),
            last_status: 102,
        }),
    };
    job.parts = vec![PartSnapshot {
        account: AccountRef {
            id: ProviderAccountId::parse("atlas-kestrel").expect("an id"),
            kind: ProviderKind::Atlas,
            display_name: "Kestrel".into(),
        },
        state: JobState::Running,
        note: progress.note.clone(),
        polls: progress.polls,
        next_poll_at: None,
        error: None,
        upstream_query: progress.upstream_query.clone(),
        in_flight: vec![progress],
    }];
    job
}

fn lease_key(job: &Job) -> String {
    format!("costd:lease:{}", job.id.as_hex())
}

fn token_key(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("costd:poll:{hex}")
}

fn ids(jobs: &[Arc<Job>]) -> Vec<JobId> {
    let mut ids: Vec<JobId> = jobs.iter().map(|job| job.id.clone()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn an_orphaned_job_is_taken_only_by_the_replica_holding_its_token_or_with_it() {
    // Arrange: A's two jobs of two owners wait for one token, which A holds.
    let redis = RedisServer::start().await;
    let mut plain = redis.connection().await;
    let (a, b, c) = (store_on(&redis), store_on(&redis), store_on(&redis));
    let token = "a".repeat(64);
    let (x, y) = (polling_job("svc-a", &token), polling_job("svc-b", &token));
    let kept = std::time::Duration::from_secs(60);
    for job in [&x, &y] {
        assert_eq!(a.insert(job, kept).await.expect("inserted"), None);
    }
    let held_elsewhere = a
        .hold_tokens(std::slice::from_ref(&token))
        .await
        .expect("held");
    // Act and assert, step by step: leases lapse as a dead replica's would (deleted here).
    let _: () = plain.del(lease_key(&x)).await.expect("lapsed");
    let while_a_holds_the_token = b.claim_orphans().await.expect("swept");
    let _: () = plain.del(token_key(&token)).await.expect("lapsed");
    let with_the_token_free = b.claim_orphans().await.expect("swept");
    let _: () = plain.del(lease_key(&y)).await.expect("lapsed");
    let by_another_replica = c.claim_orphans().await.expect("swept");
    let by_the_tokens_holder = b.claim_orphans().await.expect("swept");
    let token_holder: Option<String> = plain.get(token_key(&token)).await.expect("read");
    let b_holder: Option<String> = plain.get(lease_key(&x)).await.expect("read");
    let c_sees_elsewhere = c
        .hold_tokens(std::slice::from_ref(&token))
        .await
        .expect("asked");
    c.release_tokens(std::slice::from_ref(&token))
        .await
        .expect("released");
    let still_b: Option<String> = plain.get(token_key(&token)).await.expect("read");
    b.release_tokens(std::slice::from_ref(&token))
        .await
        .expect("released");
    let released: Option<String> = plain.get(token_key(&token)).await.expect("read");

    assert_eq!(held_elsewhere, 0);
    assert!(
        while_a_holds_the_token.is_empty(),
        "a job is not taken while another replica polls its token"
    );
    assert_eq!(ids(&with_the_token_free), std::slice::from_ref(&x.id));
    assert!(
        by_another_replica.is_empty(),
        "C leaves the job to B, which polls its token"
    );
    assert_eq!(
        ids(&by_the_tokens_holder),
        std::slice::from_ref(&y.id),
        "B takes it"
    );
    assert_eq!(token_holder, b_holder, "B holds the token's lease");
    assert_eq!(c_sees_elsewhere, 1, "C does not take B's token");
    assert_eq!(still_b, token_holder, "C cannot release B's lease");
    assert_eq!(released, None);
}

/// A replica on Kestrel's Atlas organization whose queries may process for `limit_ms` at most.
async fn replica_with_limit(sandbox: &SandboxHandle, redis_url: &str, limit_ms: u64) -> TestApp {
    kestrel_replica(sandbox, redis_url, |settings| {
        settings.atlas.max_processing_ms = limit_ms;
    })
    .await
}

#[tokio::test]
async fn a_taken_over_query_fails_once_processing_since_atlas_created_it_not_since_the_takeover() {
    // Arrange: A (a process) creates the query and polls it for longer than B's limit.
    let redis = RedisServer::start().await;
    let sandbox = sandbox();
    let url = redis.url();
    let limit = std::time::Duration::from_millis(1_500);
    let a = ReplicaProcess::start(&sandbox, &url, "costd", LEASE_TTL).await;
    let b = replica_with_limit(&sandbox, &url, limit.as_millis() as u64).await;
    let kestrel = kestrel(&sandbox).id;
    sandbox.atlas().set_org_processing_polls(kestrel, 10_000);
    let job = a.start_query(april()).await;
    within(poll_after(&sandbox, kestrel, 0)).await;
    let created = sandbox
        .requests()
        .into_iter()
        .find(|r| r.scope == Scope::atlas(kestrel) && r.method == http::Method::POST)
        .expect("the create")
        .received_at;
    within(async {
        while created.elapsed() <= limit {
            poll_after(&sandbox, kestrel, polls(&sandbox, kestrel)).await;
        }
    })
    .await;

    // Act
    a.kill().await;
    let killed_at = Instant::now();
    let finished = crate::replicas::final_job(&crate::jobs::watch_all(&b, &job.name).await);

    // Assert
    let result = finished
        .report
        .as_ref()
        .and_then(|report| report.provider_results.first())
        .expect("Kestrel's result");
    assert_eq!(result.state, pb::ResultState::Failed as i32, "{result:?}");
    let error = result.error.as_ref().expect("the error");
    assert!(error.message.contains("still processing"), "{error:?}");
    assert_eq!(
        polls_since(&sandbox, kestrel, killed_at),
        Vec::<Instant>::new(),
        "B gave up at once: the query was older than its limit"
    );
    assert_eq!(sandbox.atlas().counters(kestrel).queries_created, 1);
}
