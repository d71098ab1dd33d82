//! Tests of the Elastic emulator's seeded usage, its v1 answers and its exact decimals.

use std::collections::HashMap;

use chrono::Datelike;

use crate::sandbox::elastic::data::ElasticDataset;
use crate::sandbox::elastic::tests::kit::{
    ACME, at, e4, expected, get_as, list, org, range, sum, v1, v2,
};
use crate::sandbox::testkit::start;
use crate::sandbox::{Decimal4, ElasticOrg};

/// Every number token in a JSON text (outside strings).
fn numbers(raw: &str) -> Vec<&str> {
    let (bytes, mut found, mut i, mut in_string) = (raw.as_bytes(), Vec::new(), 0, false);
    while i < bytes.len() {
        match (in_string, bytes[i]) {
            (true, b'\\') => i += 1,
            (true, b'"') | (false, b'"') => in_string = !in_string,
            (false, b'-' | b'0'..=b'9') => {
                let begin = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                found.push(&raw[begin..i]);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

#[test]
fn seeding_is_deterministic_and_keys_are_distinct_and_hidden() {
    let (a, b) = (ElasticDataset::seeded(), ElasticDataset::seeded());
    let keys: Vec<&str> = a
        .organizations()
        .iter()
        .map(|o| o.api_key.as_str())
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(
        keys.iter()
            .all(|k| k.starts_with("ec_key_") && k.len() == 39)
    );
    assert!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2]);
    let (from, to) = (at("2025-06-01T00:00:00Z"), at("2025-06-03T00:00:00Z"));
    for (x, y) in a.organizations().iter().zip(b.organizations()) {
        assert_eq!((x.id, &x.api_key), (y.id, &y.api_key));
        assert!(
            !format!("{x:?}{a:?}").contains(&x.api_key),
            "keys never in Debug"
        );
        let ids = |o: &ElasticOrg| o.instances.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(x), ids(y));
        assert!(ids(x).iter().all(|id| id.len() == 32));
        let flat = |d: &ElasticDataset, o| {
            d.usage(o, from, to)
                .map(|r| {
                    (
                        r.start,
                        r.instance.id.clone(),
                        r.sku.sku,
                        r.quantity,
                        r.total,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(flat(&a, x), flat(&b, y));
    }
}

#[test]
fn every_record_is_quantity_times_its_tier_rate_on_its_date() {
    let data = ElasticDataset::seeded();
    let (span_start, span_end) = (at("2025-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"));
    let mut tiered_splits = 0;
    for org in data.organizations() {
        // Monthly quantity so far per (instance, sku, month): tiers apply to it.
        let mut used: HashMap<(&str, &str, i32, u32), i64> = HashMap::new();
        for r in data.usage(org, at("2000-01-01T00:00:00Z"), at("2100-01-01T00:00:00Z")) {
            let (q, rate, total) = (
                r.quantity.ten_thousandths(),
                r.rate.ten_thousandths(),
                r.total.ten_thousandths(),
            );
            assert!(q > 0 && r.start >= span_start && r.start < span_end);
            assert!(r.start >= r.instance.created);
            assert!(r.instance.deleted.is_none_or(|end| r.start < end));
            assert_eq!(
                i128::from(q) * i128::from(rate),
                i128::from(total) * 10_000,
                "{r:?}"
            );
            let period = &r.sku.prices[r.period];
            assert!(period.starts() <= r.start);
            assert!(
                r.sku
                    .prices
                    .get(r.period + 1)
                    .is_none_or(|next| next.starts() > r.start)
            );
            assert_eq!(period.tiers[r.tier].rate, r.rate);
            let month = (
                r.instance.id.as_str(),
                r.sku.sku,
                r.start.year(),
                r.start.month(),
            );
            let before = *used.get(&month).unwrap_or(&0);
            let (min, max) = (
                period.tiers[r.tier].min * 10_000,
                period.tiers.get(r.tier + 1).map(|t| t.min * 10_000),
            );
            assert!(
                before >= min && max.is_none_or(|max| before + q <= max),
                "{r:?} after {before}"
            );
            tiered_splits += usize::from(r.tier > 0 && before == min);
            used.insert(month, before + q);
        }
    }
    assert!(
        tiered_splits > 10,
        "tier boundaries are crossed: {tiered_splits}"
    );
}

#[test]
fn a_range_starting_mid_month_yields_exactly_the_full_months_records() {
    let data = ElasticDataset::seeded();
    let org = data.organization(ACME).expect("seeded");
    let key = |r: crate::sandbox::ElasticUsage| {
        (
            r.start,
            r.instance.id.clone(),
            r.sku.sku,
            r.tier,
            r.quantity,
            r.total,
        )
    };
    let (from, to) = (at("2026-04-14T13:00:00Z"), at("2026-04-16T05:00:00Z"));
    let whole: Vec<_> = data
        .usage(org, at("2026-04-01T00:00:00Z"), at("2026-05-01T00:00:00Z"))
        .filter(|r| r.start >= from && r.start < to)
        .map(key)
        .collect();
    let mut part: Vec<_> = data.usage(org, from, to).map(key).collect();
    let mut sorted = whole.clone();
    sorted.sort();
    part.sort();
    assert_eq!(part, sorted);
    assert!(
        whole.iter().any(|r| r.3 > 0),
        "some usage sits in a higher tier"
    );
}

#[test]
fn rates_change_on_their_dates() {
    let data = ElasticDataset::seeded();
    let org = data.organization(ACME).expect("seeded");
    let rates = |from: &str, to: &str, sku: &str| {
        let mut rates: Vec<String> = data
            .usage(org, at(from), at(to))
            .filter(|r| r.sku.sku == sku)
            .map(|r| r.rate.to_string())
            .collect();
        rates.dedup();
        rates
    };
    let hot = "gcp.es.datahot.n2.68x16x45_gcp-europe-west1_8192_3";
    assert_eq!(
        rates("2025-12-31T22:00:00Z", "2026-01-01T02:00:00Z", hot),
        ["0.7992", "0.8392"]
    );
    let vcu = "es.serverless.ingest-vcu";
    assert_eq!(
        rates("2026-04-14T00:00:00Z", "2026-04-16T00:00:00Z", vcu),
        ["0.14", "0.12"]
    );
    let warm = "gcp.es.datawarm.n2.68x10x190_gcp-europe-west1_4096_2";
    assert_eq!(
        rates("2025-06-30T23:00:00Z", "2025-07-01T01:00:00Z", warm),
        ["0.1816", "0.1728"]
    );
}

#[tokio::test]
async fn v1_total_is_the_sum_of_deployments_and_of_their_dimensions() {
    let sb = start();
    let data = sb.dataset().elastic();
    let period = ("2025-03-01T00:00:00Z", "2025-05-01T00:00:00Z");
    for org in data.organizations() {
        let reply = get_as(&sb, org.id, &v1(org.id, &range(period))).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let body = reply.json();
        let want = expected(data, org, period);
        let deployments = list(&body, "deployments");
        let ids: Vec<&str> = deployments
            .iter()
            .filter_map(|d| d["deployment_id"].as_str())
            .collect();
        let seeded: Vec<&str> = org
            .instances
            .iter()
            .filter(|i| i.kind.is_deployment())
            .map(|i| i.id.as_str())
            .collect();
        assert_eq!(ids, seeded, "deployments only, projects are v2's");
        for d in deployments {
            let id = d["deployment_id"].as_str().unwrap_or("");
            let instance = org.instance(id).expect("seeded instance");
            assert_eq!(d["deployment_name"], instance.name);
            let dims = list(&d["costs"], "dimensions");
            let types: Vec<&str> = dims.iter().filter_map(|x| x["type"].as_str()).collect();
            assert_eq!(
                types,
                [
                    "capacity",
                    "data_in",
                    "data_internode",
                    "data_out",
                    "storage_api",
                    "storage_bytes"
                ]
            );
            for dim in dims {
                let by_type: i64 = want
                    .lines
                    .iter()
                    .filter(|((i, sku), _)| {
                        i == id
                            && data
                                .skus()
                                .iter()
                                .any(|s| s.sku == sku && s.item_type == dim["type"])
                    })
                    .map(|(_, (_, total))| total)
                    .sum();
                assert_eq!(e4(&dim["cost"]), by_type, "{id} {dim}");
            }
            assert_eq!(e4(&d["costs"]["total"]), sum(dims, "cost"));
            assert_eq!(
                e4(&d["costs"]["total"]),
                want.instances.get(id).copied().unwrap_or(0)
            );
            let start = instance
                .created
                .max(at(period.0))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false);
            assert_eq!(d["period"]["start"], start.as_str());
            assert_eq!(d["period"]["end"], "2025-05-01T00:00:00+00:00");
            // The capacity rates in force at the period's last hour.
            let last_hour = at("2025-04-30T23:00:00Z");
            let rate: i64 = instance
                .skus()
                .filter(|s| s.item_type == "capacity")
                .filter_map(|s| s.prices.iter().rev().find(|p| p.starts() <= last_hour))
                .map(|p| p.tiers[0].rate.ten_thousandths())
                .sum();
            assert_eq!(e4(&d["hourly_rate"]), rate);
        }
        let deployment_total: i64 = deployments.iter().map(|d| e4(&d["costs"]["total"])).sum();
        assert_eq!(e4(&body["total_cost"]), deployment_total);
        let projects: i64 = org
            .instances
            .iter()
            .filter(|i| !i.kind.is_deployment())
            .filter_map(|i| want.instances.get(&i.id))
            .sum();
        assert_eq!(deployment_total, want.total - projects);
        let exact = format!(
            "\"total_cost\":{}",
            Decimal4::from_ten_thousandths(deployment_total)
        );
        assert!(reply.text.starts_with(&format!("{{{exact}")), "{exact}");
    }
}

#[tokio::test]
async fn amounts_floats_get_wrong_are_exact_in_the_raw_bodies() {
    let sb = start();
    let archive = &org(&sb, ACME).instances[2];
    assert_eq!(archive.name, "archive-snapshots");
    // 0.1 + 0.2: one day of snapshot storage and snapshot API calls.
    let day = range(("2025-03-10T00:00:00Z", "2025-03-11T00:00:00Z"));
    let raw = get_as(&sb, ACME, &v1(ACME, &day)).await.text;
    let dims = r#"{"type":"storage_api","cost":0.2},{"type":"storage_bytes","cost":0.1}]"#;
    let total = r#""deployment_name":"archive-snapshots","costs":{"total":0.3,"dimensions":["#;
    assert!(raw.contains(total) && raw.contains(dims), "{raw}");
    let path = v2(ACME, &format!("costs/instances/{}/items", archive.id), &day);
    let raw = get_as(&sb, ACME, &path).await.text;
    assert!(
        raw.starts_with(r#"{"total_ecu":0.3,"products":[{"type":"deployment","total_ecu":0.3,"#),
        "{raw}"
    );
    // A week: 0.7 + 1.4 = 2.1 (2.0999999999999996 in floats).
    let week = range(("2025-03-10T00:00:00Z", "2025-03-17T00:00:00Z"));
    let raw = get_as(&sb, ACME, &v1(ACME, &week)).await.text;
    assert!(raw.contains(r#""costs":{"total":2.1,"#), "{raw}");
    assert!(
        raw.contains(r#""cost":1.4},{"type":"storage_bytes","cost":0.7}"#),
        "{raw}"
    );
}

#[tokio::test]
async fn every_number_is_a_short_exact_decimal() {
    let sb = start();
    let long = range(("2024-11-01T00:00:00Z", "2027-02-01T00:00:00Z"));
    let instance = &org(&sb, ACME).instances[0].id;
    let mut seen = 0;
    for path in [
        v1(ACME, &long),
        v2(ACME, "costs/instances", &long),
        v2(
            ACME,
            "costs/items",
            &format!("{long}&serverless_group_by=product_family"),
        ),
        v2(ACME, &format!("costs/instances/{instance}/items"), &long),
        v2(
            ACME,
            "charts",
            &format!("{long}&bucketing_strategy=monthly"),
        ),
        v2(ACME, &format!("instances/{instance}/charts"), &long),
    ] {
        let reply = get_as(&sb, ACME, &path).await;
        assert_eq!(reply.status, 200, "{path}");
        for number in numbers(&reply.text) {
            let decimals = number.split_once('.').map_or("", |(_, d)| d);
            assert!(
                !number.contains(['e', 'E', '+']) && decimals.len() <= 4,
                "{number} in {path}"
            );
            assert!(!decimals.ends_with('0'), "{number} is written short");
            seen += 1;
        }
    }
    assert!(seen > 1000);
}
