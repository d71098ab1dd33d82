//! Prometheus metrics after known traffic through the real server: the scrape shows exactly the RPCs,
//! upstream requests, retries, cache lookups, jobs and Atlas polls that happened, as the sandbox
//! counted them.

use crate::helpers::*;
use costd::{clock::ManualClock, domain::ProviderKind, proto as pb, sandbox::Fault};
use http::StatusCode;
use pb::query_job_service_client::QueryJobServiceClient;
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::Arc,
    time::Duration,
};

const TEAM_ENDPOINT: &str = "/teams/{teamId}/billing/cost";
const GET_COSTS: &str = "costd.v1.CostService/GetCosts";

/// The scrape, as `name{labels}` → value, after checking the content type.
pub(crate) async fn scrape(app: &TestApp) -> BTreeMap<String, f64> {
    scrape_at(app.metrics_addr.expect("metrics are on by default")).await
}

/// The scrape of the metrics endpoint at `addr`, as [`scrape`].
pub(crate) async fn scrape_at(addr: std::net::SocketAddr) -> BTreeMap<String, f64> {
    scrape_text(addr)
        .await
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            (series.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

/// The exposition at `addr`, after checking the status, the content type and that it is whole.
async fn scrape_text(addr: std::net::SocketAddr) -> String {
    let response = within(reqwest::get(format!("http://{addr}/metrics")))
        .await
        .expect("scraped");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[http::header::CONTENT_TYPE],
        costd::metrics::CONTENT_TYPE
    );
    let text = response.text().await.expect("text");
    assert!(text.ends_with("# EOF\n"), "a complete exposition");
    text
}

fn value(scraped: &BTreeMap<String, f64>, series: &str) -> f64 {
    scraped.get(series).copied().unwrap_or_else(|| {
        let known: Vec<&String> = scraped.keys().collect();
        panic!("no series {series}; scraped: {known:#?}")
    })
}

#[tokio::test]
async fn a_scrape_counts_rpcs_upstream_requests_retries_and_cache_lookups_exactly() {
    let app = spawn_app().await;
    app.sandbox.push_fault(
        &team_scope("team_acme"),
        Fault::Status {
            code: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
        },
    );
    let acme = |from, to, group_by: &[pb::GroupBy]| {
        only_accounts(
            query(from, to, group_by, pb::Granularity::None),
            &["team-acme"],
        )
    };

    // Three months: three misses, each one upstream call; the first is refused once and retried.
    app.get_costs(acme("2026-01-01", "2026-04-01", &[]))
        .await
        .expect("answer");
    // The same months grouped otherwise, then one of them alone: four hits, no upstream call.
    app.get_costs(acme("2026-01-01", "2026-04-01", &[pb::GroupBy::Service]))
        .await
        .expect("answer");
    app.get_costs(acme("2026-02-01", "2026-03-01", &[]))
        .await
        .expect("answer");
    let refused = app
        .get_costs(acme("2026-03-01", "2026-02-01", &[]))
        .await
        .expect_err("an end before its start");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let scraped = scrape(&app).await;
    let team = |name: &str, outcome: Option<&str>| match outcome {
        Some(outcome) => format!(
            "{name}{{provider=\"team_billing\",endpoint=\"{TEAM_ENDPOINT}\",outcome=\"{outcome}\"}}"
        ),
        None => format!("{name}{{provider=\"team_billing\",endpoint=\"{TEAM_ENDPOINT}\"}}"),
    };
    assert_eq!(app.sandbox.request_count(&team_scope("team_acme")), 4);
    assert_eq!(
        value(
            &scraped,
            &team("costd_upstream_requests_total", Some("200"))
        ),
        3.0
    );
    assert_eq!(
        value(
            &scraped,
            &team("costd_upstream_requests_total", Some("503"))
        ),
        1.0
    );
    assert_eq!(
        value(&scraped, &team("costd_upstream_retries_total", None)),
        1.0
    );
    assert_eq!(
        value(
            &scraped,
            &team("costd_upstream_request_duration_seconds_count", None)
        ),
        4.0
    );
    let cache = |name: &str| format!("costd_cache_{name}_total{{provider=\"team_billing\"}}");
    assert_eq!(value(&scraped, &cache("misses")), 3.0);
    assert_eq!(value(&scraped, &cache("hits")), 4.0);
    assert!(!scraped.contains_key(&cache("coalesced_waits")));
    assert!(!scraped.contains_key(&cache("stale_serves")));
    assert_eq!(value(&scraped, "costd_cache_entries"), 3.0);
    assert!(value(&scraped, "costd_cache_bytes") > 0.0);
    let rpc =
        |code: &str| format!("costd_rpc_requests_total{{method=\"{GET_COSTS}\",code=\"{code}\"}}");
    assert_eq!(value(&scraped, &rpc("OK")), 3.0);
    assert_eq!(value(&scraped, &rpc("INVALID_ARGUMENT")), 1.0);
    assert_eq!(
        value(
            &scraped,
            &format!("costd_rpc_duration_seconds_count{{method=\"{GET_COSTS}\"}}")
        ),
        4.0
    );
    for state in ["queued", "running", "succeeded", "failed", "cancelled"] {
        assert_eq!(
            value(&scraped, &format!("costd_jobs{{state=\"{state}\"}}")),
            0.0
        );
    }
}

#[tokio::test]
async fn a_scrape_counts_coalesced_waits_and_stale_serves() {
    let clock = ManualClock::new(at("2026-11-20T00:00:00Z"));
    let app = spawn_app_on(Arc::new(clock.clone()), |settings| {
        settings.upstream.max_attempts = 1;
        settings.accounts.retain(|a| a.id.as_str() == "team-acme");
    })
    .await;
    let acme = team_scope("team_acme");
    let november = query("2026-11-01", "2026-12-01", &[], pb::Granularity::None);
    // The first caller's fetch is held upstream long enough for the second to join it.
    app.sandbox
        .push_fault(&acme, Fault::Latency(Duration::from_secs(1)));
    let first = tokio::spawn({
        let mut costs = app.costs.clone();
        let asked = november.clone();
        async move {
            costs
                .get_costs(pb::GetCostsRequest { query: Some(asked) })
                .await
        }
    });
    within(app.sandbox.wait_for_requests(&acme, 1)).await;
    app.get_costs(november.clone()).await.expect("answer");
    within(first).await.expect("joins").expect("answer");
    assert_eq!(app.sandbox.request_count(&acme), 1);

    // Past the open month's freshness, the refresh fails: the cached chunk is served stale.
    clock.advance(chrono::Duration::minutes(10));
    app.sandbox.set_persistent_fault(
        &acme,
        Fault::Status {
            code: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
        },
    );
    let stale = app.get_costs(november).await.expect("answer");
    assert_eq!(
        result_of(&stale, "team-acme").state,
        pb::ResultState::Stale as i32
    );

    let scraped = scrape(&app).await;
    let cache = |name: &str| format!("costd_cache_{name}_total{{provider=\"team_billing\"}}");
    assert_eq!(
        value(&scraped, &cache("misses")),
        3.0,
        "two for one fetch, one refresh"
    );
    assert_eq!(value(&scraped, &cache("coalesced_waits")), 1.0);
    assert_eq!(value(&scraped, &cache("stale_serves")), 1.0);
    assert!(!scraped.contains_key(&cache("hits")));
    assert_eq!(
        value(
            &scraped,
            &format!(
                "costd_upstream_requests_total{{provider=\"team_billing\",endpoint=\"{TEAM_ENDPOINT}\",outcome=\"503\"}}"
            )
        ),
        1.0
    );
}

#[tokio::test]
async fn a_scrape_counts_jobs_by_state_and_atlas_polls_by_answer() {
    let app = spawn_app_full(
        Arc::new(costd::clock::SystemClock),
        &[ProviderKind::Atlas],
        |settings, _| {
            settings
                .accounts
                .retain(|a| a.id.as_str() == "atlas-kestrel")
        },
    )
    .await;
    let mut jobs = QueryJobServiceClient::new(app.channel.clone());
    let job = jobs
        .start_query(pb::StartQueryRequest {
            query: Some(query(
                "2025-01-01",
                "2025-03-01",
                &[],
                pb::Granularity::None,
            )),
        })
        .await
        .expect("started")
        .into_inner()
        .job
        .expect("a job");
    let mut watch = jobs
        .watch_job(pb::WatchJobRequest {
            name: job.name.clone(),
        })
        .await
        .expect("watching")
        .into_inner();
    while within(watch.message()).await.expect("a message").is_some() {}

    let scraped = scrape(&app).await;
    let org = app.sandbox.atlas().dataset().orgs()[0].id;
    let counters = app.sandbox.atlas().counters(org);
    let polls = |outcome: &str| {
        scraped
            .get(&format!("costd_atlas_polls_total{{outcome=\"{outcome}\"}}"))
            .copied()
            .unwrap_or(0.0)
    };
    // Two months, one query each: two polls answered with rows, the rest "processing".
    assert_eq!(polls("ready"), 2.0);
    assert_eq!(polls("ready"), counters.result_answers as f64);
    assert_eq!(polls("processing"), counters.processing_answers as f64);
    assert_eq!(polls("processing") + polls("ready"), counters.polls as f64);
    assert_eq!(value(&scraped, "costd_jobs{state=\"succeeded\"}"), 1.0);
    assert_eq!(value(&scraped, "costd_jobs{state=\"running\"}"), 0.0);
    for (method, count) in [("StartQuery", 1.0), ("WatchJob", 1.0)] {
        assert_eq!(
            value(
                &scraped,
                &format!(
                    "costd_rpc_requests_total{{method=\"costd.v1.QueryJobService/{method}\",code=\"OK\"}}"
                )
            ),
            count
        );
    }
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let app = spawn_app_with(|settings| settings.metrics.enabled = false).await;
    assert_eq!(app.metrics_addr, None);
}

#[tokio::test]
async fn calls_to_paths_that_are_not_served_share_one_method_label() {
    let app = spawn_app().await;
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    for path in ["/costd.v1.CostService/Nope", "/made.Up/Path", "/x"] {
        grpc.ready().await.expect("ready");
        let answer: Result<tonic::Response<()>, tonic::Status> = grpc
            .unary(
                tonic::Request::new(()),
                http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::default(),
            )
            .await;
        assert_eq!(
            answer.expect_err(path).code(),
            tonic::Code::Unimplemented,
            "{path}"
        );
    }
    app.costs
        .clone()
        .list_providers(pb::ListProvidersRequest::default())
        .await
        .expect("listed");

    let scraped = scrape(&app).await;
    assert_eq!(
        value(
            &scraped,
            "costd_rpc_requests_total{method=\"unknown\",code=\"UNIMPLEMENTED\"}"
        ),
        3.0
    );
    assert_eq!(
        value(
            &scraped,
            "costd_rpc_requests_total{method=\"costd.v1.CostService/ListProviders\",code=\"OK\"}"
        ),
        1.0
    );
    let methods: std::collections::BTreeSet<&str> = scraped
        .keys()
        .filter_map(|series| series.strip_prefix("costd_rpc_requests_total{method=\""))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert_eq!(
        methods,
        ["costd.v1.CostService/ListProviders", "unknown"].into(),
        "no series per made-up path"
    );
}

/// The metric names a scrape declares (`# TYPE`), counters with their `_total` suffix, as a reader
/// queries them. A family with no sample yet is not declared.
async fn declared_metrics(app: &TestApp) -> BTreeSet<String> {
    let text = scrape_text(app.metrics_addr.expect("metrics are on by default")).await;
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|declared| match declared.split_once(' ') {
            Some((name, "counter")) => format!("{name}_total"),
            Some((name, _)) => name.to_string(),
            None => declared.to_string(),
        })
        .collect()
}

/// The names `src/metrics/mod.rs` registers, as a scrape spells them: `costd_`, the name, its
/// unit's suffix, `_total` for a counter (the kind is read off the field the call registers).
fn registered_metrics() -> BTreeSet<String> {
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics/mod.rs"))
            .expect("the metrics module");
    let field_kinds: BTreeMap<&str, bool> = source
        .lines()
        .filter_map(|line| line.trim().strip_suffix(','))
        .filter_map(|field| field.split_once(": "))
        // The struct's fields, not the constructor's `field: Kind::default()`.
        .filter(|(_, kind)| !kind.contains("::"))
        .map(|(field, kind)| (field, kind.ends_with("Counter>") || kind == "Counter"))
        .collect();
    source
        .split("registry.register")
        .skip(1)
        .filter_map(|call| {
            let call = &call[..call.find(");")?];
            let name = call.split('"').nth(1)?;
            let unit = match () {
                _ if call.contains("Unit::Seconds") => "_seconds",
                _ if call.contains("Unit::Bytes") => "_bytes",
                _ => "",
            };
            // The last argument names the field: `metrics.<field>.clone()`.
            let field = call
                .rsplit(',')
                .find(|argument| !argument.trim().is_empty())?
                .trim()
                .trim_start_matches("metrics.")
                .trim_end_matches(".clone()");
            let counter = field_kinds.get(field).copied().unwrap_or(false);
            Some(format!(
                "costd_{name}{unit}{}",
                if counter { "_total" } else { "" }
            ))
        })
        .collect()
}

#[tokio::test]
async fn the_readme_lists_every_metric_costd_registers_and_no_other() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README");
    let listed: BTreeSet<String> = readme
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|row| row.split_once('`'))
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("costd_"))
        .map(str::to_string)
        .collect();
    let registered = registered_metrics();
    assert!(
        registered.len() > 25,
        "read the registrations: {registered:?}"
    );
    let unlisted: Vec<_> = registered.difference(&listed).collect();
    let gone: Vec<_> = listed.difference(&registered).collect();
    assert!(
        unlisted.is_empty() && gone.is_empty(),
        "not in the README's table: {unlisted:?}; in it but never registered: {gone:?}"
    );

    // And the names as registered are the names a scrape declares, the kind's suffix included.
    let app = spawn_app().await;
    within(app.get_costs(query(
        "2026-09-01",
        "2026-10-01",
        &[pb::GroupBy::Service],
        pb::Granularity::Monthly,
    )))
    .await
    .expect("answer");
    let declared = declared_metrics(&app).await;
    assert!(declared.len() > 15, "a scrape after traffic: {declared:?}");
    let unknown: Vec<_> = declared.difference(&registered).collect();
    assert!(
        unknown.is_empty(),
        "scraped, not as registered: {unknown:?}"
    );
}
