//! Tests of the Atlas emulator's authentication: Digest challenges and answers, service-account tokens, org access, secrets kept out of records and bodies.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::sandbox::atlas::MEDIA_TYPE;
use crate::sandbox::atlas::tests::kit::{
    DigestClient, access_token, bearer, body, create, json_of, org_id, poll_url, quoted, usage_url,
};
use crate::sandbox::testkit::{client, start, within};
use crate::sandbox::{ACCESS_TOKEN_LIFETIME, NONCE_LIFETIME, SandboxHandle};

fn header(response: &reqwest::Response, name: &str) -> String {
    let value = response.headers().get(name).and_then(|v| v.to_str().ok());
    value.unwrap_or_default().to_owned()
}

fn token_url(sb: &SandboxHandle) -> String {
    format!("{}/api/oauth/token", sb.base_url())
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body = json_of(response).await;
    assert_eq!(body["error"], status, "{body}");
    (
        status,
        body["errorCode"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn digest_challenges_then_accepts_the_answer_and_reuses_its_nonce() {
    let sb = start();
    let org = org_id(&sb, 0);
    let (url, q) = (usage_url(&sb, org), body("2025-01-01", "2025-02-01"));
    let anonymous = client()
        .post(&url)
        .header("content-type", MEDIA_TYPE)
        .body(q.to_string());
    let response = within(anonymous.send()).await.expect("sent");
    assert_eq!(response.status(), 401);
    let challenge = header(&response, "www-authenticate");
    for part in [
        "Digest ",
        r#"realm="MMS Public API""#,
        r#"qop="auth""#,
        "algorithm=MD5",
        "stale=false",
    ] {
        assert!(challenge.contains(part), "{challenge}");
    }
    assert!(quoted(&challenge, "nonce").is_some_and(|n| n.len() >= 16));
    let body = json_of(response).await;
    assert_eq!(
        (&body["error"], &body["errorCode"]),
        (&json!(401), &json!("USER_UNAUTHORIZED"))
    );
    assert_eq!(body["reason"], "Unauthorized");

    let mut key = DigestClient::of(&sb, org);
    let first = key.send(Method::POST, &url, Some(&q)).await.expect("sent");
    assert_eq!(first.status(), 202, "after one challenge");
    let reused = key
        .send_once(Method::POST, &url, Some(&q))
        .await
        .expect("sent");
    assert_eq!(reused.status(), 202, "same nonce, next nonce count");
    key.rewind();
    let replayed = key
        .send_once(Method::POST, &url, Some(&q))
        .await
        .expect("sent");
    assert_eq!(replayed.status(), 401, "a repeated nonce count is a replay");

    // Authentication sits before the envelope: its 401 stays an HTTP 401.
    let token = json_of(first).await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let poll = client().get(poll_url(&sb, org, &token, true));
    let response = within(poll.send()).await.expect("sent");
    assert_eq!(response.status(), 401);
    assert!(header(&response, "www-authenticate").starts_with("Digest "));
    let url = poll_url(&sb, org, &token, true);
    let enveloped_poll = key.send(Method::GET, &url, None).await.expect("sent");
    assert_eq!(json_of(enveloped_poll).await["status"], 102);

    let counters = sb.atlas().counters(org);
    assert_eq!((counters.posts, counters.queries_created), (5, 2));
}

#[tokio::test]
async fn wrong_keys_are_401_and_a_stale_nonce_is_challenged_again() {
    let sb = start();
    let org = sb.atlas().dataset().orgs()[1].id;
    let public_key = sb.atlas().dataset().orgs()[1].api_key.public_key.clone();
    let (url, q) = (usage_url(&sb, org), body("2025-01-01", "2025-02-01"));
    for mut wrong in [
        DigestClient::new(&public_key, "00000000-0000-4000-8000-000000000000"),
        DigestClient::new("zzzzzzzz", "anything"),
    ] {
        let response = wrong
            .send(Method::POST, &url, Some(&q))
            .await
            .expect("sent");
        assert!(header(&response, "www-authenticate").contains("stale=false"));
        assert_eq!(
            error_code(response).await,
            (401, "USER_UNAUTHORIZED".to_owned())
        );
    }
    for authorization in [
        "Digest garbage",
        "Digest username=",
        "Basic Zm9vOmJhcg==",
        "Bearer",
    ] {
        let request = client()
            .post(&url)
            .header("authorization", authorization)
            .header("content-type", MEDIA_TYPE)
            .body(q.to_string());
        let response = within(request.send()).await.expect("sent");
        assert_eq!(response.status(), 401, "{authorization}");
    }

    let mut key = DigestClient::of(&sb, org);
    assert_eq!(
        key.send(Method::POST, &url, Some(&q))
            .await
            .expect("sent")
            .status(),
        202
    );
    sb.atlas()
        .advance_clock(NONCE_LIFETIME + Duration::from_secs(1));
    let stale = key
        .send_once(Method::POST, &url, Some(&q))
        .await
        .expect("sent");
    assert_eq!(stale.status(), 401);
    assert!(header(&stale, "www-authenticate").contains("stale=true"));
    let again = key.send(Method::POST, &url, Some(&q)).await.expect("sent");
    assert_eq!(again.status(), 202, "a fresh nonce works");
}

#[tokio::test]
async fn a_service_account_token_works_until_it_expires() {
    let sb = start();
    let org = org_id(&sb, 2);
    let account = &sb.atlas().dataset().orgs()[2].service_account;
    let request = client()
        .post(token_url(&sb))
        .basic_auth(&account.client_id, Some(&account.client_secret))
        .form(&[("grant_type", "client_credentials")]);
    let response = within(request.send()).await.expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), "application/json");
    assert_eq!(header(&response, "cache-control"), "no-store");
    let granted = json_of(response).await;
    assert_eq!(granted["token_type"], "Bearer");
    assert_eq!(granted["expires_in"], ACCESS_TOKEN_LIFETIME.as_secs());
    let token = granted["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();

    let (url, q) = (usage_url(&sb, org), body("2025-01-01", "2025-02-01"));
    let post = async |token: &str| {
        bearer(token, Method::POST, &url, Some(&q))
            .await
            .expect("sent")
    };
    assert_eq!(post(&token).await.status(), 202);
    sb.atlas()
        .advance_clock(ACCESS_TOKEN_LIFETIME - Duration::from_secs(5));
    assert_eq!(post(&token).await.status(), 202, "still valid");
    sb.atlas().advance_clock(Duration::from_secs(5));
    let expired = post(&token).await;
    assert_eq!(
        error_code(expired).await,
        (401, "USER_UNAUTHORIZED".to_owned())
    );

    let fresh = access_token(&sb, org).await;
    assert_ne!(fresh, token);
    assert_eq!(post(&fresh).await.status(), 202);
    sb.atlas().expire_access_tokens();
    assert_eq!(post(&fresh).await.status(), 401);
}

#[tokio::test]
async fn the_token_endpoint_refuses_bad_credentials_and_grants() {
    let sb = start();
    let account = &sb.atlas().dataset().orgs()[0].service_account;
    let other = &sb.atlas().dataset().orgs()[1].service_account;
    let grant = [("grant_type", "client_credentials")];
    let attempts = [
        client()
            .post(token_url(&sb))
            .basic_auth(&account.client_id, Some(&other.client_secret)),
        client()
            .post(token_url(&sb))
            .basic_auth("mdb_sa_id_unknown", Some("secret")),
        client().post(token_url(&sb)),
    ];
    for attempt in attempts {
        let response = within(attempt.form(&grant).send()).await.expect("sent");
        assert!(header(&response, "www-authenticate").starts_with("Basic "));
        assert_eq!(
            error_code(response).await,
            (401, "USER_UNAUTHORIZED".to_owned())
        );
    }
    let authorized = || {
        client()
            .post(token_url(&sb))
            .basic_auth(&account.client_id, Some(&account.client_secret))
    };
    let wrong_grant = authorized().form(&[("grant_type", "password")]);
    let as_json = authorized()
        .header("content-type", "application/json")
        .body(r#"{"grant_type":"client_credentials"}"#);
    for request in [wrong_grant, as_json] {
        let response = within(request.send()).await.expect("sent");
        assert_eq!(response.status(), 400);
        let body = json_of(response).await;
        assert_eq!(body["errorCode"], "VALIDATION_ERROR");
        assert_eq!(body["badRequestDetail"]["fields"][0]["field"], "grant_type");
    }
    let get = client()
        .get(token_url(&sb))
        .basic_auth(&account.client_id, Some(&account.client_secret));
    let response = within(get.send()).await.expect("sent");
    assert_eq!(header(&response, "allow"), "POST");
    assert_eq!(
        error_code(response).await,
        (405, "METHOD_NOT_ALLOWED".to_owned())
    );
}

#[tokio::test]
async fn another_orgs_identity_is_403_an_unknown_org_404_a_malformed_id_400() {
    let sb = start();
    let (kestrel, lumen) = (org_id(&sb, 0), org_id(&sb, 1));
    let q = body("2025-01-01", "2025-02-01");
    let mut lumen_key = DigestClient::of(&sb, lumen);
    let response = lumen_key
        .send(Method::POST, &usage_url(&sb, kestrel), Some(&q))
        .await
        .expect("sent");
    assert_eq!(
        error_code(response).await,
        (403, "ORG_ACCESS_DENIED".to_owned())
    );

    let kestrel_token = access_token(&sb, kestrel).await;
    let query_token = create(&sb, &kestrel_token, kestrel, &q).await;
    let foreign = poll_url(&sb, lumen, &query_token, false);
    let response = bearer(&kestrel_token, Method::GET, &foreign, None)
        .await
        .expect("sent");
    assert_eq!(
        error_code(response).await,
        (403, "ORG_ACCESS_DENIED".to_owned())
    );

    let unknown = usage_url(&sb, "0123456789abcdef01234567");
    let response = bearer(&kestrel_token, Method::POST, &unknown, Some(&q))
        .await
        .expect("sent");
    assert_eq!(
        error_code(response).await,
        (404, "RESOURCE_NOT_FOUND".to_owned())
    );
    let malformed = usage_url(&sb, "not-an-org");
    let response = bearer(&kestrel_token, Method::POST, &malformed, Some(&q))
        .await
        .expect("sent");
    let body = json_of(response).await;
    assert_eq!(
        (&body["error"], &body["errorCode"]),
        (&json!(400), &json!("VALIDATION_ERROR"))
    );
    assert_eq!(body["badRequestDetail"]["fields"][0]["field"], "orgId");
    assert_eq!(sb.atlas().counters(kestrel).queries_created, 1);
}

#[tokio::test]
async fn no_secret_is_recorded_or_echoed() {
    let sb = start();
    let org = org_id(&sb, 0);
    let seeded = &sb.atlas().dataset().orgs()[0];
    let (url, q) = (usage_url(&sb, org), body("2025-01-01", "2025-02-01"));
    let mut bodies = Vec::new();
    let mut key = DigestClient::of(&sb, org);
    let mut wrong = DigestClient::new(&seeded.api_key.public_key, "wrong");
    for client in [&mut key, &mut wrong] {
        let response = client
            .send(Method::POST, &url, Some(&q))
            .await
            .expect("sent");
        bodies.push(within(response.text()).await.expect("body"));
    }
    let token = access_token(&sb, org).await;
    let query_token = create(&sb, &token, org, &q).await;
    let responses = [
        bearer(
            &token,
            Method::GET,
            &poll_url(&sb, org, &query_token, true),
            None,
        )
        .await,
        bearer(
            &format!("{token}x"),
            Method::GET,
            &poll_url(&sb, org, &query_token, true),
            None,
        )
        .await,
        within(
            client()
                .post(token_url(&sb))
                .basic_auth(&seeded.service_account.client_id, Some("wrong-secret"))
                .form(&[("grant_type", "client_credentials")])
                .send(),
        )
        .await,
    ];
    for response in responses {
        bodies.push(within(response.expect("sent").text()).await.expect("body"));
    }
    let records = format!("{:?}", sb.requests());
    let secrets = [
        seeded.api_key.private_key.as_str(),
        seeded.service_account.client_secret.as_str(),
        token.as_str(),
        "wrong-secret",
    ];
    for secret in secrets {
        assert!(!records.contains(secret), "a secret in the records");
        for body in &bodies {
            assert!(!body.contains(secret), "a secret in {body}");
        }
    }
    let parsed: Vec<Value> = bodies
        .iter()
        .filter_map(|b| serde_json::from_str(b).ok())
        .collect();
    assert_eq!(parsed.len(), bodies.len(), "every body is JSON");
}
