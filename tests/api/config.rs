//! Configuration layering and validation through the public loader, with an injected environment.

use costd::config::{
    AccountKind, ConfigError, ENV_DRAIN_TIMEOUT_MS, ENV_LISTEN, ENV_LOG_FORMAT, ENV_METRICS_LISTEN,
    ENV_OTEL_ENDPOINT, ENV_OTLP_ENDPOINT, ElasticApiVersion, ElasticSettings, LogFormat, Settings,
    TeamBillingSettings, parse_toml,
};
use secrecy::ExposeSecret;
use std::{collections::HashMap, net::SocketAddr, time::Duration};

const ACCOUNT: &str = r#"
[[providers]]
kind = "team_billing"
id = "team-acme"
display_name = "Acme"
base_url = "https://api.catalyzed.ai"
team_id = "team_acme"
credentials = { token = { env = "ACME_TOKEN" } }
"#;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(toml: &str, pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::from_file_config(parse_toml(toml)?, &env(pairs))
}

#[test]
fn defaults_hold_without_a_file() {
    let settings = Settings::load(&env(&[])).unwrap();
    assert_eq!(
        settings.server.listen,
        SocketAddr::from(([0, 0, 0, 0], 50051))
    );
    assert_eq!(settings.upstream.max_attempts, 5);
    assert!(settings.accounts.is_empty());
}

#[test]
fn environment_overrides_the_file() {
    let toml = "[server]\nlisten = \"127.0.0.1:1\"\n[telemetry]\nlog_format = \"text\"\n";
    let settings = load(
        toml,
        &[
            (ENV_LISTEN, "127.0.0.1:2"),
            (ENV_LOG_FORMAT, "json"),
            (ENV_OTEL_ENDPOINT, "http://collector:4317"),
            (ENV_DRAIN_TIMEOUT_MS, "1500"),
        ],
    )
    .unwrap();
    assert_eq!(
        settings.server.listen,
        SocketAddr::from(([127, 0, 0, 1], 2))
    );
    assert_eq!(settings.telemetry.log_format, LogFormat::Json);
    assert_eq!(
        settings.telemetry.otlp_endpoint.as_deref(),
        Some("http://collector:4317")
    );
    assert_eq!(settings.drain_timeout(), Duration::from_millis(1500));
}

#[test]
fn metrics_listen_on_their_own_port_unless_disabled() {
    let settings = load("", &[]).unwrap();
    assert!(settings.metrics.enabled);
    assert_eq!(
        settings.metrics.listen,
        SocketAddr::from(([0, 0, 0, 0], 9090))
    );
    let settings = load(
        "[metrics]\nenabled = false\n",
        &[(ENV_METRICS_LISTEN, "127.0.0.1:9191")],
    )
    .unwrap();
    assert!(!settings.metrics.enabled);
    assert_eq!(
        settings.metrics.listen,
        SocketAddr::from(([127, 0, 0, 1], 9191))
    );
}

#[test]
fn costd_endpoint_wins_over_the_otel_standard_variable() {
    let settings = load(
        "",
        &[
            (ENV_OTEL_ENDPOINT, "http://a:4317"),
            (ENV_OTLP_ENDPOINT, "http://b:4317"),
        ],
    )
    .unwrap();
    assert_eq!(
        settings.telemetry.otlp_endpoint.as_deref(),
        Some("http://b:4317")
    );
}

#[test]
fn a_team_account_resolves_its_token_from_the_environment() {
    let settings = load(ACCOUNT, &[("ACME_TOKEN", "cat_tok_1")]).unwrap();
    let account = &settings.accounts[0];
    assert_eq!(account.id.as_str(), "team-acme");
    assert_eq!(account.display_name, "Acme");
    let AccountKind::TeamBilling(TeamBillingSettings {
        team_id,
        token,
        pricing_sheet_id,
    }) = &account.kind
    else {
        panic!("a team billing account")
    };
    assert_eq!(team_id.as_str(), "team_acme");
    assert_eq!(token.expose_secret(), "cat_tok_1");
    assert_eq!(pricing_sheet_id, &None);
    assert!(
        !format!("{settings:?}").contains("cat_tok_1"),
        "Debug never shows a credential"
    );
}

#[test]
fn a_mounted_credential_file_loses_its_trailing_newline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "cat_tok_file\n").unwrap();
    let toml = ACCOUNT.replace(
        "{ env = \"ACME_TOKEN\" }",
        &format!("{{ file = \"{}\" }}", path.display()),
    );
    let settings = load(&toml, &[]).unwrap();
    let AccountKind::TeamBilling(TeamBillingSettings { token, .. }) = &settings.accounts[0].kind
    else {
        panic!("a team billing account")
    };
    assert_eq!(token.expose_secret(), "cat_tok_file");
}

#[test]
fn every_mistake_names_its_key() {
    // (file, environment, the key the error must name)
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            ACCOUNT.to_string(),
            vec![],
            "providers[0].credentials.token",
        ),
        (
            ACCOUNT.replace("token = {", "api_key = {"),
            vec![("ACME_TOKEN", "x")],
            "providers[0].credentials.api_key",
        ),
        (
            ACCOUNT.replace("{ env = \"ACME_TOKEN\" }", "{ env = \"A\", file = \"/f\" }"),
            vec![],
            "providers[0].credentials.token",
        ),
        (
            ACCOUNT.replace("team-acme", "Team Acme"),
            vec![("ACME_TOKEN", "x")],
            "providers[0].id",
        ),
        (
            ACCOUNT.replace("team_id = \"team_acme\"\n", ""),
            vec![("ACME_TOKEN", "x")],
            "providers[0].team_id",
        ),
        (
            format!("{ACCOUNT}{ACCOUNT}"),
            vec![("ACME_TOKEN", "x")],
            "providers[1].id",
        ),
        (
            ACCOUNT.replace("https://api.catalyzed.ai", "http://10.0.0.1"),
            vec![("ACME_TOKEN", "x")],
            "providers[0].base_url",
        ),
        (
            ACCOUNT.replace("team_billing", "aws"),
            vec![("ACME_TOKEN", "x")],
            "providers[0].kind",
        ),
        (
            "[upstream]\nmax_attempts = 0\n".to_string(),
            vec![],
            "upstream.max_attempts",
        ),
        (
            "[telemetry]\nlog_level = \"info,[\"\n".to_string(),
            vec![],
            "telemetry.log_level",
        ),
        (String::new(), vec![(ENV_LISTEN, "nowhere")], ENV_LISTEN),
        (
            String::new(),
            vec![(ENV_METRICS_LISTEN, "nowhere")],
            ENV_METRICS_LISTEN,
        ),
        (
            "[jobs]\nstore = \"redis\"\n".to_string(),
            vec![],
            "jobs.redis",
        ),
        (
            "[jobs]\nstore = \"redis\"\nredis = { url = { env = \"COSTD_REDIS_URL\" } }\n"
                .to_string(),
            vec![("COSTD_REDIS_URL", "http://user:hunter2@r:6379")],
            "jobs.redis.url",
        ),
        (
            "[jobs]\nstore = \"redis\"\nredis = { url = { env = \"COSTD_REDIS_URL\" }, lease_ttl_ms = 999 }\n"
                .to_string(),
            vec![("COSTD_REDIS_URL", "redis://r:6379")],
            "jobs.redis.lease_ttl_ms",
        ),
        (
            "[jobs]\nstore = \"redis\"\nredis = { url = { env = \"COSTD_REDIS_URL\" }, lease_ttl_ms = 600001 }\n"
                .to_string(),
            vec![("COSTD_REDIS_URL", "redis://r:6379")],
            "jobs.redis.lease_ttl_ms",
        ),
        (
            "[jobs]\nstore = \"redis\"\nredis = { url = { env = \"COSTD_REDIS_URL\" }, ca = { file = \"/nonexistent/ca.pem\" } }\n"
                .to_string(),
            vec![("COSTD_REDIS_URL", "rediss://r:6379")],
            "jobs.redis.ca",
        ),
        (String::new(), vec![("COSTD_UNKNOWN", "1")], "COSTD_UNKNOWN"),
        (
            "[server]\nmax_concurrent_requests = 0\n".to_string(),
            vec![],
            "server.max_concurrent_requests",
        ),
        (
            "[server]\nqueue_delay_interval_ms = 0\n".to_string(),
            vec![],
            "server.queue_delay_interval_ms",
        ),
        (
            "[server]\nhandshake_timeout_ms = 0\n".to_string(),
            vec![],
            "server.handshake_timeout_ms",
        ),
        (
            "[jobs]\nmax_jobs = 0\n".to_string(),
            vec![],
            "jobs.max_jobs",
        ),
    ];
    for (toml, pairs, key) in cases {
        let error = load(&toml, &pairs).expect_err(key);
        assert_eq!(error.key, key, "{error}");
    }
}

#[test]
fn unknown_and_mistyped_keys_name_their_path_and_line() {
    let error = parse_toml("[upstream]\n\nmax_attempts = \"three\"\n").unwrap_err();
    assert_eq!(error.key, "upstream.max_attempts (line 3)");
    let error = parse_toml("[server]\nlistn = \"x\"\n").unwrap_err();
    assert!(error.message.contains("listn"), "{error}");
}

#[test]
fn a_credential_env_var_may_use_the_costd_prefix() {
    let toml = ACCOUNT.replace("ACME_TOKEN", "COSTD_ACME_TOKEN");
    assert!(load(&toml, &[("COSTD_ACME_TOKEN", "x")]).is_ok());
}

const ELASTIC: &str = r#"
[[providers]]
kind = "elastic"
id = "elastic-prod"
organization_id = "org-1"
usd_per_ecu = "0.97125"
credentials = { api_key = { env = "EC_KEY" } }
"#;

#[test]
fn an_elastic_account_defaults_to_v2_and_its_public_url() {
    let settings = load(ELASTIC, &[("EC_KEY", "k")]).unwrap();
    let account = &settings.accounts[0];
    assert_eq!(
        account.base_url.as_str(),
        "https://billing.elastic-cloud.com/"
    );
    let AccountKind::Elastic(ElasticSettings {
        api_version,
        usd_per_ecu,
        organization_id,
        ..
    }) = &account.kind
    else {
        panic!("an elastic account");
    };
    assert_eq!(*api_version, ElasticApiVersion::V2);
    assert_eq!(usd_per_ecu.to_string(), "0.97125");
    assert_eq!(organization_id.as_str(), "org-1");
    let v1 = load(
        &ELASTIC.replace("usd_per_ecu", "api_version = \"v1\"\nx"),
        &[("EC_KEY", "k")],
    );
    assert!(v1.is_err(), "unknown key x");
    let v1 = load(
        &format!("{ELASTIC}api_version = \"v1\"\n"),
        &[("EC_KEY", "k")],
    )
    .unwrap();
    assert_eq!(
        v1.accounts[0].base_url.as_str(),
        "https://api.elastic-cloud.com/"
    );
}

#[test]
fn an_inexact_or_invalid_ecu_rate_is_refused() {
    for (rate, why) in [
        ("0.123456", "decimal places"),
        ("0", "positive"),
        ("1e400", ""),
        ("one", ""),
    ] {
        let error = load(&ELASTIC.replace("0.97125", rate), &[("EC_KEY", "k")]).expect_err(rate);
        assert_eq!(error.key, "providers[0].usd_per_ecu");
        assert!(error.message.contains(why), "{error}");
    }
}

#[test]
fn kind_specific_keys_belong_to_their_kind() {
    let error = load(
        &ACCOUNT.replace(
            "team_id = \"team_acme\"",
            "team_id = \"team_acme\"\norganization_id = \"o\"",
        ),
        &[("ACME_TOKEN", "x")],
    )
    .unwrap_err();
    assert_eq!(error.key, "providers[0].organization_id");
}

#[test]
fn a_credential_written_inline_is_refused_without_being_echoed() {
    let error = load(
        &ACCOUNT.replace("{ env = \"ACME_TOKEN\" }", "\"cat_tok_inline_1\""),
        &[],
    )
    .unwrap_err();
    assert_eq!(error.key, "providers[0].credentials.token");
    assert!(!error.to_string().contains("cat_tok_inline_1"), "{error}");
}

const AUTH: &str = r#"
[server]
health_listen = "127.0.0.1:8081"
[server.tls]
cert = { file = "/tls/tls.crt" }
key = { file = "/tls/tls.key" }
client_ca = { file = "/tls/ca.crt" }
[auth.jwt]
jwks_url = "https://issuer.example/.well-known/jwks.json"
issuer = "https://issuer.example"
audience = "costd"
[[auth.grants]]
principal = "spiffe://corp/ns/billing/*"
accounts = ["team-*"]
[[auth.grants]]
principal = "auditor"
accounts = ["*"]
jobs = "all"
"#;

#[test]
fn tls_and_auth_read_with_their_defaults() {
    let settings = load(AUTH, &[]).unwrap();
    let tls = settings.server.tls.expect("tls");
    assert_eq!(tls.cert.file, std::path::PathBuf::from("/tls/tls.crt"));
    assert!(tls.client_ca.is_some());
    assert_eq!(
        settings.server.health_listen,
        Some(SocketAddr::from(([127, 0, 0, 1], 8081)))
    );
    let auth = settings.auth.expect("auth");
    let jwt = auth.jwt.expect("jwt");
    assert_eq!(jwt.algorithms, ["RS256", "ES256", "EdDSA"]);
    assert_eq!(jwt.principal_claim, "sub");
    assert_eq!(jwt.leeway_seconds, 30);
    assert_eq!(auth.grants.len(), 2);
    assert_eq!(auth.grants[0].jobs, costd::config::JobVisibility::Own);
    assert_eq!(auth.grants[1].jobs, costd::config::JobVisibility::All);
}

#[test]
fn unsafe_or_incomplete_auth_settings_are_refused_naming_the_key() {
    let with_algorithms = |algorithms: &str| {
        AUTH.replace(
            "audience = \"costd\"",
            &format!("audience = \"costd\"\nalgorithms = {algorithms}"),
        )
    };
    let cases = [
        (with_algorithms("[\"ES256\", \"none\"]"), "auth.jwt.algorithms[1]"),
        (with_algorithms("[\"HS256\"]"), "auth.jwt.algorithms[0]"),
        (
            AUTH.replace("https://issuer.example/.well", "http://issuer.example/.well"),
            "auth.jwt.jwks_url",
        ),
        (
            AUTH.replace("accounts = [\"team-*\"]", "accounts = [\"team-[\"]"),
            "auth.grants[0].accounts[0]",
        ),
        (
            "[server.tls]\ncert = { file = \"/c\" }\nkey = { file = \"/k\" }\nclient_ca = { file = \"/ca\" }\n"
                .to_string(),
            "server.tls.client_ca",
        ),
        ("[auth]\n".to_string(), "auth"),
        ("[server]\nhealth_listen = \"127.0.0.1:1\"\n".to_string(), "server.health_listen"),
        (
            AUTH.replace("key = { file = \"/tls/tls.key\" }", "key = { env = \"KEY\" }"),
            "server.tls.key.env",
        ),
    ];
    for (toml, key) in cases {
        let error = load(&toml, &[]).expect_err(key);
        assert!(error.key.starts_with(key), "{key}: {error}");
    }
}

#[test]
fn no_config_error_prints_a_value_written_where_it_does_not_belong() {
    let secret = "redis://:hunter2-inline@redis:6379";
    for toml in [
        format!("[jobs]\nstore = \"redis\"\n[jobs.redis]\nurl = \"{secret}\"\n"),
        format!("[server]\nmax_rows = \"{secret}\"\n"),
        format!("[telemetry]\nlog_format = \"{secret}\"\n"),
        ACCOUNT.replace(
            "team_id = \"team_acme\"",
            &format!("team_id = 7\nbase = \"{secret}\""),
        ),
        ACCOUNT.replace("\"team_acme\"", &format!("\"{secret}\"")),
    ] {
        let error = load(&toml, &[("ACME_TOKEN", "t")]).expect_err("refused");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}

#[test]
fn the_redis_lease_ttl_defaults_to_ten_seconds_and_takes_the_configured_value() {
    let lease_of = |extra: &str| {
        let toml = format!(
            "[jobs]\nstore = \"redis\"\nredis = {{ url = {{ env = \"COSTD_REDIS_URL\" }}{extra} }}\n"
        );
        match load(&toml, &[("COSTD_REDIS_URL", "redis://r:6379")])
            .expect("loads")
            .job_store
        {
            costd::config::JobStoreSettings::Redis { lease_ttl, .. } => lease_ttl,
            costd::config::JobStoreSettings::Memory => panic!("the redis store was configured"),
        }
    };
    assert_eq!(lease_of(""), Duration::from_secs(10));
    assert_eq!(
        lease_of(", lease_ttl_ms = 2500"),
        Duration::from_millis(2500)
    );
}
