//! Helpers shared by the sandbox's test modules.

use std::future::Future;
use std::time::Duration;

use serde_json::Value;

use crate::sandbox::{Sandbox, SandboxHandle, SandboxOptions};

/// Bound on every wait in tests: a failure shows up as a timeout, never as a hung suite.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) const JAN_2025: (&str, &str) = ("2025-01-01T00:00:00Z", "2025-02-01T00:00:00Z");

pub(crate) fn start() -> SandboxHandle {
    Sandbox::start(SandboxOptions::default()).expect("sandbox starts on an ephemeral port")
}

pub(crate) fn client() -> reqwest::Client {
    client_with_timeout(WAIT)
}

pub(crate) fn client_with_timeout(timeout: Duration) -> reqwest::Client {
    // no_proxy: a proxy from the environment must not sit between a test and its sandbox.
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("client builds")
}

pub(crate) async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("finished within the test wait bound")
}

/// Cost URL for `team` with a raw query string.
pub(crate) fn cost_url(sb: &SandboxHandle, team: &str, query: &str) -> String {
    format!("{}/teams/{team}/billing/cost?{query}", sb.base_url())
}

pub(crate) fn period((start, end): (&str, &str)) -> String {
    format!("startDate={start}&endDate={end}")
}

/// GETs the cost endpoint with the team's own token.
pub(crate) async fn get_cost(sb: &SandboxHandle, team: &str, query: &str) -> reqwest::Response {
    let token = sb.dataset().team(team).expect("seeded team").token.clone();
    within(
        client()
            .get(cost_url(sb, team, query))
            .bearer_auth(token)
            .send(),
    )
    .await
    .expect("request succeeds")
}

pub(crate) async fn json(response: reqwest::Response) -> Value {
    let bytes = response.bytes().await.expect("body reads");
    serde_json::from_slice(&bytes).expect("body is JSON")
}

/// The seeded API token of a team.
pub fn token_of(sb: &SandboxHandle, team_id: &str) -> String {
    sb.dataset().team(team_id).expect("seeded").token.clone()
}
