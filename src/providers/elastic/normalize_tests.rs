//! Elastic normalization: exactness, conversion, checks.

use super::normalize::*;
use crate::domain::{ProviderAccountId, ProviderKind};
use crate::{
    domain::*,
    providers::{AccountRef, Normalized},
};
use chrono::DateTime;
use proptest::prelude::*;
use rust_decimal::Decimal;
use std::str::FromStr;

fn account() -> AccountRef {
    AccountRef {
        id: ProviderAccountId::parse("elastic-a").unwrap(),
        kind: ProviderKind::Elastic,
        display_name: Text::from("Org A"),
    }
}

fn january() -> Period {
    let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    Period::new(start, start + chrono::Duration::days(31)).unwrap()
}

fn org(account: &AccountRef, rate: &str) -> Organization<'static> {
    let account: &'static AccountRef = Box::leak(Box::new(account.clone()));
    Organization {
        account,
        organization_id: "org-1",
        usd_per_ecu: Decimal::from_str(rate).unwrap(),
    }
}

fn line(sku: &str, total: &str, quantity: &str, rate: &str) -> String {
    format!(
        r#"{{"name":"{sku} name","sku":"{sku}","type":"capacity","unit":"hour","kind":"compute","total_ecu":{total},
           "quantity":{{"value":{quantity},"formatted_value":"{quantity} hours"}},"rate":{{"value":{rate},"formatted_value":"{rate} per hour"}},
           "display_quantity":{{"value":1,"formatted_value":"1","type":"default"}},"quantities":[]}}"#
    )
}

fn instances_body(instance_total: &str, lines: &[String]) -> super::wire::Instances {
    let body = format!(
        r#"{{"total_ecu":{instance_total},"instances":[{{"id":"d1","name":"Search","type":"elasticsearch","total_ecu":{instance_total},"product_line_items":[{}]}}]}}"#,
        lines.join(",")
    );
    serde_json::from_str(&body).unwrap()
}

#[test]
fn tenths_that_floats_get_wrong_sum_exactly() {
    let body = instances_body(
        "0.3",
        &[line("a", "0.1", "1", "0.1"), line("b", "0.2", "2", "0.1")],
    );
    let normalized = instances_of(&body, "1.0");
    assert!(normalized.warnings.is_empty(), "{:?}", normalized.warnings);
    let nanos: i128 = normalized
        .records
        .iter()
        .map(|r| r.billed_cost.nanos())
        .sum();
    assert_eq!(nanos, 300_000_000);
}

fn instances_of(body: &super::wire::Instances, rate: &str) -> Normalized {
    instances(&org(&account(), rate), january(), body).unwrap()
}

#[test]
fn a_four_decimal_rate_times_quantity_is_kept_exactly() {
    let body = instances_body("19.1808", &[line("es.compute", "19.1808", "24", "0.7992")]);
    let record = &instances_of(&body, "1").records[0];
    assert_eq!(record.billed_cost.nanos(), 19_180_800_000);
    assert_eq!(
        record.list_unit_price.as_ref().unwrap().amount,
        Decimal::from_str("0.7992").unwrap()
    );
    assert_eq!(
        record.consumed_quantity.as_ref().unwrap().value,
        Decimal::from(24)
    );
    assert_eq!(
        record.consumed_quantity.as_ref().unwrap().unit.as_ref(),
        "hour"
    );
    assert_eq!(record.sku_id.as_deref(), Some("es.compute"));
    assert_eq!(record.charge_dimension.as_deref(), Some("capacity"));
    assert_eq!(record.service_name.as_ref(), "elasticsearch");
    assert_eq!(
        record.resource.as_ref().unwrap().name.as_deref(),
        Some("Search")
    );
    assert_eq!(
        record.extensions["x_rate_formatted"].as_ref(),
        "0.7992 per hour"
    );
}

#[test]
fn a_configured_rate_converts_exactly_and_keeps_the_ecu_amount() {
    let body = instances_body("19.1808", &[line("es.compute", "19.1808", "24", "0.7992")]);
    let record = &instances_of(&body, "0.97125").records[0];
    // 19.1808 × 0.97125 = 18.629352
    assert_eq!(record.billed_cost.nanos(), 18_629_352_000);
    assert_eq!(
        record.original_amount.value,
        Decimal::from_str("19.1808").unwrap()
    );
    assert_eq!(record.original_amount.unit.as_ref(), "ECU");
    assert_eq!(
        record.list_unit_price.as_ref().unwrap().amount,
        Decimal::from_str("0.776223").unwrap()
    );
}

#[test]
fn a_total_that_does_not_add_up_is_a_warning_and_the_parts_stay() {
    let body = instances_body(
        "5.0001",
        &[line("a", "2.5", "1", "2.5"), line("b", "2.5", "1", "2.5")],
    );
    let normalized = instances_of(&body, "1");
    assert_eq!(
        normalized.warnings.len(),
        1,
        "the instance total; the org total matches the instance's"
    );
    assert_eq!(
        normalized
            .records
            .iter()
            .map(|r| r.billed_cost.nanos())
            .sum::<i128>(),
        5_000_000_000
    );
}

#[test]
fn chart_timestamps_in_seconds_or_milliseconds_name_the_same_day() {
    for timestamp in ["1767225600", "1767225600000"] {
        let body: super::wire::Charts = serde_json::from_str(&format!(
            r#"{{"data":[{{"timestamp":{timestamp},"values":[{{"id":"d1","name":"Search","type":"deployment","value":1.25}}]}}]}}"#
        ))
        .unwrap();
        let normalized = charts(
            &org(&account(), "1"),
            january(),
            Bucketing::Daily,
            None,
            &body,
        )
        .unwrap();
        let record = &normalized.records[0];
        assert_eq!(record.charge_period, Period::day_of(january().start()));
        assert_eq!(record.billed_cost.nanos(), 1_250_000_000);
    }
}

#[test]
fn v1_dimensions_become_charge_dimensions() {
    let body: super::wire::DeploymentCosts = serde_json::from_str(
        r#"{"total_cost":3.5,"deployments":[{"deployment_id":"d1","deployment_name":"Search","hourly_rate":0.01,
            "costs":{"total":3.5,"dimensions":[{"type":"capacity","cost":3},{"type":"data_out","cost":0.5}]},
            "period":{"start":"2026-01-01T00:00:00+00:00","end":"2026-02-01T00:00:00+00:00"}}]}"#,
    )
    .unwrap();
    let normalized = deployments(&org(&account(), "1"), january(), &body).unwrap();
    assert!(normalized.warnings.is_empty());
    let dimensions: Vec<_> = normalized
        .records
        .iter()
        .map(|r| r.charge_dimension.as_deref().unwrap().to_string())
        .collect();
    assert_eq!(dimensions, ["capacity", "data_out"]);
}

proptest! {
    #[test]
    fn normalization_never_loses_or_invents_a_nano(
        items in proptest::collection::vec((-10_000_000i64..1_000_000_000, 1u32..100), 0..40),
        rate in 1i64..300_000,
    ) {
        // ECU in ten-thousandths, the rate in hundred-thousandths: their product is nanodollars.
        let ecu = |tenths: i64| format_decimal(Decimal::new(tenths, 4));
        let lines: Vec<String> = items.iter().map(|(tenths, q)| line("s", &ecu(*tenths), &q.to_string(), "1")).collect();
        let total: i64 = items.iter().map(|i| i.0).sum();
        let body = instances_body(&ecu(total), &lines);
        let usd_per_ecu = format_decimal(Decimal::new(rate, 5));
        let normalized = instances_of(&body, &usd_per_ecu);
        let expected: i128 = items.iter().map(|(tenths, _)| i128::from(*tenths) * i128::from(rate)).sum();
        prop_assert_eq!(normalized.records.iter().map(|r| r.billed_cost.nanos()).sum::<i128>(), expected);
        prop_assert_eq!(normalized.records.len(), items.len());
        prop_assert!(normalized.warnings.is_empty());
    }
}
