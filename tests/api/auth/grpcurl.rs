//! The real grpcurl against a server with `[auth.jwt]`: with a bearer token it discovers the services
//! through reflection and calls them; without one reflection is refused while health answers.

use super::kit::*;
use crate::{end_to_end::grpcurl, helpers::*};
use costd::config::{AuthConfig, JobVisibility};
use std::process::Output;

const TEAMS: [&str; 3] = ["team_acme", "team_borealis", "team_cobalt"];

async fn run_grpcurl(args: &[&str]) -> Output {
    within(tokio::process::Command::new(grpcurl()).args(args).output())
        .await
        .expect("grpcurl runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn grpcurl_with_a_bearer_token_lists_and_calls_through_reflection_and_without_one_only_health_answers()
 {
    // Arrange
    let files = Files::new();
    let signer = Signer::es256("key-1");
    let auth = AuthConfig {
        jwt: Some(jwt(&files, &[&signer])),
        grants: vec![grant("svc-grpcurl", &["team-*"], JobVisibility::Own)],
    };
    let app = spawn_with_auth(None, Some(auth), |_| {}).await;
    let addr = app.addr.to_string();
    let token = signer.sign(&claims("svc-grpcurl"));
    let header = format!("authorization: Bearer {token}");
    let body = r#"{"query":{"start_time":"2026-01-01T00:00:00Z","end_time":"2026-02-01T00:00:00Z","group_by":["GROUP_BY_SERVICE"]}}"#;
    let get_costs = "costd.v1.CostService/GetCosts";

    // Act: without a token first, so any upstream request it caused would be counted.
    let anonymous_list = run_grpcurl(&["-plaintext", &addr, "list"]).await;
    // Reflection with the token, the call itself without: the call is refused, health is not.
    let call_without_token = run_grpcurl(&[
        "-plaintext",
        "-reflect-header",
        &header,
        "-d",
        body,
        &addr,
        get_costs,
    ])
    .await;
    let health_without_token = run_grpcurl(&[
        "-plaintext",
        "-reflect-header",
        &header,
        "-d",
        r#"{"service":""}"#,
        &addr,
        "grpc.health.v1.Health/Check",
    ])
    .await;
    let upstream_before_granted_calls = app.sandbox.total_requests();
    let list = run_grpcurl(&["-plaintext", "-H", &header, &addr, "list"]).await;
    let call = run_grpcurl(&["-plaintext", "-H", &header, "-d", body, &addr, get_costs]).await;

    // Assert
    assert!(!anonymous_list.status.success(), "reflection needs a token");
    let refusal = text(&anonymous_list.stderr);
    assert!(
        refusal.contains("Unauthenticated") && refusal.contains("no credentials"),
        "{refusal}"
    );
    assert!(!call_without_token.status.success());
    let refusal = text(&call_without_token.stderr);
    assert!(
        refusal.contains("Unauthenticated") && refusal.contains("no credentials"),
        "{refusal}"
    );
    assert!(
        health_without_token.status.success(),
        "{}",
        text(&health_without_token.stderr)
    );
    let health: serde_json::Value =
        serde_json::from_slice(&health_without_token.stdout).expect("JSON");
    assert_eq!(health["status"], "SERVING");
    assert_eq!(
        upstream_before_granted_calls, 0,
        "refused calls reach no upstream"
    );

    assert!(list.status.success(), "{}", text(&list.stderr));
    let services = text(&list.stdout);
    for service in [
        "costd.v1.CostService",
        "costd.v1.QueryJobService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.lines().any(|line| line == service),
            "{service} in {services}"
        );
    }
    assert!(call.status.success(), "{}", text(&call.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&call.stdout).expect("JSON");
    let total_nanos = json_nanos(&answer["report"]["totals"]["billedCost"]);
    let expected: i128 = TEAMS
        .iter()
        .map(|team| app.expected_nanos(team, at("2026-01-01"), at("2026-02-01")))
        .sum();
    assert_eq!(total_nanos, expected, "the granted team accounts, exactly");
    // One month of each granted team account, one upstream call each; Atlas and Elastic, outside
    // the grant, were never asked.
    for team in TEAMS {
        assert_eq!(app.sandbox.request_count(&team_scope(team)), 1, "{team}");
    }
    assert_eq!(app.sandbox.total_requests(), TEAMS.len());

    let signature = token.rsplit('.').next().expect("a signature");
    let logs = captured().logs();
    assert!(
        !logs.contains(signature) && !logs.contains(&token),
        "no token in the logs"
    );
}
