//! Tests of the Elastic emulator's v2 answers: instances, items and charts checked against the records and against each other.

use std::collections::BTreeMap;

use chrono::{Datelike, Utc};
use serde_json::Value;

use crate::sandbox::elastic::tests::kit::{
    ACME, BOREALIS, SPRING_2026, at, e4, expected, get_as, list, org, range, sum, v1, v2,
};
use crate::sandbox::testkit::start;

#[tokio::test]
async fn v2_instances_items_and_charts_agree_with_each_other_and_the_records() {
    let sb = start();
    let data = sb.dataset().elastic();
    let org = org(&sb, ACME);
    let want = expected(data, org, SPRING_2026);
    let query = range(SPRING_2026);

    let instances = get_as(&sb, ACME, &v2(ACME, "costs/instances", &query))
        .await
        .json();
    assert_eq!(e4(&instances["total_ecu"]), want.total);
    let listed = list(&instances, "instances");
    assert_eq!(
        listed.len(),
        org.instances.len(),
        "all five are alive in spring 2026"
    );
    assert_eq!(sum(listed, "total_ecu"), want.total);
    for instance in listed {
        let id = instance["id"].as_str().unwrap_or("");
        let items = list(instance, "product_line_items");
        assert_eq!(e4(&instance["total_ecu"]), want.instances[id]);
        assert_eq!(sum(items, "total_ecu"), want.instances[id], "{id}");
        for item in items {
            let sku = item["sku"].as_str().unwrap_or("").to_owned();
            let (quantity, total) = want
                .lines
                .get(&(id.to_owned(), sku))
                .copied()
                .unwrap_or((0, 0));
            assert_eq!(
                (e4(&item["quantity"]["value"]), e4(&item["total_ecu"])),
                (quantity, total)
            );
        }
        // The same instance's own items endpoint says the same.
        let own = get_as(
            &sb,
            ACME,
            &v2(ACME, &format!("costs/instances/{id}/items"), &query),
        )
        .await
        .json();
        assert_eq!(e4(&own["total_ecu"]), want.instances[id]);
        let own_items: Vec<&Value> = list(&own, "products")
            .iter()
            .flat_map(|p| list(p, "product_line_items"))
            .collect();
        let pairs = |items: Vec<&Value>| {
            items
                .iter()
                .map(|i| (i["sku"].to_string(), e4(&i["total_ecu"])))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(pairs(own_items), pairs(items.iter().collect()));
        // Its chart, per SKU, adds up to the same line totals.
        let chart = get_as(
            &sb,
            ACME,
            &v2(ACME, &format!("instances/{id}/charts"), &query),
        )
        .await
        .json();
        let mut per_sku: BTreeMap<String, i64> = BTreeMap::new();
        for point in list(&chart, "data") {
            for v in list(point, "values") {
                *per_sku
                    .entry(v["id"].as_str().unwrap_or("").to_owned())
                    .or_default() += e4(&v["value"]);
            }
        }
        for (sku, total) in per_sku {
            assert_eq!(
                want.lines[&(id.to_owned(), sku.clone())].1,
                total,
                "{id} {sku}"
            );
        }
    }

    for grouping in [
        "",
        "&serverless_group_by=product",
        "&serverless_group_by=product_family",
    ] {
        let items = get_as(
            &sb,
            ACME,
            &v2(ACME, "costs/items", &format!("{query}{grouping}")),
        )
        .await
        .json();
        assert_eq!(e4(&items["total_ecu"]), want.total, "{grouping}");
        let products = list(&items, "products");
        assert_eq!(sum(products, "total_ecu"), want.total);
        let mut per_sku: BTreeMap<String, i64> = BTreeMap::new();
        for product in products {
            let lines = list(product, "product_line_items");
            assert_eq!(e4(&product["total_ecu"]), sum(lines, "total_ecu"));
            for line in lines {
                *per_sku
                    .entry(line["sku"].as_str().unwrap_or("").to_owned())
                    .or_default() += e4(&line["total_ecu"]);
            }
        }
        assert_eq!(per_sku, want.skus, "{grouping}");
        let types: Vec<&str> = products.iter().filter_map(|p| p["type"].as_str()).collect();
        let families = ["deployment", "elasticsearch", "add_ons", "observability"];
        assert_eq!(
            types.len() == families.len(),
            grouping.ends_with("family"),
            "{types:?}"
        );
    }

    let daily = get_as(&sb, ACME, &v2(ACME, "charts", &query)).await.json();
    let points = list(&daily, "data");
    let stamps: Vec<i64> = points
        .iter()
        .filter_map(|p| p["timestamp"].as_i64())
        .collect();
    let first = at(SPRING_2026.0).timestamp();
    assert_eq!(
        stamps,
        (0..44).map(|d| first + d * 86_400).collect::<Vec<_>>(),
        "every day, in order"
    );
    let monthly = get_as(
        &sb,
        ACME,
        &v2(
            ACME,
            "charts",
            &format!("{query}&bucketing_strategy=monthly"),
        ),
    )
    .await
    .json();
    let months: Vec<i64> = list(&monthly, "data")
        .iter()
        .filter_map(|p| p["timestamp"].as_i64())
        .collect();
    let month_starts = [
        "2026-03-01T00:00:00Z",
        "2026-04-01T00:00:00Z",
        "2026-05-01T00:00:00Z",
    ];
    assert_eq!(months, month_starts.map(|m| at(m).timestamp()));
    for chart in [&daily, &monthly] {
        let mut per_instance: BTreeMap<String, i64> = BTreeMap::new();
        for v in list(chart, "data").iter().flat_map(|p| list(p, "values")) {
            let instance = org
                .instance(v["id"].as_str().unwrap_or(""))
                .expect("an instance");
            assert_eq!(
                (&v["name"], &v["type"]),
                (
                    &Value::from(instance.name),
                    &Value::from(instance.type_name())
                )
            );
            *per_instance.entry(instance.id.clone()).or_default() += e4(&v["value"]);
        }
        assert_eq!(per_instance, want.instances);
    }
    // Each day's chart value is that day's records.
    let day = at("2026-04-15T00:00:00Z");
    let one_day = expected(data, org, ("2026-04-15T00:00:00Z", "2026-04-16T00:00:00Z"));
    let point = points
        .iter()
        .find(|p| p["timestamp"] == day.timestamp())
        .expect("the day");
    assert_eq!(sum(list(point, "values"), "value"), one_day.total);
}

/// The line item for `sku` of the instance named `name`, from a v2 instances body.
fn line_item<'a>(body: &'a Value, name: &str, sku: &str) -> &'a Value {
    let instance = list(body, "instances")
        .iter()
        .find(|i| i["name"] == name)
        .expect("instance");
    let items = list(instance, "product_line_items");
    items.iter().find(|i| i["sku"] == sku).expect("line item")
}

fn product(quantity: &Value, rate: &Value) -> i64 {
    e4(&quantity["value"]) * e4(&rate["value"]) / 10_000
}

#[tokio::test]
async fn line_items_break_down_rate_changes_and_tiers_exactly() {
    let sb = start();
    let path = v2(
        ACME,
        "costs/instances",
        &format!("{}&include_names=true", range(SPRING_2026)),
    );
    let body = get_as(&sb, ACME, &path).await.json();

    // Untiered, one rate all along: no breakdown, and quantity × rate is the total.
    let search = line_item(&body, "catalog-search", "es.serverless.search-vcu");
    assert_eq!(list(search, "quantities").len(), 0);
    assert_eq!(
        product(&search["quantity"], &search["rate"]),
        e4(&search["total_ecu"])
    );
    assert_eq!(search["rate"]["formatted_value"], "0.0900 per VCU hour");
    assert_eq!(search["display_quantity"]["type"], "default");
    assert_eq!(search["kind"], Value::Null);

    // Untiered, the rate changed on 2026-04-15: one segment per rate, each exact.
    let ingest = line_item(&body, "catalog-search", "es.serverless.ingest-vcu");
    let segments = list(ingest, "quantities");
    let bounds: Vec<(&str, &str)> = segments
        .iter()
        .map(|s| {
            (
                s["from"].as_str().unwrap_or(""),
                s["to"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        bounds,
        [
            ("2026-03-20T00:00:00+00:00", "2026-04-15T00:00:00+00:00"),
            ("2026-04-15T00:00:00+00:00", "2026-05-03T00:00:00+00:00"),
        ]
    );
    for segment in segments {
        assert_eq!(
            product(&segment["quantity"], &segment["rate"]),
            e4(&segment["total_ecu"])
        );
        assert_eq!(list(segment, "tiers").len(), 0);
    }
    assert_eq!(sum(segments, "total_ecu"), e4(&ingest["total_ecu"]));
    assert_eq!(
        ingest["rate"]["value"],
        Value::from(0.12),
        "the latest rate"
    );

    // Tiered: every period has a breakdown whose tiers are each exact.
    let out = line_item(&body, "search-prod", "gcp.data-transfer-out");
    let segments = list(out, "quantities");
    assert_eq!(segments.len(), 2);
    for segment in segments {
        let tiers = list(segment, "tiers");
        let mins: Vec<i64> = tiers.iter().filter_map(|t| t["min"].as_i64()).collect();
        assert_eq!(mins, [0, 10, 100]);
        assert_eq!(
            (&tiers[0]["max"], &tiers[2]["max"]),
            (&Value::from(10), &Value::Null)
        );
        for tier in tiers {
            assert_eq!(
                product(&tier["quantity"], &tier["rate"]),
                e4(&tier["total_ecu"])
            );
        }
        assert_eq!(sum(tiers, "total_ecu"), e4(&segment["total_ecu"]));
        // The segment's rate is the marginal one: the highest tier with usage.
        let used = tiers.iter().rfind(|t| e4(&t["quantity"]["value"]) > 0);
        assert_eq!(segment["rate"], used.expect("some usage")["rate"]);
        let quantities: i64 = tiers.iter().map(|t| e4(&t["quantity"]["value"])).sum();
        assert_eq!(quantities, e4(&segment["quantity"]["value"]));
    }
    assert_eq!(sum(segments, "total_ecu"), e4(&out["total_ecu"]));
    assert_eq!(out["rate"], segments[1]["rate"], "the latest period's rate");
    assert!(e4(&out["total_ecu"]) > 0);

    // The documented example shape: 24 hours × 0.7992 = 19.1808 on a 2025 day.
    let day = range(("2025-10-29T00:00:00Z", "2025-10-30T00:00:00Z"));
    let reply = get_as(&sb, ACME, &v2(ACME, "costs/instances", &day)).await;
    let hot = line_item(
        &reply.json(),
        "search-prod",
        "gcp.es.datahot.n2.68x16x45_gcp-europe-west1_8192_3",
    )
    .clone();
    assert_eq!(
        (
            &hot["quantity"]["formatted_value"],
            &hot["rate"]["formatted_value"]
        ),
        (&Value::from("24 hours"), &Value::from("0.7992 per hour"))
    );
    assert!(
        reply
            .text
            .contains(r#""total_ecu":19.1808,"type":"capacity""#)
    );
}

#[tokio::test]
async fn project_names_need_include_names_and_instance_charts_filter_by_type() {
    let sb = start();
    let org = org(&sb, ACME);
    let query = range(SPRING_2026);
    for (flag, named) in [
        ("", false),
        ("&include_names=false", false),
        ("&include_names=true", true),
    ] {
        let body = get_as(
            &sb,
            ACME,
            &v2(ACME, "costs/instances", &format!("{query}{flag}")),
        )
        .await
        .json();
        for instance in list(&body, "instances") {
            let seeded = org
                .instance(instance["id"].as_str().unwrap_or(""))
                .expect("seeded");
            let name = if named || seeded.kind.is_deployment() {
                seeded.name
            } else {
                &seeded.id
            };
            assert_eq!(instance["name"], name, "{flag}");
            assert_eq!(instance["type"], seeded.type_name());
        }
    }
    let (deployment, project) = (&org.instances[0], &org.instances[3]);
    for (instance, filter, points) in [
        (deployment, "all", true),
        (deployment, "deployments", true),
        (deployment, "projects", false),
        (project, "projects", true),
        (project, "deployments", false),
    ] {
        let path = v2(
            ACME,
            &format!("instances/{}/charts", instance.id),
            &format!("{query}&instance_type={filter}"),
        );
        let body = get_as(&sb, ACME, &path).await.json();
        assert_eq!(
            !list(&body, "data").is_empty(),
            points,
            "{} {filter}",
            instance.name
        );
    }
}

#[tokio::test]
async fn ranges_without_usage_are_empty_and_v1_defaults_to_this_month() {
    let sb = start();
    let later = range(("2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z"));
    let body = get_as(&sb, BOREALIS, &v1(BOREALIS, &later)).await.json();
    assert_eq!(
        (e4(&body["total_cost"]), list(&body, "deployments").len()),
        (0, 0)
    );
    let body = get_as(&sb, BOREALIS, &v2(BOREALIS, "costs/instances", &later))
        .await
        .json();
    assert_eq!(
        (e4(&body["total_ecu"]), list(&body, "instances").len()),
        (0, 0)
    );
    let body = get_as(&sb, BOREALIS, &v2(BOREALIS, "charts", &later))
        .await
        .json();
    assert_eq!(list(&body, "data").len(), 0);
    // vector-lab was deleted on 2025-11-01: it is listed before, not after.
    let before = get_as(
        &sb,
        BOREALIS,
        &v2(
            BOREALIS,
            "costs/instances",
            &range(("2025-10-31T00:00:00Z", "2025-11-02T00:00:00Z")),
        ),
    )
    .await
    .json();
    assert!(
        list(&before, "instances")
            .iter()
            .any(|i| i["id"] == org(&sb, BOREALIS).instances[2].id.as_str())
    );
    let after = get_as(
        &sb,
        BOREALIS,
        &v2(
            BOREALIS,
            "costs/instances",
            &range(("2025-11-01T00:00:00Z", "2025-11-02T00:00:00Z")),
        ),
    )
    .await
    .json();
    assert_eq!(list(&after, "instances").len(), 2);

    let reply = get_as(
        &sb,
        BOREALIS,
        &format!("/api/v1/billing/costs/{BOREALIS}/deployments"),
    )
    .await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    let now = Utc::now();
    let month = format!("{:04}-{:02}-01T00:00:00+00:00", now.year(), now.month());
    for d in list(&body, "deployments") {
        assert_eq!(d["period"]["start"], month.as_str());
    }
    assert_eq!(
        e4(&body["total_cost"]),
        list(&body, "deployments")
            .iter()
            .map(|d| e4(&d["costs"]["total"]))
            .sum::<i64>()
    );
}
