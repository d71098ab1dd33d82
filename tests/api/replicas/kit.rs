//! What the replica tests share: a replica on a redis job store, its stores and stored jobs, and
//! the figures they are checked against.

use super::*;

/// Short, so the tests see leases renewed and taken over.
pub(crate) const LEASE_TTL: Duration = Duration::from_millis(1_000);

/// The job store of a test replica: `redis_url`, the tests' prefix and lease, trusting `ca` (PEM) for
/// `rediss://` when given.
pub(crate) fn redis_store(redis_url: &str, ca: Option<String>) -> JobStoreSettings {
    JobStoreSettings::Redis {
        url: SecretString::from(redis_url.to_string()),
        key_prefix: "costd".to_string(),
        lease_ttl: LEASE_TTL,
        ca_certificates: ca.map(String::into_bytes),
    }
}

/// A costd on `sandbox` serving only Kestrel's Atlas organization, its jobs in `redis_url`, with
/// `adjust` applied last.
pub(crate) async fn kestrel_replica(
    sandbox: &SandboxHandle,
    redis_url: &str,
    adjust: impl FnOnce(&mut costd::config::Settings),
) -> TestApp {
    let store = redis_store(redis_url, None);
    spawn_app_beside(
        sandbox.clone(),
        Arc::new(SystemClock),
        &[ProviderKind::Atlas],
        move |settings, _| {
            settings
                .accounts
                .retain(|a| a.id.as_str() == "atlas-kestrel");
            settings.job_store = store;
            adjust(settings);
        },
    )
    .await
}

/// A costd on `sandbox` with its jobs in `redis_url`, serving only `accounts`.
pub(crate) async fn replica(
    sandbox: &SandboxHandle,
    redis_url: &str,
    accounts: &'static [&'static str],
) -> TestApp {
    replica_trusting(sandbox, redis_url, accounts, None).await
}

/// As [`replica`], trusting `ca` (PEM) for a `rediss://` store.
pub(crate) async fn replica_trusting(
    sandbox: &SandboxHandle,
    redis_url: &str,
    accounts: &'static [&'static str],
    ca: Option<String>,
) -> TestApp {
    let store = redis_store(redis_url, ca);
    spawn_app_beside(
        sandbox.clone(),
        Arc::new(SystemClock),
        &[ProviderKind::Atlas, ProviderKind::TeamBilling],
        move |settings, _| {
            settings
                .accounts
                .retain(|a| accounts.contains(&a.id.as_str()));
            settings.job_store = store;
        },
    )
    .await
}

/// Redis, a sandbox, and two replicas A and B on both serving only Kestrel's Atlas organization,
/// which answers after `polls` polls.
pub(crate) async fn two_kestrel_replicas(
    polls: u32,
) -> (RedisServer, SandboxHandle, TestApp, TestApp) {
    let redis = RedisServer::start().await;
    let sandbox = sandbox();
    let a = replica(&sandbox, &redis.url(), &["atlas-kestrel"]).await;
    let b = replica(&sandbox, &redis.url(), &["atlas-kestrel"]).await;
    sandbox
        .atlas()
        .set_org_processing_polls(org(&a, "Kestrel"), polls);
    (redis, sandbox, a, b)
}

pub(crate) fn sandbox() -> SandboxHandle {
    costd::sandbox::Sandbox::start(SandboxOptions::default()).expect("sandbox starts")
}

pub(crate) async fn get(app: &TestApp, name: &str) -> Result<pb::Job, tonic::Status> {
    Ok(jobs(app)
        .get_job(pb::GetJobRequest {
            name: name.to_string(),
        })
        .await?
        .into_inner()
        .job
        .expect("job"))
}

pub(crate) fn final_job(events: &[pb::WatchJobResponse]) -> pb::Job {
    let last = events.last().expect("events");
    assert_eq!(last.kind, pb::JobEventKind::Final as i32);
    last.job.clone().expect("the final job")
}

pub(crate) fn total(job: &pb::Job) -> i128 {
    nanos(
        job.report
            .as_ref()
            .and_then(|r| r.totals.as_ref())
            .and_then(|t| t.billed_cost.as_ref()),
    )
}

/// Kestrel's April 2025 in nanodollars, summed from the sandbox's usage, not from any answer.
pub(crate) fn kestrel_april(sandbox: &SandboxHandle) -> i128 {
    let day = |text: &str| chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").expect("date");
    let kestrel = sandbox
        .atlas()
        .dataset()
        .orgs()
        .iter()
        .find(|o| o.name.starts_with("Kestrel"))
        .expect("seeded");
    sandbox
        .atlas()
        .dataset()
        .org(kestrel.id)
        .expect("seeded")
        .usage(day("2025-04-01"), day("2025-05-01"))
        .map(|u| i128::from(u.amount_cents) * 10_000_000)
        .sum()
}

/// A job store of its own on `redis`, as a replica's.
pub(crate) fn store_on(redis: &RedisServer) -> RedisJobStore<Engine> {
    let options = RedisStoreOptions {
        key_prefix: "costd".to_string(),
        lease_ttl: LEASE_TTL,
        ca_certificates: None,
    };
    RedisJobStore::new(&SecretString::from(redis.url()), options).expect("store")
}

/// A job of the engine as a store holds it, at `version`, in `state`.
pub(crate) fn stored_job(id: &JobId, version: u64, state: JobState) -> Job {
    let start = at("2026-01-01");
    JobSnapshot {
        id: id.clone(),
        version,
        owner: None,
        query: CostQuery {
            period: Period::new(start, at("2026-02-01")).expect("a period"),
            filter: CostFilter::default(),
            group_by: Vec::new(),
            granularity: Granularity::None,
            max_staleness: None,
        },
        state,
        parts: Vec::new(),
        report: None,
        error: None,
        create_time: start,
        update_time: start,
        expire_time: None,
        last_change: JobChange::StateChanged,
    }
}
