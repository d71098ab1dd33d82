//! Tests of the Atlas emulator's refusals: validation, unknown tokens, result retention, the token bucket, injected faults.

use std::time::Duration;

use http::StatusCode;
use reqwest::Method;
use serde_json::{Value, json};

use crate::sandbox::atlas::tests::kit::{
    DigestClient, Expected, access_token, assert_error, bearer, body, create, expected, header,
    json_of, org_id, poll_url, usage_url,
};
use crate::sandbox::testkit::{client, start, within};
use crate::sandbox::{Fault, RateLimit, Scope};

#[tokio::test]
async fn validation_lists_every_bad_field() {
    let sb = start();
    let org = org_id(&sb, 0);
    let token = access_token(&sb, org).await;
    let cluster = sb.atlas().dataset().orgs()[0].projects[0].clusters[0]
        .id
        .clone();
    let everything_wrong = json!({
        "startDate": "2025-01-15",
        "endDate": "2025/02/01",
        "organizations": ["ABCDEF0123456789abcdef01"],
        "projects": "all",
        "clusters": [cluster, "short"],
        "services": ["Atlas", "Mainframes"],
        "groupBy": "regions",
        "includePartialMatches": "yes",
        "currency": "EUR",
    });
    let cases = [
        (
            everything_wrong,
            vec![
                "startDate",
                "endDate",
                "organizations[0]",
                "projects",
                "clusters[1]",
                "services[1]",
                "groupBy",
                "includePartialMatches",
                "currency",
            ],
        ),
        (json!({}), vec!["startDate", "endDate"]),
        (body("2025-03-01", "2025-03-01"), vec!["endDate"]),
        (body("2025-04-01", "2025-03-01"), vec!["endDate"]),
        (
            json!({ "startDate": "2025-1-01", "endDate": 20250201 }),
            vec!["startDate", "endDate"],
        ),
        (
            json!({ "startDate": "2025-01-01", "endDate": "2025-02-01", "groupBy": "projects" }),
            vec!["groupBy"],
        ),
        (json!(["startDate"]), vec!["body"]),
    ];
    for (q, fields) in cases {
        let response = bearer(&token, Method::POST, &usage_url(&sb, org), Some(&q))
            .await
            .expect("sent");
        assert_eq!(response.status(), 400, "{q}");
        assert_eq!(header(&response, "content-type"), Some("application/json"));
        assert_error(&json_of(response).await, 400, "VALIDATION_ERROR", &fields);
    }

    let not_json = client()
        .post(usage_url(&sb, org))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("startDate=2025-01-01");
    let response = within(not_json.send()).await.expect("sent");
    assert_eq!(response.status(), 415);
    assert_error(&json_of(response).await, 415, "UNSUPPORTED_MEDIA_TYPE", &[]);

    // JSON only: a CSV Accept (documented upstream) is refused here.
    let csv = client()
        .post(usage_url(&sb, org))
        .bearer_auth(&token)
        .header("accept", "application/vnd.atlas.2023-01-01+csv")
        .header("content-type", "application/json")
        .body(body("2025-01-01", "2025-02-01").to_string());
    let response = within(csv.send()).await.expect("sent");
    assert_eq!(response.status(), 406);
    assert_error(&json_of(response).await, 406, "NOT_ACCEPTABLE", &[]);
    let counters = sb.atlas().counters(org);
    assert_eq!(
        (counters.queries_created, counters.unversioned_accepts),
        (0, 2)
    );
}

#[tokio::test]
async fn short_tokens_are_400_and_unknown_or_foreign_ones_404() {
    let sb = start();
    let (kestrel, lumen) = (org_id(&sb, 0), org_id(&sb, 1));
    let token = access_token(&sb, kestrel).await;
    let short = bearer(
        &token,
        Method::GET,
        &poll_url(&sb, kestrel, "abc", false),
        None,
    )
    .await
    .expect("sent");
    assert_eq!(short.status(), 400);
    assert_error(&json_of(short).await, 400, "VALIDATION_ERROR", &["token"]);

    let unknown = "0".repeat(64);
    let response = bearer(
        &token,
        Method::GET,
        &poll_url(&sb, kestrel, &unknown, false),
        None,
    )
    .await
    .expect("sent");
    assert_eq!(response.status(), 404);
    assert_error(&json_of(response).await, 404, "RESOURCE_NOT_FOUND", &[]);
    let enveloped = bearer(
        &token,
        Method::GET,
        &poll_url(&sb, kestrel, &unknown, true),
        None,
    )
    .await
    .expect("sent");
    assert_eq!(enveloped.status(), 200);
    let wrapped = json_of(enveloped).await;
    assert_eq!(wrapped["status"], 404);
    assert_error(&wrapped["content"], 404, "RESOURCE_NOT_FOUND", &[]);

    // A live token of another org is unknown here.
    let kestrel_query = create(&sb, &token, kestrel, &body("2025-01-01", "2025-02-01")).await;
    let mut lumen_key = DigestClient::of(&sb, lumen);
    let foreign = poll_url(&sb, lumen, &kestrel_query, false);
    let response = lumen_key
        .send(Method::GET, &foreign, None)
        .await
        .expect("sent");
    assert_eq!(response.status(), 404);

    let delete = bearer(
        &token,
        Method::DELETE,
        &poll_url(&sb, kestrel, &kestrel_query, false),
        None,
    )
    .await
    .expect("sent");
    assert_eq!(delete.status(), 405);
    assert_eq!(header(&delete, "allow"), Some("GET"));
}

#[tokio::test]
async fn results_are_kept_for_the_retention_period_after_completion() {
    let sb = start();
    sb.atlas().set_processing_polls(0);
    let org = org_id(&sb, 2);
    let mut key = DigestClient::of(&sb, org);
    let q = body("2025-01-01", "2025-03-01");
    let created = key
        .send(Method::POST, &usage_url(&sb, org), Some(&q))
        .await
        .expect("sent");
    let query_token = json_of(created).await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let url = poll_url(&sb, org, &query_token, false);
    let mut status_after = async |advance: Duration| {
        sb.atlas().advance_clock(advance);
        key.send(Method::GET, &url, None)
            .await
            .expect("sent")
            .status()
    };
    assert_eq!(status_after(Duration::ZERO).await, 200, "completes");
    assert_eq!(status_after(Duration::from_secs(59 * 60)).await, 200);
    assert_eq!(status_after(Duration::from_secs(2 * 60)).await, 404);

    sb.atlas().set_result_retention(Duration::from_secs(10));
    let created = key
        .send(Method::POST, &usage_url(&sb, org), Some(&q))
        .await
        .expect("sent");
    let query_token = json_of(created).await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let url = poll_url(&sb, org, &query_token, true);
    let first = key.send(Method::GET, &url, None).await.expect("sent");
    assert_eq!(json_of(first).await["status"], 200);
    sb.atlas().advance_clock(Duration::from_secs(11));
    let later = key.send(Method::GET, &url, None).await.expect("sent");
    assert_eq!(json_of(later).await["status"], 404);
}

#[tokio::test]
async fn the_token_bucket_refuses_with_429_then_refills_on_the_clock() {
    let sb = start();
    let limit = RateLimit {
        capacity: 3,
        refill_amount: 2,
        refill_period: Duration::from_secs(60),
    };
    sb.atlas().set_rate_limit(limit);
    let (org, other) = (org_id(&sb, 0), org_id(&sb, 1));
    let token = access_token(&sb, org).await;
    let q = body("2025-01-01", "2025-02-01");
    let post = async || {
        bearer(&token, Method::POST, &usage_url(&sb, org), Some(&q))
            .await
            .expect("sent")
    };
    let remaining = |r: &reqwest::Response| header(r, "ratelimit-remaining").map(str::to_owned);
    let first = post().await;
    assert_eq!(first.status(), 202);
    assert_eq!(header(&first, "ratelimit-limit"), Some("3"));
    assert_eq!(remaining(&first).as_deref(), Some("2"));
    let query_token = json_of(first).await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let url = poll_url(&sb, org, &query_token, true);
    let poll = bearer(&token, Method::GET, &url, None).await.expect("sent");
    assert_eq!(remaining(&poll).as_deref(), Some("1"));
    assert_eq!(remaining(&post().await).as_deref(), Some("0"));

    let refused = post().await;
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "retry-after"), Some("60"));
    assert_eq!(remaining(&refused).as_deref(), Some("0"));
    let body = json_of(refused).await;
    assert_error(&body, 429, "RATE_LIMITED_TOKEN_BUCKET", &[]);
    assert_eq!(
        body["parameters"].as_array().map(|p| p[1..].to_vec()),
        Some(vec![json!(60), json!(3), json!(2), json!(60)])
    );
    let enveloped = bearer(
        &token,
        Method::GET,
        &poll_url(&sb, org, &query_token, true),
        None,
    )
    .await
    .expect("sent");
    assert_eq!(enveloped.status(), 200);
    assert_eq!(header(&enveloped, "retry-after"), Some("60"));
    assert_eq!(json_of(enveloped).await["status"], 429);

    sb.atlas().advance_clock(Duration::from_secs(30));
    assert_eq!(header(&post().await, "retry-after"), Some("30"));
    sb.atlas().advance_clock(Duration::from_secs(30));
    let statuses = [
        post().await.status(),
        post().await.status(),
        post().await.status(),
    ];
    assert_eq!(statuses, [202, 202, 429]);
    assert_eq!(sb.atlas().counters(org).rate_limited, 4);

    let other_token = access_token(&sb, other).await;
    let url = usage_url(&sb, other);
    let elsewhere = bearer(&other_token, Method::POST, &url, Some(&q)).await;
    assert_eq!(
        remaining(&elsewhere.expect("sent")).as_deref(),
        Some("2"),
        "per org"
    );
}

#[tokio::test]
async fn status_faults_answer_in_the_atlas_shape_plain_or_enveloped() {
    let sb = start();
    sb.atlas().set_processing_polls(0);
    let org = org_id(&sb, 0);
    let scope = Scope::atlas(org);
    let token = access_token(&sb, org).await;
    let q = body("2025-01-01", "2025-03-01");
    let status = |code: u16, retry_after| Fault::Status {
        code: StatusCode::from_u16(code).expect("status"),
        retry_after,
    };
    sb.push_fault(&scope, status(503, Some(7)));
    let response = bearer(&token, Method::POST, &usage_url(&sb, org), Some(&q))
        .await
        .expect("sent");
    assert_eq!(response.status(), 503);
    assert_eq!(header(&response, "retry-after"), Some("7"));
    assert_error(&json_of(response).await, 503, "SERVICE_UNAVAILABLE", &[]);

    let query_token = create(&sb, &token, org, &q).await;
    let url = poll_url(&sb, org, &query_token, true);
    for (code, retry_after, error_code) in [
        (500, None, "UNEXPECTED_ERROR"),
        (429, Some(2), "RATE_LIMITED"),
    ] {
        sb.push_fault(&scope, status(code, retry_after));
        let response = bearer(&token, Method::GET, &url, None).await.expect("sent");
        assert_eq!(response.status(), 200, "enveloped");
        assert_eq!(header(&response, "retry-after"), retry_after.map(|_| "2"));
        let body = json_of(response).await;
        assert_eq!(body["status"], code);
        assert_error(&body["content"], code, error_code, &[]);
    }
    sb.push_fault(&scope, status(401, None));
    let response = bearer(&token, Method::GET, &url, None).await.expect("sent");
    assert_eq!(response.status(), 401, "a 401 is never enveloped");
    assert!(header(&response, "www-authenticate").is_some_and(|c| c.starts_with("Digest ")));

    sb.push_fault(&scope, Fault::InconsistentTotals);
    let response = bearer(&token, Method::GET, &url, None).await.expect("sent");
    let rows = json_of(response).await["content"]["usageDetails"].clone();
    let want: Expected = expected(
        &sb,
        org,
        ("2025-01-01", "2025-03-01"),
        |_| true,
        false,
        false,
    );
    assert_eq!(rows.as_array().map(Vec::len), Some(want.len() + 1));
    assert_eq!(rows[0], rows[1], "one row repeated");

    sb.push_fault(&scope, Fault::MalformedBody);
    let response = bearer(&token, Method::GET, &url, None).await.expect("sent");
    let bytes = within(response.bytes()).await.expect("body");
    assert!(serde_json::from_slice::<Value>(&bytes).is_err());

    sb.push_fault(&Scope::atlas_oauth(), Fault::DropConnection);
    let account = &sb.atlas().dataset().orgs()[0].service_account;
    let dropped = client()
        .post(format!("{}/api/oauth/token", sb.base_url()))
        .basic_auth(&account.client_id, Some(&account.client_secret))
        .form(&[("grant_type", "client_credentials")]);
    assert!(within(dropped.send()).await.is_err());
    access_token(&sb, org).await;
    assert_eq!(sb.request_count(&Scope::atlas_oauth()), 3);
    assert_eq!(sb.request_count(&scope), 7);
    let counters = sb.atlas().counters(org);
    assert_eq!((counters.posts, counters.polls), (2, 5));
}
