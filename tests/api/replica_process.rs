//! A costd replica as a process of its own (`costd serve`, this build's binary), on the sandbox's Atlas
//! organization Kestrel with its jobs in redis: one that can be killed for real (SIGKILL). Its address
//! is read from its "serving" log line, never waited for by time. Self-contained, so
//! `benches/replicas.rs` includes this same file.

use costd::{
    proto::{self as pb, query_job_service_client::QueryJobServiceClient},
    sandbox::SandboxHandle,
};
use std::{io::Write, process::Stdio, time::Duration};
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::Channel;

/// Longest a start may take before the caller fails instead of hanging.
const STARTUP_PATIENCE: Duration = Duration::from_secs(30);

pub struct ReplicaProcess {
    child: tokio::process::Child,
    pub channel: Channel,
    _config: tempfile::NamedTempFile,
}

/// The sandbox's Kestrel organization, the one every replica process reads.
pub fn kestrel(sandbox: &SandboxHandle) -> &costd::sandbox::AtlasOrg {
    sandbox
        .atlas()
        .dataset()
        .orgs()
        .iter()
        .find(|o| o.name.starts_with("Kestrel"))
        .expect("seeded")
}

impl ReplicaProcess {
    /// A replica on `redis_url` under `key_prefix`, with leases of `lease_ttl`, polling Atlas at most
    /// 80 ms apart.
    pub async fn start(
        sandbox: &SandboxHandle,
        redis_url: &str,
        key_prefix: &str,
        lease_ttl: Duration,
    ) -> Self {
        Self::start_with(sandbox, redis_url, key_prefix, lease_ttl, "").await
    }

    /// As [`ReplicaProcess::start`], with `sections` (whole TOML tables, e.g. `[auth.jwt]`) added to
    /// its config.
    pub async fn start_with(
        sandbox: &SandboxHandle,
        redis_url: &str,
        key_prefix: &str,
        lease_ttl: Duration,
        sections: &str,
    ) -> Self {
        let kestrel = kestrel(sandbox);
        let config = format!(
            r#"
[server]
listen = "127.0.0.1:0"

[metrics]
enabled = false

[atlas]
poll_initial_ms = 40
poll_max_ms = 80

[jobs]
store = "redis"

[jobs.redis]
url = {{ env = "REDIS_URL" }}
key_prefix = "{key_prefix}"
lease_ttl_ms = {lease}

[[providers]]
kind = "atlas"
id = "atlas-kestrel"
base_url = "{base}"
org_id = "{org}"
credentials = {{ public_key = {{ env = "ATLAS_PUBLIC_KEY" }}, private_key = {{ env = "ATLAS_PRIVATE_KEY" }} }}

{sections}
"#,
            lease = lease_ttl.as_millis(),
            base = sandbox.base_url(),
            org = kestrel.id,
        );
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(config.as_bytes()).expect("written");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_costd"))
            .arg("serve")
            .arg("--config")
            .arg(file.path())
            .env_clear()
            .env("REDIS_URL", redis_url)
            .env("ATLAS_PUBLIC_KEY", &kestrel.api_key.public_key)
            .env("ATLAS_PRIVATE_KEY", &kestrel.api_key.private_key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("costd starts");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let addr = tokio::time::timeout(STARTUP_PATIENCE, async {
            while let Some(line) = lines.next_line().await.expect("readable") {
                let entry: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if entry["message"] == "serving" {
                    return entry["addr"].as_str().map(str::to_string);
                }
            }
            None
        })
        .await
        .expect("serving in time")
        .expect("the replica serves");
        // Its log is drained for as long as it lives, so logging never blocks it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("a uri")
            .connect_lazy();
        ReplicaProcess {
            child,
            channel,
            _config: file,
        }
    }

    pub fn jobs(&self) -> QueryJobServiceClient<Channel> {
        QueryJobServiceClient::new(self.channel.clone())
    }

    pub async fn start_query(&self, asked: pb::CostQuery) -> pb::Job {
        self.jobs()
            .start_query(pb::StartQueryRequest { query: Some(asked) })
            .await
            .expect("started")
            .into_inner()
            .job
            .expect("a job")
    }

    /// SIGKILL, as a crash or an OOM kill: nothing is released, nothing written on the way out.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("killed");
    }
}

/// Polls of `org` so far, as the sandbox counted them.
pub fn polls(sandbox: &SandboxHandle, org: &str) -> usize {
    sandbox.atlas().counters(org).polls
}

/// Waits until the sandbox has seen more than `seen` polls of `org`.
pub async fn poll_after(sandbox: &SandboxHandle, org: &str, seen: usize) {
    let scope = costd::sandbox::Scope::atlas(org);
    while polls(sandbox, org) <= seen {
        sandbox
            .wait_for_requests(&scope, sandbox.request_count(&scope) + 1)
            .await;
    }
}
