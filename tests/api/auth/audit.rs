//! The audit log: one structured line per call with the principal, the method, the accounts it read
//! and the code; never a token.

use super::kit::*;
use crate::helpers::*;
use costd::{
    config::{AuthConfig, JobVisibility},
    proto as pb,
};

/// The audit lines of `principal`, as (method, accounts, code).
fn audit_lines(principal: &str) -> Vec<(String, String, String)> {
    captured()
        .logs()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["target"] == "costd::audit" && line["principal"] == principal)
        .map(|line| {
            let field = |name: &str| line[name].as_str().unwrap_or_default().to_string();
            (field("method"), field("accounts"), field("code"))
        })
        .collect()
}

#[tokio::test]
async fn every_call_leaves_one_audit_line_with_principal_method_accounts_and_code() {
    // Arrange
    let files = Files::new();
    let signer = Signer::es256("key-1");
    let auth = AuthConfig {
        jwt: Some(jwt(&files, &[&signer])),
        grants: vec![grant(
            "svc-audited",
            &["team-a*", "team-b*"],
            JobVisibility::Own,
        )],
    };
    let app = spawn_with_auth(None, Some(auth), |_| {}).await;
    let token = signer.sign(&claims("svc-audited"));
    let month = || query("2026-03-01", "2026-04-01", &[], pb::Granularity::None);
    let mut costs = app.costs.clone();

    // Act
    within(costs.list_providers(bearer(pb::ListProvidersRequest {}, &token)))
        .await
        .expect("listed");
    for _ in 0..2 {
        within(costs.get_costs(bearer(
            pb::GetCostsRequest {
                query: Some(month()),
            },
            &token,
        )))
        .await
        .expect("answered, the second time from a remembered answer");
    }
    let denied = within(costs.get_costs(bearer(
        pb::GetCostsRequest {
            query: Some(only_accounts(month(), &["team-cobalt"])),
        },
        &token,
    )))
    .await;

    // Assert
    assert!(denied.is_err());
    let get_costs = "costd.v1.CostService/GetCosts".to_string();
    let both = "team-acme,team-borealis".to_string();
    assert_eq!(
        audit_lines("svc-audited"),
        [
            (
                "costd.v1.CostService/ListProviders".to_string(),
                both.clone(),
                "OK".to_string()
            ),
            (get_costs.clone(), both.clone(), "OK".to_string()),
            (get_costs.clone(), both, "OK".to_string()),
            (get_costs, String::new(), "PERMISSION_DENIED".to_string()),
        ]
    );
    let signature = token.rsplit('.').next().expect("a signature");
    assert!(!captured().logs().contains(signature));
}
