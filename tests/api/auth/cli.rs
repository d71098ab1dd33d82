//! The client commands against a server with mTLS and JWTs: `https://`, `--ca-cert`,
//! `--client-cert`/`--client-key`, and the token from `--token-file` or `COSTD_TOKEN`.

use super::kit::*;
use crate::{binary::COSTD, helpers::*};
use costd::config::{AuthConfig, JobVisibility};

#[tokio::test]
async fn the_cli_calls_over_mtls_with_a_token_from_a_file_or_the_environment() {
    // Arrange
    let ca = Ca::new("cli CA");
    let files = Files::new();
    let signer = Signer::es256("key-1");
    let auth = AuthConfig {
        jwt: Some(jwt(&files, &[&signer])),
        grants: vec![grant("svc-cli", &["team-acme"], JobVisibility::Own)],
    };
    let app = spawn_with_auth(
        Some(tls(&files, &ca.server(1), Some(&ca))),
        Some(auth),
        |_| {},
    )
    .await;
    let client = ca.client(&["spiffe://corp/ns/ops/sa/cli"]);
    let token = signer.sign(&claims("svc-cli"));
    let ca_file = files.write("client-ca.crt", &ca.pem());
    let cert_file = files.write("client.crt", &client.cert);
    let key_file = files.write("client.key", &client.key);
    let token_file = files.write("token", &format!("{token}\n"));
    let addr = format!("https://{}", app.addr);
    let tls_args = [
        "--addr".into(),
        addr,
        "--ca-cert".into(),
        ca_file.file.display().to_string(),
        "--client-cert".into(),
        cert_file.file.display().to_string(),
        "--client-key".into(),
        key_file.file.display().to_string(),
    ];
    let run = |args: Vec<String>, token: Option<&str>| {
        let mut command = tokio::process::Command::new(COSTD);
        command.args(args);
        match token {
            Some(token) => command.env("COSTD_TOKEN", token),
            None => command.env_remove("COSTD_TOKEN"),
        };
        async move { within(command.output()).await.expect("runs") }
    };
    let query = |extra: &[&str]| {
        let mut args: Vec<String> = ["query", "--from", "2026-03-01", "--to", "2026-03-02"]
            .map(String::from)
            .to_vec();
        args.extend(tls_args.iter().cloned());
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };

    // Act
    let from_file = run(
        query(&[
            "--output",
            "json",
            "--token-file",
            &token_file.file.display().to_string(),
        ]),
        None,
    )
    .await;
    let mut jobs: Vec<String> = ["jobs", "list"].map(String::from).to_vec();
    jobs.extend(tls_args.iter().cloned());
    let from_env = run(jobs, Some(&token)).await;
    let without = run(query(&["--output", "json"]), None).await;

    // Assert
    assert!(
        from_file.status.success(),
        "{}",
        String::from_utf8_lossy(&from_file.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&from_file.stdout).expect("json");
    assert_eq!(report["complete"], true, "{report}");
    assert!(
        from_env.status.success(),
        "{}",
        String::from_utf8_lossy(&from_env.stderr)
    );
    assert!(!without.status.success());
    let refused = String::from_utf8_lossy(&without.stderr);
    // Without the token, the certificate names the caller, and no grant matches it.
    assert!(
        refused.contains("no grant for principal `spiffe://corp/ns/ops/sa/cli`"),
        "{refused}"
    );
    let signature = token.rsplit('.').next().expect("a signature");
    for output in [&from_file, &from_env, &without] {
        assert!(!String::from_utf8_lossy(&output.stderr).contains(signature));
    }
}
