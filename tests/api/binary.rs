//! The costd binary itself: configuration errors, signals, and the query command.

use crate::helpers::*;
use costd::proto as pb;
use std::{io::Write, process::Stdio};
use tokio::io::{AsyncBufReadExt, BufReader};

pub const COSTD: &str = env!("CARGO_BIN_EXE_costd");

/// Runs `costd serve` on a config file in a clean environment (plus `env`), its metrics on a free
/// loopback port unless `env` says otherwise: a test never depends on a fixed port being free.
pub fn serve(
    config: &str,
    env: &[(&str, &str)],
) -> (tempfile::NamedTempFile, tokio::process::Command) {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(config.as_bytes()).expect("written");
    let mut command = tokio::process::Command::new(COSTD);
    command
        .arg("serve")
        .arg("--config")
        .arg(file.path())
        .env_clear()
        .env(costd::config::ENV_METRICS_LISTEN, "127.0.0.1:0")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    (file, command)
}

#[tokio::test]
async fn version_names_the_git_revision_it_was_built_from() {
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git runs");
    let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
    assert_eq!(head.len(), 12, "tests run from a git checkout");
    let output = within(
        tokio::process::Command::new(COSTD)
            .arg("--version")
            .output(),
    )
    .await
    .expect("runs");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("costd {} ({head})", env!("CARGO_PKG_VERSION"))
    );
}

async fn exits_64_naming(config: &str, env: &[(&str, &str)], key: &str) {
    let (_file, mut command) = serve(config, env);
    let output = within(command.output()).await.expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
    assert!(stderr.contains(key), "names `{key}`: {stderr}");
}

const TEAM_ACCOUNT: &str = r#"
[[providers]]
kind = "team_billing"
id = "team-acme"
base_url = "http://127.0.0.1:9"
team_id = "team_acme"
credentials = { token = { env = "COSTD_TEAM_ACME_TOKEN" } }
"#;

#[tokio::test]
async fn a_bad_config_exits_64_with_one_line_naming_the_key() {
    exits_64_naming("[server]\nlistn = \"0.0.0.0:1\"\n", &[], "listn").await;
    exits_64_naming(
        "[upstream]\nmax_attempts = \"three\"\n",
        &[],
        "max_attempts",
    )
    .await;
    exits_64_naming(TEAM_ACCOUNT, &[], "providers[0].credentials.token").await;
    exits_64_naming(
        &TEAM_ACCOUNT.replace("http://127.0.0.1:9", "http://example.com"),
        &[("COSTD_TEAM_ACME_TOKEN", "x")],
        "providers[0].base_url",
    )
    .await;
    exits_64_naming(
        &TEAM_ACCOUNT.replace("team_billing", "aws"),
        &[("COSTD_TEAM_ACME_TOKEN", "x")],
        "providers[0].kind",
    )
    .await;
    exits_64_naming("", &[("COSTD_LISTN", "0.0.0.0:1")], "COSTD_LISTN").await;
}

#[tokio::test]
async fn a_credential_never_appears_in_a_config_error() {
    let secret = "cat_tok_do_not_print_me";
    let config = TEAM_ACCOUNT.replace("team_id = \"team_acme\"", "team_id = \"bad/id\"");
    let (_file, mut command) = serve(&config, &[("COSTD_TEAM_ACME_TOKEN", secret)]);
    let output = within(command.output()).await.expect("runs");
    assert_eq!(output.status.code(), Some(64));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(all.contains("providers[0].team_id"), "{all}");
    assert!(!all.contains(secret));
}

/// Reads the JSON log until the "serving" line; returns the bound address and the rest of stdout.
pub async fn serving_addr(
    child: &mut tokio::process::Child,
) -> (
    std::net::SocketAddr,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) {
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    let addr = within(async {
        while let Some(line) = lines.next_line().await.expect("readable") {
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if entry["message"] == "serving" {
                return entry["addr"]
                    .as_str()
                    .expect("addr field")
                    .parse()
                    .expect("an address");
            }
        }
        panic!("the server ended before serving");
    })
    .await;
    (addr, lines)
}

/// Sends SIGTERM, as Kubernetes does.
pub async fn terminate(child: &tokio::process::Child) {
    let pid = child.id().expect("running").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill runs");
    assert!(killed.success());
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly() {
    let config = "[server]\nlisten = \"127.0.0.1:0\"\n";
    let (_file, mut command) = serve(config, &[]);
    let mut child = command.spawn().expect("starts");
    let (_addr, mut lines) = serving_addr(&mut child).await;

    terminate(&child).await;

    let status = within(child.wait()).await.expect("exits");
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push_str(&line);
    }
    assert!(rest.contains("stopping"), "{rest}");
}

#[tokio::test]
async fn the_query_command_prints_exact_totals_as_table_json_and_csv() {
    let app = spawn_app().await;
    let expected = app.expected_nanos("team_acme", at("2026-01-01"), at("2026-01-04"));
    let expected_text =
        costd::domain::format_decimal(rust_decimal::Decimal::from_i128_with_scale(expected, 9));
    let run = |format: &'static str| {
        let addr = format!("http://{}", app.addr);
        async move {
            let output = tokio::process::Command::new(COSTD)
                .args([
                    "query",
                    "--addr",
                    &addr,
                    "--from",
                    "2026-01-01",
                    "--to",
                    "2026-01-04",
                ])
                .args([
                    "--granularity",
                    "daily",
                    "--group-by",
                    "service",
                    "--account",
                    "team-acme",
                    "--output",
                    format,
                ])
                .output()
                .await
                .expect("runs");
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).expect("utf-8")
        }
    };

    let table = within(run("table")).await;
    let json = within(run("json")).await;
    let csv = within(run("csv")).await;

    assert!(
        table.contains(&format!("total: {expected_text} USD")),
        "{table}"
    );
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(parsed["total_usd"], expected_text);
    assert_eq!(parsed["complete"], true);
    let services = app
        .sandbox
        .dataset()
        .team("team_acme")
        .expect("team")
        .operations
        .len();
    assert_eq!(
        csv.lines().count(),
        1 + 3 * services,
        "a header and one line per day and service:\n{csv}"
    );
    assert!(csv.starts_with("period_start,period_end,service,billed_cost_usd"));
}

#[tokio::test]
async fn the_query_commands_list_flags_take_commas_like_group_by() {
    let app = spawn_app().await;
    let output = within(
        tokio::process::Command::new(COSTD)
            .args(["query", "--addr", &format!("http://{}", app.addr)])
            .args(["--from", "2026-01-01", "--to", "2026-01-04"])
            .args(["--account", "team-acme,team-borealis", "--output", "json"])
            .args(["--provider", "team_billing,elastic"])
            .output(),
    )
    .await
    .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(
        parsed["covered_provider_accounts"],
        serde_json::json!(["team-acme", "team-borealis"])
    );
}

#[tokio::test]
async fn the_query_command_lists_every_violation_and_fails() {
    let app = spawn_app().await;
    let output = within(
        tokio::process::Command::new(COSTD)
            .args([
                "query",
                "--addr",
                &format!("http://{}", app.addr),
                "--from",
                "2026-02-01",
                "--to",
                "2026-01-01",
            ])
            .args(["--account", "nobody"])
            .output(),
    )
    .await
    .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("query.end_time") && stderr.contains("query.filter.provider_accounts[0]"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_jobs_command_starts_watches_and_lists_jobs() {
    let app = spawn_app().await;
    let addr = format!("http://{}", app.addr);
    let run = |args: Vec<String>| async move {
        let output = tokio::process::Command::new(COSTD)
            .args(&args)
            .output()
            .await
            .expect("runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let args = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();

    let (ok, watched, stderr) = within(run(args(&[
        "jobs",
        "start",
        "--addr",
        &addr,
        "--from",
        "2026-01-01",
        "--to",
        "2026-02-01",
        "--account",
        "team-acme",
        "--watch",
        "--output",
        "json",
    ])))
    .await;
    assert!(ok, "{stderr}");
    let events: Vec<serde_json::Value> = watched
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(
        events.first().map(|e| e["event"].clone()),
        Some("snapshot".into())
    );
    let last = events.last().expect("events");
    assert_eq!(
        (last["event"].as_str(), last["state"].as_str()),
        (Some("final"), Some("succeeded"))
    );
    let expected = app.expected_nanos("team_acme", at("2026-01-01"), at("2026-02-01"));
    let expected_text =
        costd::domain::format_decimal(rust_decimal::Decimal::from_i128_with_scale(expected, 9));
    assert_eq!(last["report"]["total_usd"], expected_text);
    let name = last["name"].as_str().expect("a name").to_string();

    let (ok, listed, _) = within(run(args(&[
        "jobs",
        "list",
        "--addr",
        &addr,
        "--state",
        "succeeded",
        "--output",
        "json",
    ])))
    .await;
    assert!(ok && listed.contains(&name), "{listed}");
    let (ok, shown, _) = within(run(args(&["jobs", "get", &name, "--addr", &addr]))).await;
    assert!(
        ok && shown.contains("succeeded") && shown.contains(&format!("total: {expected_text} USD")),
        "{shown}"
    );
    let (ok, _, stderr) = within(run(args(&[
        "jobs", "list", "--addr", &addr, "--state", "sleeping",
    ])))
    .await;
    assert!(!ok && stderr.contains("not a job state"), "{stderr}");
}

#[tokio::test]
async fn the_export_command_writes_the_file_or_stdout_and_draws_no_bar_off_a_terminal() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("january.csv");
    let addr = format!("http://{}", app.addr);
    let base = [
        "export",
        "--addr",
        &addr,
        "--from",
        "2026-01-01",
        "--to",
        "2026-02-01",
        "--account",
        "team-acme",
    ];
    let to_file = within(
        tokio::process::Command::new(COSTD)
            .args(base)
            .args(["--format", "focus-csv", "--output", "json", "--out"])
            .arg(&file)
            .output(),
    )
    .await
    .expect("runs");
    let stderr = String::from_utf8_lossy(&to_file.stderr);
    assert!(to_file.status.success(), "{stderr}");
    assert!(
        !stderr.contains("rows written"),
        "no progress bar off a terminal: {stderr}"
    );
    assert!(to_file.stdout.is_empty(), "the file went to --out");
    let csv = std::fs::read_to_string(&file).expect("the file");
    let rows = csv.lines().count() - 1;
    let january = only_accounts(
        query("2026-01-01", "2026-02-01", &[], pb::Granularity::None),
        &["team-acme"],
    );
    let listed = listed_records(&app, &january).await;
    assert_eq!(rows, listed);
    assert!(csv.starts_with("BilledCost,"));
    let summary: serde_json::Value = serde_json::from_str(&stderr).expect("the summary as json");
    assert_eq!(
        summary["provider_results"][0]["provider_account"], "team-acme",
        "{summary}"
    );
    assert_eq!(
        summary["provider_results"][0]["record_count"], rows as i64,
        "{summary}"
    );

    let to_stdout = within(
        tokio::process::Command::new(COSTD)
            .args(base)
            .args(["--format", "focus-parquet"])
            .output(),
    )
    .await
    .expect("runs");
    assert!(
        to_stdout.status.success(),
        "{}",
        String::from_utf8_lossy(&to_stdout.stderr)
    );
    assert!(to_stdout.stdout.starts_with(b"PAR1") && to_stdout.stdout.ends_with(b"PAR1"));
}
