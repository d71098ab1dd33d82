//! Bearer JWTs through the real server: each bad token is UNAUTHENTICATED with its own reason (counted
//! by reason), a good one is served, and no token appears in any log line, span or error.

use super::kit::*;
use crate::{helpers::*, metrics::scrape};
use base64::Engine as _;
use costd::{
    config::{AuthConfig, JobVisibility},
    proto as pb,
};
use tonic::Code;

struct Jwt {
    app: TestApp,
    signer: Signer,
    _files: Files,
}

async fn spawn_jwt(adjust: impl FnOnce(&mut costd::config::JwtConfig)) -> Jwt {
    let files = Files::new();
    let signer = Signer::es256("key-1");
    let eddsa = Signer::ed25519("key-2");
    let mut jwt = jwt(&files, &[&signer, &eddsa]);
    adjust(&mut jwt);
    let auth = AuthConfig {
        jwt: Some(jwt),
        grants: vec![
            grant("svc-*", &["team-*"], JobVisibility::Own),
            grant("auditor", &["*"], JobVisibility::All),
        ],
    };
    let app = spawn_with_auth(None, Some(auth), |_| {}).await;
    Jwt {
        app,
        signer,
        _files: files,
    }
}

async fn list_providers(app: &TestApp, token: Option<&str>) -> Result<Vec<String>, tonic::Status> {
    let mut costs = app.costs.clone();
    let request = match token {
        Some(token) => bearer(pb::ListProvidersRequest {}, token),
        None => tonic::Request::new(pb::ListProvidersRequest {}),
    };
    let listed = within(costs.list_providers(request)).await?.into_inner();
    Ok(listed
        .provider_accounts
        .into_iter()
        .map(|account| account.id)
        .collect())
}

fn unsigned(claims: &serde_json::Value) -> String {
    let b64 = |value: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    };
    format!(
        "{}.{}.",
        b64(&serde_json::json!({ "alg": "none", "typ": "JWT" })),
        b64(claims)
    )
}

#[tokio::test]
async fn every_bad_token_is_unauthenticated_naming_its_reason_and_never_echoed() {
    // Arrange
    let jwt = spawn_jwt(|_| {}).await;
    let signer = &jwt.signer;
    let impostor = Signer::es256("key-1");
    let with = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut claims = claims("svc-reports");
        change(&mut claims);
        claims
    };
    let hmac = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some("key-1".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &claims("svc-reports"),
        &jsonwebtoken::EncodingKey::from_secret(signer.jwk.to_string().as_bytes()),
    )
    .expect("signed");
    let cases: Vec<(&str, String)> = vec![
        ("malformed_token", "not-a-jwt".to_string()),
        (
            "token_expired",
            signer.sign(&with(&|c| c["exp"] = (now() - 600).into())),
        ),
        (
            "token_not_yet_valid",
            signer.sign(&with(&|c| c["nbf"] = (now() + 600).into())),
        ),
        (
            "wrong_issuer",
            signer.sign(&with(&|c| c["iss"] = "https://elsewhere.test".into())),
        ),
        (
            "wrong_audience",
            signer.sign(&with(&|c| c["aud"] = "another-service".into())),
        ),
        ("bad_signature", impostor.sign(&claims("svc-reports"))),
        ("alg_none", unsigned(&claims("svc-reports"))),
        (
            "unknown_kid",
            signer.sign_as("key-9", &claims("svc-reports")),
        ),
        ("algorithm_not_allowed", hmac),
        (
            "missing_principal",
            signer.sign(&with(&|c| {
                c.as_object_mut().map(|c| c.remove("sub"));
            })),
        ),
    ];

    // Act
    let missing = list_providers(&jwt.app, None).await.expect_err("refused");
    let mut refused = Vec::new();
    for (reason, token) in &cases {
        let status = list_providers(&jwt.app, Some(token))
            .await
            .expect_err(reason);
        refused.push((*reason, status));
    }

    // Assert
    assert_eq!(missing.code(), Code::Unauthenticated);
    for (reason, status) in &refused {
        assert_eq!(status.code(), Code::Unauthenticated, "{reason}: {status:?}");
        let details = tonic_types::StatusExt::get_error_details(status);
        let info = details.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, reason.to_ascii_uppercase());
    }
    let scraped = scrape(&jwt.app).await;
    for (reason, _) in &cases {
        assert_eq!(
            scraped.get(&format!(
                "costd_auth_rejections_total{{reason=\"{reason}\"}}"
            )),
            Some(&1.0),
            "{reason}"
        );
    }
    let logs = captured().logs();
    let spans = format!("{:?}", captured().spans());
    for ((reason, token), (_, status)) in cases.iter().zip(&refused) {
        let signature = token.rsplit('.').next().unwrap_or_default();
        for part in [token.as_str(), signature]
            .into_iter()
            .filter(|p| p.len() > 8)
        {
            assert!(
                !status.message().contains(part),
                "{reason}: status echoes it"
            );
            assert!(
                !format!("{status:?}").contains(part),
                "{reason}: details echo it"
            );
            assert!(!logs.contains(part), "{reason}: a log line holds the token");
            assert!(!spans.contains(part), "{reason}: a span holds the token");
        }
    }
}

#[tokio::test]
async fn a_valid_token_of_either_algorithm_names_its_caller_and_grant() {
    // Arrange
    let files = Files::new();
    let es256 = Signer::es256("key-1");
    let eddsa = Signer::ed25519("key-2");
    let auth = AuthConfig {
        jwt: Some(jwt(&files, &[&es256, &eddsa])),
        grants: vec![
            grant("svc-*", &["team-acme", "team-b*"], JobVisibility::Own),
            grant("auditor", &["*"], JobVisibility::All),
        ],
    };
    let app = spawn_with_auth(None, Some(auth), |_| {}).await;

    // Act
    let service = list_providers(&app, Some(&es256.sign(&claims("svc-reports")))).await;
    let auditor = list_providers(&app, Some(&eddsa.sign(&claims("auditor")))).await;
    let again = list_providers(&app, Some(&eddsa.sign(&claims("auditor")))).await;

    // Assert
    assert_eq!(service.expect("served"), ["team-acme", "team-borealis"]);
    let auditor = auditor.expect("served");
    assert!(auditor.len() > 3, "every account: {auditor:?}");
    assert!(auditor.iter().any(|id| id.starts_with("atlas-")));
    assert_eq!(again.expect("served"), auditor);
}

#[tokio::test]
async fn the_principal_claim_names_the_caller_when_configured() {
    // Arrange
    let jwt = spawn_jwt(|jwt| jwt.principal_claim = "client_id".to_string()).await;
    let mut claims = claims("someone-else");
    claims["client_id"] = "svc-billing".into();

    // Act
    let listed = list_providers(&jwt.app, Some(&jwt.signer.sign(&claims))).await;

    // Assert
    assert_eq!(
        listed.expect("served"),
        ["team-acme", "team-borealis", "team-cobalt"]
    );
}

#[tokio::test]
async fn health_answers_without_a_token_and_reflection_does_not() {
    // Arrange
    let jwt = spawn_jwt(|_| {}).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(jwt.app.channel.clone());
    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
            jwt.app.channel.clone(),
        );
    let ask = || tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };

    // Act
    let checked = within(health.check(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    }))
    .await;
    let anonymous = within(reflection.server_reflection_info(futures::stream::iter([ask()]))).await;
    let token = jwt.signer.sign(&claims("svc-reports"));
    let authenticated =
        within(reflection.server_reflection_info(bearer(futures::stream::iter([ask()]), &token)))
            .await;

    // Assert
    assert!(checked.is_ok(), "{checked:?}");
    assert_eq!(
        anonymous.expect_err("reflection needs credentials").code(),
        Code::Unauthenticated
    );
    let mut answers = authenticated.expect("reflection with a token").into_inner();
    let first = within(futures::StreamExt::next(&mut answers))
        .await
        .expect("an answer")
        .expect("ok");
    assert!(format!("{first:?}").contains("costd.v1.CostService"));
}

#[tokio::test]
async fn a_jwks_url_is_fetched_once_and_not_again_for_every_unknown_kid() {
    // Arrange
    let signer = Signer::es256("key-1");
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let jwks = serde_json::json!({ "keys": [signer.jwk.clone()] }).to_string();
    let counted = fetches.clone();
    let router = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let jwks = jwks.clone();
            async move { jwks }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bound");
    let url = format!(
        "http://{}/jwks.json",
        listener.local_addr().expect("an address")
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    let files = Files::new();
    let mut config = jwt(&files, &[]);
    config.jwks = None;
    config.jwks_url = Some(url);
    let auth = AuthConfig {
        jwt: Some(config),
        grants: vec![grant("svc-*", &["team-*"], JobVisibility::Own)],
    };
    let app = spawn_with_auth(None, Some(auth), |_| {}).await;

    // Act
    let first = list_providers(&app, Some(&signer.sign(&claims("svc-one")))).await;
    let second = list_providers(&app, Some(&signer.sign(&claims("svc-two")))).await;
    let unknown = list_providers(&app, Some(&signer.sign_as("key-7", &claims("svc-one")))).await;

    // Assert
    assert!(first.is_ok(), "{first:?}");
    assert!(second.is_ok(), "{second:?}");
    assert_eq!(
        unknown.expect_err("no such key").code(),
        Code::Unauthenticated
    );
    assert_eq!(
        fetches.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "fetched at start; an unknown kid right after does not fetch again"
    );
}

#[tokio::test]
async fn without_an_auth_section_costd_says_it_serves_everyone() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let listed = list_providers(&app, None).await;
    let scraped = scrape(&app).await;

    // Assert
    assert!(listed.is_ok());
    assert_eq!(scraped.get("costd_auth_open"), Some(&1.0));
    assert!(
        captured()
            .logs()
            .contains("no [auth] section: serving every caller, unauthenticated")
    );
}

/// The first message of an export, as `token`'s caller gets it.
async fn export_header(
    app: &TestApp,
    token: &str,
    query: pb::CostQuery,
) -> Result<pb::ExportHeader, tonic::Status> {
    let request = bearer(
        pb::ExportCostsRequest {
            query: Some(query),
            format: pb::ExportFormat::FocusCsv as i32,
            rows_per_group: 0,
        },
        token,
    );
    let mut stream = within(app.costs.clone().export_costs(request))
        .await?
        .into_inner();
    match within(stream.message()).await?.and_then(|m| m.part) {
        Some(pb::export_costs_response::Part::Header(header)) => Ok(header),
        other => panic!("the first message is the header: {other:?}"),
    }
}

#[tokio::test]
async fn an_export_covers_only_the_callers_granted_accounts() {
    // Arrange
    let jwt = spawn_jwt(|_| {}).await;
    let token = jwt.signer.sign(&claims("svc-reports"));
    let january = || query("2026-01-01", "2026-02-01", &[], pb::Granularity::None);

    // Act
    let unfiltered = export_header(&jwt.app, &token, january()).await;
    let naming_atlas = export_header(
        &jwt.app,
        &token,
        only_accounts(january(), &["team-acme", "atlas-kestrel"]),
    )
    .await;

    // Assert
    let accounts: Vec<String> = unfiltered
        .expect("exported")
        .provider_results
        .into_iter()
        .map(|r| r.provider_account)
        .collect();
    assert_eq!(accounts, ["team-acme", "team-borealis", "team-cobalt"]);
    let denied = naming_atlas.expect_err("refused");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("atlas-kestrel"),
        "{}",
        denied.message()
    );
    assert!(
        jwt.app
            .sandbox
            .requests()
            .iter()
            .all(|r| r.scope.upstream == costd::sandbox::Scope::team_billing("").upstream),
        "only granted accounts were asked"
    );
}
