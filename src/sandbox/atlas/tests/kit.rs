//! Test helpers for the Atlas emulator: URLs, an independent Digest client, OAuth tokens, expected rows from the dataset.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use md5::{Digest, Md5};
use reqwest::{Method, Response};
use serde_json::Value;

use crate::sandbox::SandboxHandle;
use crate::sandbox::atlas::MEDIA_TYPE;
use crate::sandbox::testkit::{client, within};

/// Expected rows: (usageDate, service, projectId, clusterId) → cents.
pub(crate) type Expected = BTreeMap<(String, String, Option<String>, Option<String>), i64>;

/// Client side of RFC 7616 Digest, written apart from the server's code: it answers
/// a challenge, then reuses the nonce with an increasing nonce count.
pub(crate) struct DigestClient {
    user: String,
    pass: String,
    nonce: Option<String>,
    nc: u32,
}

pub(crate) fn usage_url(sb: &SandboxHandle, org_id: &str) -> String {
    format!(
        "{}/api/atlas/v2/orgs/{org_id}/billing/costExplorer/usage",
        sb.base_url()
    )
}

pub(crate) fn poll_url(sb: &SandboxHandle, org_id: &str, token: &str, envelope: bool) -> String {
    let query = if envelope { "?envelope=true" } else { "" };
    format!("{}/{token}{query}", usage_url(sb, org_id))
}

pub(crate) fn body(start: &str, end: &str) -> Value {
    serde_json::json!({ "startDate": start, "endDate": end })
}

/// The org's service-account access token, from the OAuth endpoint.
pub(crate) async fn access_token(sb: &SandboxHandle, org_id: &str) -> String {
    let org = sb.atlas().dataset().org(org_id).expect("seeded org");
    let account = &org.service_account;
    let request = client()
        .post(format!("{}/api/oauth/token", sb.base_url()))
        .basic_auth(&account.client_id, Some(&account.client_secret))
        .form(&[("grant_type", "client_credentials")]);
    let response = within(request.send()).await.expect("token request");
    assert_eq!(response.status(), 200);
    let body: Value = serde_json::from_slice(&response.bytes().await.expect("body")).expect("json");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// Sends with a Bearer token and the versioned media type; a JSON body goes as the POST body.
pub(crate) async fn bearer(
    token: &str,
    method: Method,
    url: &str,
    json: Option<&Value>,
) -> reqwest::Result<Response> {
    let mut request = client()
        .request(method, url)
        .bearer_auth(token)
        .header("accept", MEDIA_TYPE);
    if let Some(json) = json {
        request = request
            .header("content-type", MEDIA_TYPE)
            .body(json.to_string());
    }
    within(request.send()).await
}

/// POSTs a query with a Bearer token and returns the new query token.
pub(crate) async fn create(sb: &SandboxHandle, token: &str, org_id: &str, json: &Value) -> String {
    let response = bearer(token, Method::POST, &usage_url(sb, org_id), Some(json))
        .await
        .expect("create succeeds");
    assert_eq!(response.status(), 202);
    let created = json_of(response).await;
    created["token"].as_str().expect("token").to_owned()
}

pub(crate) async fn json_of(response: Response) -> Value {
    let bytes = within(response.bytes()).await.expect("body reads");
    serde_json::from_slice(&bytes).expect("body is JSON")
}

/// The dataset's usage for an org and range, summed per month and service, split by
/// project / cluster when asked: what the rows must say, computed without the handler.
pub(crate) fn expected(
    sb: &SandboxHandle,
    org_id: &str,
    (start, end): (&str, &str),
    keep: impl Fn(&crate::sandbox::UsageItem<'_>) -> bool,
    by_project: bool,
    by_cluster: bool,
) -> Expected {
    let date = |s: &str| s.parse::<NaiveDate>().expect("test date");
    let org = sb.atlas().dataset().org(org_id).expect("seeded org");
    let mut sums = Expected::new();
    for item in org.usage(date(start), date(end)).filter(|i| keep(i)) {
        let project = item.project.filter(|_| by_project).map(|p| p.id.clone());
        let cluster = item.cluster.filter(|_| by_cluster).map(|c| c.id.clone());
        let key = (
            item.month.to_string(),
            item.service.to_owned(),
            project,
            cluster,
        );
        *sums.entry(key).or_default() += item.amount_cents;
    }
    sums
}

/// The rows of a 200 body as the same map, checking each amount's exact text in `raw`.
pub(crate) fn rows_of(raw: &str, details: &Value) -> Expected {
    let rows = details["usageDetails"].as_array().expect("usageDetails");
    let mut got = Expected::new();
    for row in rows {
        let text = |k: &str| row[k].as_str().map(str::to_owned);
        let amount = row["usageAmount"]
            .as_f64()
            .expect("usageAmount is a number");
        let cents = (amount * 100.0).round() as i64;
        let literal = format!(r#""usageAmount":{},"#, crate::sandbox::usd_text(cents));
        assert!(raw.contains(&literal), "{literal} in {raw}");
        let key = (
            text("usageDate").expect("usageDate"),
            text("service").expect("service"),
            text("projectId"),
            text("clusterId"),
        );
        assert!(got.insert(key, cents).is_none(), "one row per key");
    }
    got
}

pub(crate) fn org_id(sb: &SandboxHandle, i: usize) -> &'static str {
    sb.atlas().dataset().orgs()[i].id
}

pub(crate) fn header<'r>(response: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Creates a query and polls it with the envelope until done; returns the raw body and its JSON.
pub(crate) async fn query(
    sb: &SandboxHandle,
    token: &str,
    org: &str,
    q: &Value,
) -> (String, Value) {
    let query_token = create(sb, token, org, q).await;
    for _ in 0..10 {
        let url = poll_url(sb, org, &query_token, true);
        let response = bearer(token, Method::GET, &url, None).await.expect("poll");
        let raw = within(response.text()).await.expect("body");
        let body: Value = serde_json::from_str(&raw).expect("JSON");
        if body["status"] == 200 {
            return (raw, body["content"].clone());
        }
        assert_eq!(body["status"], 102, "{raw}");
    }
    panic!("query never finished");
}

/// Asserts an Atlas error body: `error`, `errorCode`, `reason`, and the listed bad fields.
pub(crate) fn assert_error(body: &Value, status: u16, code: &str, fields: &[&str]) {
    assert_eq!(body["error"], status, "{body}");
    assert_eq!(body["errorCode"], code, "{body}");
    assert!(
        body["reason"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    let got: Vec<&str> = body["badRequestDetail"]["fields"]
        .as_array()
        .map(|f| f.iter().filter_map(|f| f["field"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(got, fields, "{body}");
}

impl DigestClient {
    pub(crate) fn new(user: &str, pass: &str) -> Self {
        Self {
            user: user.to_owned(),
            pass: pass.to_owned(),
            nonce: None,
            nc: 0,
        }
    }

    /// The org's own API key.
    pub(crate) fn of(sb: &SandboxHandle, org_id: &str) -> Self {
        let org = sb.atlas().dataset().org(org_id).expect("seeded org");
        Self::new(&org.api_key.public_key, &org.api_key.private_key)
    }

    /// Sends with the current nonce (none at first); on a 401 challenge takes its nonce
    /// and sends once more.
    pub(crate) async fn send(
        &mut self,
        method: Method,
        url: &str,
        json: Option<&Value>,
    ) -> reqwest::Result<Response> {
        let mut first = true;
        loop {
            let response = self.send_once(method.clone(), url, json).await?;
            if response.status() != 401 || !first {
                return Ok(response);
            }
            let challenge = response.headers().get("www-authenticate");
            let Some(nonce) = challenge.and_then(|c| quoted(c.to_str().ok()?, "nonce")) else {
                return Ok(response);
            };
            self.nonce = Some(nonce);
            self.nc = 0;
            first = false;
        }
    }

    pub(crate) async fn send_once(
        &mut self,
        method: Method,
        url: &str,
        json: Option<&Value>,
    ) -> reqwest::Result<Response> {
        let mut request = client()
            .request(method.clone(), url)
            .header("accept", MEDIA_TYPE);
        if let Some(header) = self.authorization(method.as_str(), url) {
            request = request.header("authorization", header);
        }
        if let Some(json) = json {
            request = request
                .header("content-type", MEDIA_TYPE)
                .body(json.to_string());
        }
        within(request.send()).await
    }

    /// `Authorization: Digest …` for the next request, if a nonce is known.
    pub(crate) fn authorization(&mut self, method: &str, url: &str) -> Option<String> {
        let nonce = self.nonce.clone()?;
        self.nc += 1;
        let url = reqwest::Url::parse(url).expect("test URL");
        let uri = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let (nc, cnonce, realm) = (format!("{:08x}", self.nc), "0a4f113b", "MMS Public API");
        let ha1 = md5(&format!("{}:{realm}:{}", self.user, self.pass));
        let ha2 = md5(&format!("{method}:{uri}"));
        let response = md5(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
        Some(format!(
            r#"Digest username="{}", realm="{realm}", nonce="{nonce}", uri="{uri}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}", response="{response}""#,
            self.user
        ))
    }

    /// Replays the last nonce count: the next header repeats the previous one's `nc`.
    pub(crate) fn rewind(&mut self) {
        self.nc = self.nc.saturating_sub(1);
    }
}

/// The value of `name="…"` in a challenge.
pub(crate) fn quoted(header: &str, name: &str) -> Option<String> {
    let start = header.find(&format!("{name}=\""))? + name.len() + 2;
    let len = header[start..].find('"')?;
    Some(header[start..start + len].to_owned())
}

fn md5(input: &str) -> String {
    hex::encode(Md5::digest(input.as_bytes()))
}

/// The first of a month as `YYYY-MM-01`.
pub(crate) fn month(year: i32, month: u32) -> String {
    format!("{year:04}-{month:02}-01")
}
