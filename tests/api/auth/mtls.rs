//! TLS and client certificates through the real server: the certificate's SAN names the caller, its
//! grant bounds what it sees, a certificate of another CA is refused per call, health needs nothing,
//! rotated certificate files are presented at the next handshake, and silent peers never hold back a
//! handshake.

use super::kit::*;
use crate::{helpers::*, metrics::scrape};
use costd::{
    config::{AuthConfig, JobVisibility},
    proto::{self as pb, cost_service_client::CostServiceClient},
};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::sync::Arc;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const BILLING: &str = "spiffe://corp/ns/billing/sa/reporter";

fn billing_sees_teams() -> AuthConfig {
    AuthConfig {
        jwt: None,
        grants: vec![grant(
            "spiffe://corp/ns/billing/*",
            &["team-*"],
            JobVisibility::Own,
        )],
    }
}

struct Mtls {
    app: TestApp,
    ca: Ca,
    _files: Files,
}

async fn spawn_mtls(auth: AuthConfig) -> Mtls {
    let ca = Ca::new("costd test CA");
    let files = Files::new();
    let tls = tls(&files, &ca.server(1), Some(&ca));
    let app = spawn_with_auth(Some(tls), Some(auth), |settings| {
        settings.server.health_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    Mtls {
        app,
        ca,
        _files: files,
    }
}

fn team_month() -> pb::CostQuery {
    query(
        "2026-03-01",
        "2026-04-01",
        &[pb::GroupBy::BillingAccount],
        pb::Granularity::None,
    )
}

#[tokio::test]
async fn a_spiffe_caller_granted_team_accounts_sees_only_those_and_is_denied_an_atlas_one() {
    // Arrange
    let mtls = spawn_mtls(billing_sees_teams()).await;
    let client = mtls.ca.client(&[BILLING, "reporter.billing.svc"]);
    let mut costs = CostServiceClient::new(tls_channel(&mtls.app, &mtls.ca, Some(&client)).await);

    // Act
    let providers = within(costs.list_providers(pb::ListProvidersRequest {}))
        .await
        .expect("listed")
        .into_inner();
    let report = within(costs.get_costs(pb::GetCostsRequest {
        query: Some(team_month()),
    }))
    .await
    .expect("answered")
    .into_inner()
    .report
    .expect("a report");
    let denied = within(costs.get_costs(pb::GetCostsRequest {
        query: Some(only_accounts(team_month(), &["team-acme", "atlas-kestrel"])),
    }))
    .await
    .expect_err("an Atlas account is outside the grant");

    // Assert
    let listed: Vec<&str> = providers
        .provider_accounts
        .iter()
        .map(|account| account.id.as_str())
        .collect();
    assert_eq!(listed, ["team-acme", "team-borealis", "team-cobalt"]);
    let totals = report.totals.expect("totals");
    assert_eq!(
        totals.covered_provider_accounts,
        ["team-acme", "team-borealis", "team-cobalt"]
    );
    assert!(totals.complete);
    assert!(
        report
            .provider_results
            .iter()
            .all(|result| result.provider_account.starts_with("team-"))
    );
    assert_eq!(
        mtls.app.sandbox.total_requests(),
        3,
        "one month of each team, and nothing of the accounts outside the grant"
    );
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("atlas-kestrel"),
        "{}",
        denied.message()
    );
    assert!(
        !denied.message().contains("team-acme"),
        "{}",
        denied.message()
    );
}

#[tokio::test]
async fn a_certificate_without_a_uri_is_named_by_its_first_dns_name() {
    // Arrange
    let mtls = spawn_mtls(AuthConfig {
        jwt: None,
        grants: vec![grant(
            "reporter.billing.svc",
            &["team-acme"],
            JobVisibility::Own,
        )],
    })
    .await;
    let client = mtls
        .ca
        .client(&["reporter.billing.svc", "other.billing.svc"]);
    let mut costs = CostServiceClient::new(tls_channel(&mtls.app, &mtls.ca, Some(&client)).await);

    // Act
    let providers = within(costs.list_providers(pb::ListProvidersRequest {}))
        .await
        .expect("listed")
        .into_inner();

    // Assert
    let listed: Vec<&str> = providers
        .provider_accounts
        .iter()
        .map(|account| account.id.as_str())
        .collect();
    assert_eq!(listed, ["team-acme"]);
}

#[tokio::test]
async fn bad_or_missing_client_certificates_are_unauthenticated_and_health_needs_none() {
    // Arrange
    let mtls = spawn_mtls(billing_sees_teams()).await;
    let stranger_ca = Ca::new("another CA");
    let stranger = stranger_ca.client(&[BILLING]);
    let nameless = mtls.ca.client(&[]);
    let unknown = mtls.ca.client(&["spiffe://corp/ns/marketing/sa/web"]);

    // Act
    let mut answers = Vec::new();
    for client in [None, Some(&stranger), Some(&nameless), Some(&unknown)] {
        let channel = tls_channel(&mtls.app, &mtls.ca, client).await;
        let health = within(
            HealthClient::new(channel.clone()).check(HealthCheckRequest {
                service: String::new(),
            }),
        )
        .await;
        let costs =
            within(CostServiceClient::new(channel).list_providers(pb::ListProvidersRequest {}))
                .await;
        answers.push((health.is_ok(), costs.expect_err("refused")));
    }
    let plaintext = tonic::transport::Channel::from_shared(format!(
        "http://{}",
        mtls.app.health_addr.expect("a health port")
    ))
    .expect("uri")
    .connect_lazy();
    let probe = within(HealthClient::new(plaintext).check(HealthCheckRequest {
        service: String::new(),
    }))
    .await
    .expect("the probe port answers in plaintext")
    .into_inner();

    // Assert
    let reasons: Vec<(bool, Code, &str)> = answers
        .iter()
        .map(|(health, status)| (*health, status.code(), status.message()))
        .collect();
    assert_eq!(
        reasons,
        [
            (
                true,
                Code::Unauthenticated,
                "no credentials: send `authorization: Bearer <JWT>` or a client certificate"
            ),
            (
                true,
                Code::Unauthenticated,
                "the client certificate is not issued by a trusted CA"
            ),
            (
                true,
                Code::Unauthenticated,
                "the client certificate has neither a URI nor a DNS subject alternative name"
            ),
            (
                true,
                Code::PermissionDenied,
                "no grant for principal `spiffe://corp/ns/marketing/sa/web`"
            ),
        ]
    );
    assert_eq!(
        probe.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let scraped = scrape(&mtls.app).await;
    for reason in [
        "missing_credentials",
        "untrusted_client_certificate",
        "client_certificate_without_identity",
        "no_grant",
    ] {
        assert_eq!(
            scraped.get(&format!(
                "costd_auth_rejections_total{{reason=\"{reason}\"}}"
            )),
            Some(&1.0),
            "{reason}"
        );
    }
    assert_eq!(scraped.get("costd_auth_open"), Some(&0.0));
}

/// The certificate the server presents in a fresh handshake.
async fn presented_certificate(app: &TestApp, ca: &Ca) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).expect("pem"))
        .expect("a root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = within(tokio::net::TcpStream::connect(app.addr))
        .await
        .expect("connected");
    let stream = within(connector.connect(ServerName::try_from("localhost").expect("a name"), tcp))
        .await
        .expect("handshake");
    stream.get_ref().1.peer_certificates().expect("a chain")[0].clone()
}

#[tokio::test]
async fn certificate_files_replaced_on_disk_are_presented_at_the_next_handshake() {
    // Arrange
    let ca = Ca::new("rotating CA");
    let files = Files::new();
    let first = ca.server(1);
    let app = spawn_with_auth(Some(tls(&files, &first, None)), None, |_| {}).await;
    let before = presented_certificate(&app, &ca).await;

    // Act
    let second = ca.server(2);
    files.write("tls.crt", &second.cert);
    files.write("tls.key", &second.key);
    let after = presented_certificate(&app, &ca).await;

    // Assert
    let der = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem");
    assert_eq!(before, der(&first.cert));
    assert_eq!(after, der(&second.cert));
    let mut costs = CostServiceClient::new(tls_channel(&app, &ca, None).await);
    within(costs.list_providers(pb::ListProvidersRequest {}))
        .await
        .expect("served over the new certificate (no [auth]: open)");
}

#[tokio::test]
async fn silent_peers_never_hold_back_a_tls_handshake() {
    // Arrange: a handshake timeout longer than the test's patience, and more silent peers than any
    // fixed batch of handshakes would take, so a client queued behind them would fail.
    let ca = Ca::new("busy CA");
    let files = Files::new();
    let app = spawn_with_auth(Some(tls(&files, &ca.server(1), None)), None, |settings| {
        settings.server.handshake_timeout_ms = 600_000;
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(
            within(tokio::net::TcpStream::connect(app.addr))
                .await
                .expect("connects"),
        );
    }

    // Act
    let mut costs = CostServiceClient::new(tls_channel(&app, &ca, None).await);
    let answer = within(costs.list_providers(pb::ListProvidersRequest {})).await;

    // Assert
    assert!(answer.is_ok(), "served: {answer:?}");
    assert_eq!(silent.len(), 300);
}
