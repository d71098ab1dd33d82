//! Tests of the Elastic emulator's failures: auth, bad parameters, every documented error shape, and the sandbox's faults on Elastic scopes.

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;

use crate::sandbox::elastic::tests::kit::{
    ACME, BOREALIS, Reply, SPRING_2026, e4, expected, get_as, list, org, range, send, sum, v1, v2,
};
use crate::sandbox::testkit::{client, client_with_timeout, start, within};
use crate::sandbox::{Fault, SandboxHandle, Scope};

const NOWHERE: &str = "1000000001";

fn status(code: u16, retry_after: Option<u64>) -> Fault {
    let code = StatusCode::from_u16(code).expect("valid status");
    Fault::Status { code, retry_after }
}

/// Checks a v1 error: status, `x-cloud-error-codes`, and the `{errors:[{code,message,fields?}]}` body.
fn assert_v1_error(reply: &Reply, status: u16, code: &str) -> Value {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(reply.header("x-cloud-error-codes"), Some(code));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    let errors = list(&body, "errors");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["code"], code);
    assert!(errors[0]["message"].as_str().is_some_and(|m| !m.is_empty()));
    errors[0].clone()
}

fn assert_v2_text(reply: &Reply, status: u16, text: &str) {
    assert_eq!((reply.status, reply.text.as_str()), (status, text));
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
}

fn assert_no_key(sb: &SandboxHandle, text: &str) {
    for org in sb.dataset().elastic().organizations() {
        assert!(!text.contains(&org.api_key), "a key leaked: {text}");
    }
}

#[tokio::test]
async fn v1_auth_failures_use_the_documented_codes_and_header() {
    let sb = start();
    let (acme, borealis) = (&org(&sb, ACME).api_key, &org(&sb, BOREALIS).api_key);
    let query = range(SPRING_2026);
    let wrong = format!("ApiKey {acme}x");
    let bearer = format!("Bearer {acme}");
    for auth in [
        None,
        Some(wrong.as_str()),
        Some(bearer.as_str()),
        Some("ApiKey "),
    ] {
        let reply = send(&sb, &v1(ACME, &query), auth).await;
        assert_v1_error(&reply, 401, "root.unauthorized");
        assert_no_key(&sb, &reply.text);
    }
    let other = format!("apikey {borealis}");
    let reply = send(&sb, &v1(ACME, &query), Some(&other)).await;
    assert_v1_error(&reply, 403, "organization.invalid_access");
    let reply = send(&sb, &v1(NOWHERE, &query), Some(&other)).await;
    assert_v1_error(&reply, 404, "organization.not_found");
    assert_no_key(&sb, &reply.text);
}

#[tokio::test]
async fn v1_bad_dates_are_an_invalid_date_range_naming_the_fields() {
    let sb = start();
    let cases: [(&str, &[&str]); 6] = [
        ("from=yesterday&to=2025-02-01T00:00:00Z", &["from"]),
        ("from=2025-01-01T00:00:00Z&to=2025-13-01T00:00:00Z", &["to"]),
        (
            "from=2025-02-01T00:00:00Z&to=2025-02-01T00:00:00Z",
            &["from", "to"],
        ),
        (
            "from=2025-03-01T00:00:00Z&to=2025-02-01T00:00:00Z",
            &["from", "to"],
        ),
        ("from=2025-01-01&to=2025-02-01T00:00:00Z", &["from"]),
        // An unencoded '+' decodes to a space, so the offset no longer parses.
        (
            "from=2025-01-01T00:00:00+00:00&to=2025-02-01T00:00:00Z",
            &["from"],
        ),
    ];
    for (query, fields) in cases {
        let reply = get_as(&sb, ACME, &v1(ACME, query)).await;
        let error = assert_v1_error(&reply, 400, "costs.invalid_date_range");
        assert_eq!(error["fields"], Value::from(fields.to_vec()), "{query}");
    }
    let encoded = "from=2025-01-01T00:00:00%2B00:00&to=2025-02-01T01:00:00%2B01:00";
    assert_eq!(get_as(&sb, ACME, &v1(ACME, encoded)).await.status, 200);
}

#[tokio::test]
async fn v2_auth_failures_are_plain_text() {
    let sb = start();
    let query = range(SPRING_2026);
    let instance = &org(&sb, ACME).instances[0].id;
    let other = format!("ApiKey {}", org(&sb, BOREALIS).api_key);
    for tail in [
        "costs/instances".to_owned(),
        format!("costs/instances/{instance}/items"),
        "costs/items".to_owned(),
        "charts".to_owned(),
        format!("instances/{instance}/charts"),
    ] {
        assert_v2_text(
            &send(&sb, &v2(ACME, &tail, &query), None).await,
            401,
            "401: Unauthorized",
        );
        let reply = send(&sb, &v2(ACME, &tail, &query), Some(&other)).await;
        let denied = "403: User does not have 'billing-costs:get:2417306858' permissions";
        assert_v2_text(&reply, 403, denied);
        let reply = send(&sb, &v2(NOWHERE, &tail, &query), Some(&other)).await;
        assert_v2_text(&reply, 404, "404: Organization not found.");
        assert_no_key(&sb, &reply.text);
    }
}

#[tokio::test]
async fn v2_bad_parameters_are_400_and_unknown_instances_404() {
    let sb = start();
    let query = range(SPRING_2026);
    let instance = &org(&sb, ACME).instances[0].id;
    let invalid_range = "400: The specified date range is invalid.";
    for (tail, query, text) in [
        (
            "costs/instances",
            "from=2026-01-01T00:00:00Z",
            invalid_range,
        ),
        (
            "costs/items",
            "from=soon&to=2026-01-01T00:00:00Z",
            invalid_range,
        ),
        (
            "charts",
            "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
            invalid_range,
        ),
        (
            "charts",
            &format!("{query}&bucketing_strategy=weekly"),
            "400: Invalid value for bucketing_strategy.",
        ),
        (
            "costs/items",
            &format!("{query}&serverless_group_by=sku"),
            "400: Invalid value for serverless_group_by.",
        ),
        (
            "costs/instances",
            &format!("{query}&include_names=yes"),
            "400: Invalid value for include_names.",
        ),
        (
            &format!("instances/{instance}/charts"),
            &format!("{query}&instance_type=clusters"),
            "400: Invalid value for instance_type.",
        ),
    ] {
        assert_v2_text(&get_as(&sb, ACME, &v2(ACME, tail, query)).await, 400, text);
    }
    let foreign = &org(&sb, BOREALIS).instances[0].id;
    for id in ["0123456789abcdef0123456789abcdef", foreign] {
        for tail in [
            format!("costs/instances/{id}/items"),
            format!("instances/{id}/charts"),
        ] {
            let reply = get_as(&sb, ACME, &v2(ACME, &tail, &query)).await;
            assert_v2_text(&reply, 404, "404: Instance not found.");
        }
    }
}

#[tokio::test]
async fn status_faults_answer_in_the_shape_of_the_api_called() {
    let sb = start();
    let acme = Scope::elastic(ACME);
    let (v1_path, v2_path) = (
        v1(ACME, &range(SPRING_2026)),
        v2(ACME, "charts", &range(SPRING_2026)),
    );
    let v1_cases = [
        (400, None, "costs.invalid_date_range"),
        (401, None, "root.unauthorized"),
        (403, None, "organization.invalid_access"),
        (404, None, "organization.not_found"),
        (429, Some(7), "rate_limited"),
        (500, None, "billing_service.failed_request"),
        (503, Some(2), "billing_service.failed_request"),
    ];
    for (code, retry_after, error) in v1_cases {
        sb.push_fault(&acme, status(code, retry_after));
        let reply = get_as(&sb, ACME, &v1_path).await;
        assert_v1_error(&reply, code, error);
        assert_eq!(
            reply.header("retry-after"),
            retry_after.map(|s| s.to_string()).as_deref()
        );
    }
    let v2_cases = [
        (401, "401: Unauthorized"),
        (
            403,
            "403: User does not have 'billing-costs:get:2417306858' permissions",
        ),
        (404, "404: Organization not found."),
        (424, "424: Failed dependency."),
        (500, "500: Internal server error."),
    ];
    for (code, text) in v2_cases {
        sb.push_fault(&acme, status(code, None));
        assert_v2_text(&get_as(&sb, ACME, &v2_path).await, code, text);
    }
    sb.push_fault(&acme, status(429, Some(3)));
    let reply = get_as(&sb, ACME, &v2_path).await;
    assert_eq!(
        (reply.status, reply.header("retry-after")),
        (429, Some("3"))
    );
    assert_eq!(list(&reply.json(), "errors")[0]["code"], "rate_limited");
    assert_eq!(sb.pending_faults(&acme), 0);
    assert_eq!(get_as(&sb, ACME, &v2_path).await.status, 200);
}

#[tokio::test]
async fn inconsistent_totals_break_exactly_one_stated_total() {
    let sb = start();
    let acme = Scope::elastic(ACME);
    let query = range(SPRING_2026);
    for _ in 0..4 {
        sb.push_fault(&acme, Fault::InconsistentTotals);
    }
    let body = get_as(&sb, ACME, &v1(ACME, &query)).await.json();
    let deployments = list(&body, "deployments");
    let off: Vec<i64> = deployments
        .iter()
        .map(|d| e4(&d["costs"]["total"]) - sum(list(&d["costs"], "dimensions"), "cost"))
        .collect();
    assert_eq!(
        (
            off.iter().filter(|&&o| o == 1).count(),
            off.iter().sum::<i64>()
        ),
        (1, 1)
    );
    let stated: i64 = deployments.iter().map(|d| e4(&d["costs"]["total"])).sum();
    assert_eq!(e4(&body["total_cost"]), stated);

    for (tail, parts) in [
        ("costs/instances", "instances"),
        ("costs/items", "products"),
    ] {
        let body = get_as(&sb, ACME, &v2(ACME, tail, &query)).await.json();
        let parts = list(&body, parts);
        let off: Vec<i64> = parts
            .iter()
            .map(|p| e4(&p["total_ecu"]) - sum(list(p, "product_line_items"), "total_ecu"))
            .collect();
        assert_eq!(
            (
                off.iter().filter(|&&o| o == 1).count(),
                off.iter().sum::<i64>()
            ),
            (1, 1)
        );
        assert_eq!(e4(&body["total_ecu"]), sum(parts, "total_ecu"));
    }
    let body = get_as(&sb, ACME, &v2(ACME, "charts", &query)).await.json();
    let charted: i64 = list(&body, "data")
        .iter()
        .map(|p| sum(list(p, "values"), "value"))
        .sum();
    let data = sb.dataset().elastic();
    assert_eq!(
        charted,
        expected(data, org(&sb, ACME), SPRING_2026).total + 1
    );
}

#[tokio::test]
async fn transport_faults_work_on_elastic_scopes_and_stay_in_them() {
    let sb = start();
    let acme = Scope::elastic(ACME);
    let path = v2(ACME, "costs/instances", &range(SPRING_2026));
    let delay = Duration::from_millis(200);
    sb.push_fault(&acme, Fault::Latency(delay));
    sb.push_fault(&acme, Fault::MalformedBody);
    sb.push_fault(&acme, Fault::TruncatedBody);
    let reply = get_as(&sb, ACME, &path).await;
    assert_eq!(reply.status, 200);
    assert!(Instant::now() - sb.requests()[0].received_at >= delay);
    for eof in [false, true] {
        let reply = get_as(&sb, ACME, &path).await;
        assert_eq!(reply.status, 200);
        let err = serde_json::from_str::<Value>(&reply.text).expect_err("not JSON");
        assert_eq!(err.is_eof(), eof, "{err}");
        assert!(!eof || reply.text.starts_with(r#"{"total_ecu":"#));
    }

    sb.push_fault(&acme, Fault::Hang);
    sb.push_fault(&acme, Fault::DropConnection);
    let auth = format!("ApiKey {}", org(&sb, ACME).api_key);
    let url = format!("{}{path}", sb.base_url());
    let impatient = client_with_timeout(Duration::from_millis(300));
    let err = within(impatient.get(&url).header("authorization", &auth).send())
        .await
        .expect_err("hangs");
    assert!(err.is_timeout(), "{err}");
    let err = within(client().get(&url).header("authorization", &auth).send())
        .await
        .expect_err("dropped");
    assert!(!err.is_timeout() && err.status().is_none(), "{err}");
    assert_eq!(sb.request_count(&acme), 5);

    sb.set_persistent_fault(&acme, status(502, None));
    let borealis = v1(BOREALIS, &range(SPRING_2026));
    assert_eq!(
        get_as(&sb, BOREALIS, &borealis).await.status,
        200,
        "other orgs are untouched"
    );
    assert_eq!(
        get_as(&sb, ACME, &v1(ACME, &range(SPRING_2026)))
            .await
            .status,
        502
    );
    sb.clear_faults(&acme);
    assert_eq!(get_as(&sb, ACME, &path).await.status, 200);
}

#[tokio::test]
async fn requests_are_recorded_under_the_org_scope_without_credentials() {
    let sb = start();
    let query = range(SPRING_2026);
    get_as(&sb, ACME, &v1(ACME, &query)).await;
    get_as(&sb, ACME, &v2(ACME, "costs/items", &query)).await;
    send(&sb, &v2(BOREALIS, "charts", &query), None).await;
    get_as(&sb, ACME, &v2(NOWHERE, "charts", &query)).await;
    assert_eq!(sb.request_count(&Scope::elastic(ACME)), 2);
    assert_eq!(sb.request_count(&Scope::elastic(BOREALIS)), 1);
    assert_eq!(sb.request_count(&Scope::elastic(NOWHERE)), 1);
    let records = sb.requests();
    assert_eq!(
        records[0].path,
        format!("/api/v1/billing/costs/{ACME}/deployments")
    );
    assert_eq!(
        records[1].path,
        format!("/api/v2/billing/organizations/{ACME}/costs/items")
    );
    assert_eq!(records[1].query.as_deref(), Some(query.as_str()));
    assert!(records[0].has_authorization && !records[2].has_authorization);
    assert_no_key(&sb, &format!("{records:?}"));
}

#[tokio::test]
async fn other_methods_are_405_in_each_apis_shape() {
    let sb = start();
    let auth = format!("ApiKey {}", org(&sb, ACME).api_key);
    for (path, json) in [(v1(ACME, ""), true), (v2(ACME, "costs/items", ""), false)] {
        let request = client()
            .post(format!("{}{path}", sb.base_url()))
            .header("authorization", &auth);
        let response = within(request.send()).await.expect("request succeeds");
        assert_eq!(response.status(), 405);
        assert_eq!(
            response.headers().get("allow").map(|v| v.as_bytes()),
            Some(&b"GET"[..])
        );
        let text = within(response.text()).await.expect("body reads");
        assert_eq!(text.starts_with("{\"errors\""), json, "{text}");
    }
    assert_eq!(sb.request_count(&Scope::elastic(ACME)), 2);
}
