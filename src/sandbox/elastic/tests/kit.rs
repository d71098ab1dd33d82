//! Helpers the Elastic emulator's tests share: the seeded orgs, URLs, a raw GET, exact decimals and what the records say for a range.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::sandbox::elastic::data::ElasticDataset;
use crate::sandbox::testkit::{client, within};
use crate::sandbox::{ElasticOrg, SandboxHandle};

pub(super) const ACME: &str = "2417306858";
pub(super) const BOREALIS: &str = "2584193377";
/// Crosses the 2026-04-15 rate changes and two month boundaries.
pub(super) const SPRING_2026: (&str, &str) = ("2026-03-20T00:00:00Z", "2026-05-03T00:00:00Z");

/// A response read in full.
pub(super) struct Reply {
    pub(super) status: u16,
    pub(super) headers: reqwest::header::HeaderMap,
    pub(super) text: String,
}

impl Reply {
    pub(super) fn json(&self) -> Value {
        serde_json::from_str(&self.text).expect("body is JSON")
    }

    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub(super) fn org<'a>(sb: &'a SandboxHandle, id: &str) -> &'a ElasticOrg {
    sb.dataset().elastic().organization(id).expect("seeded org")
}

pub(super) fn range((from, to): (&str, &str)) -> String {
    format!("from={from}&to={to}")
}

pub(super) fn v1(org_id: &str, query: &str) -> String {
    format!("/api/v1/billing/costs/{org_id}/deployments?{query}")
}

pub(super) fn v2(org_id: &str, tail: &str, query: &str) -> String {
    format!("/api/v2/billing/organizations/{org_id}/{tail}?{query}")
}

/// GETs `path` with a raw `Authorization` header (or none).
pub(super) async fn send(sb: &SandboxHandle, path: &str, auth: Option<&str>) -> Reply {
    let mut request = client().get(format!("{}{path}", sb.base_url()));
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = within(request.send()).await.expect("request succeeds");
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    let text = within(response.text()).await.expect("body reads");
    Reply {
        status,
        headers,
        text,
    }
}

/// GETs `path` with the org's own key.
pub(super) async fn get_as(sb: &SandboxHandle, org_id: &str, path: &str) -> Reply {
    let auth = format!("ApiKey {}", org(sb, org_id).api_key);
    send(sb, path, Some(&auth)).await
}

/// A JSON decimal in ten-thousandths (exact: every value has at most 4 places).
pub(super) fn e4(value: &Value) -> i64 {
    let x = value
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {value}"));
    (x * 10_000.0).round() as i64
}

pub(super) fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("test date parses")
}

pub(super) fn list<'a>(value: &'a Value, key: &str) -> &'a Vec<Value> {
    value[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is a list"))
}

pub(super) fn sum(values: &[Value], key: &str) -> i64 {
    values.iter().map(|v| e4(&v[key])).sum()
}

/// What the records say for one org and range.
#[derive(Default)]
pub(super) struct Expected {
    pub(super) total: i64,
    pub(super) instances: BTreeMap<String, i64>,
    /// (instance id, sku) → (quantity, total)
    pub(super) lines: BTreeMap<(String, String), (i64, i64)>,
    pub(super) skus: BTreeMap<String, i64>,
}

pub(super) fn expected(
    data: &ElasticDataset,
    org: &ElasticOrg,
    (from, to): (&str, &str),
) -> Expected {
    let mut e = Expected::default();
    for r in data.usage(org, at(from), at(to)) {
        let total = r.total.ten_thousandths();
        e.total += total;
        *e.instances.entry(r.instance.id.clone()).or_default() += total;
        *e.skus.entry(r.sku.sku.to_owned()).or_default() += total;
        let line = e
            .lines
            .entry((r.instance.id.clone(), r.sku.sku.to_owned()))
            .or_default();
        line.0 += r.quantity.ten_thousandths();
        line.1 += total;
    }
    e
}
