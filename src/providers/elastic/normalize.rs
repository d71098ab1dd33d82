//! Elastic answers into normalized records. Pure. ECU amounts are kept as sent (original amount, unit
//! "ECU") and converted exactly to USD at the account's configured rate; stated totals are checked
//! against their parts and a mismatch is a warning, never a correction.

use super::wire::{Charts, DeploymentCosts, Instances, LineItem};
use crate::{
    domain::{
        ChargeCategory, ColumnsBuilder, Currency, DataQualityWarning, Money, Period, RecordRef,
        ResourceRef, format_decimal,
    },
    providers::{AccountRef, ChunkData},
};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

/// Who the records belong to and how ECU becomes USD.
pub struct Organization<'a> {
    pub account: &'a AccountRef,
    pub organization_id: &'a str,
    /// USD per ECU, exact.
    pub usd_per_ecu: Decimal,
}

/// Chart bucket widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucketing {
    Daily,
    Monthly,
}

impl Bucketing {
    pub fn as_str(&self) -> &'static str {
        match self {
            Bucketing::Daily => "daily",
            Bucketing::Monthly => "monthly",
        }
    }
}

/// v1: one record per deployment × billing dimension.
pub fn deployments(
    org: &Organization<'_>,
    period: Period,
    body: &DeploymentCosts,
) -> Result<ChunkData, String> {
    let usd_per_ecu = format_decimal(org.usd_per_ecu);
    // Formatted before the records borrow them.
    let hourly_rates: Vec<String> = body
        .deployments
        .iter()
        .map(|deployment| format_decimal(deployment.hourly_rate.0))
        .collect();
    let mut out = Builder::new(org, period, &usd_per_ecu);
    let mut deployments_sum = Decimal::ZERO;
    for (deployment, hourly_rate) in body.deployments.iter().zip(&hourly_rates) {
        let resource = ResourceRef {
            id: &deployment.deployment_id,
            name: Some(&deployment.deployment_name),
            kind: "deployment",
        };
        let mut dimensions_sum = Decimal::ZERO;
        for dimension in &deployment.costs.dimensions {
            dimensions_sum = add(dimensions_sum, dimension.cost.0)?;
            out.push(Line {
                resource: Some(resource),
                service: "deployment",
                sku: None,
                dimension: Some(&dimension.kind),
                ecu: dimension.cost.0,
                quantity: None,
                rate: None,
                extensions: vec![("x_hourly_rate_ecu", hourly_rate)],
                period,
            })?;
        }
        out.check(
            &format!("deployment `{}` costs.total", deployment.deployment_id),
            deployment.costs.total.0,
            dimensions_sum,
        );
        deployments_sum = add(deployments_sum, deployment.costs.total.0)?;
    }
    out.check("total_cost", body.total_cost.0, deployments_sum);
    Ok(out.finish())
}

/// v2 `costs/instances`: one record per instance × line item; the instance type is the service.
pub fn instances(
    org: &Organization<'_>,
    period: Period,
    body: &Instances,
) -> Result<ChunkData, String> {
    let usd_per_ecu = format_decimal(org.usd_per_ecu);
    let mut out = Builder::new(org, period, &usd_per_ecu);
    let mut instances_sum = Decimal::ZERO;
    for instance in &body.instances {
        let resource = ResourceRef {
            id: &instance.id,
            name: instance.name.as_deref(),
            kind: &instance.kind,
        };
        let items_sum =
            out.line_items(Some(resource), &instance.kind, &instance.product_line_items)?;
        out.check(
            &format!("instance `{}` total_ecu", instance.id),
            instance.total_ecu.0,
            items_sum,
        );
        instances_sum = add(instances_sum, instance.total_ecu.0)?;
    }
    out.check("total_ecu", body.total_ecu.0, instances_sum);
    Ok(out.finish())
}

/// v2 charts: one record per bucket × instance, charged over the bucket (clipped to the request); the
/// value's `type` is the instance type, the service, as in `costs/instances`.
pub fn charts(
    org: &Organization<'_>,
    requested: Period,
    bucketing: Bucketing,
    body: &Charts,
) -> Result<ChunkData, String> {
    let usd_per_ecu = format_decimal(org.usd_per_ecu);
    let mut out = Builder::new(org, requested, &usd_per_ecu);
    for bucket in &body.data {
        let start = epoch(bucket.timestamp)
            .ok_or_else(|| format!("data[].timestamp {} is not a time", bucket.timestamp))?;
        let unit = match bucketing {
            Bucketing::Daily => Period::day_of(start),
            Bucketing::Monthly => Period::month_of(start),
        };
        let Some(charged) = unit.intersection(&requested) else {
            out.warnings.push(DataQualityWarning {
                code: "PERIOD_MISMATCH",
                message: format!("a chart bucket at {start} lies outside the requested {requested}; its values are left out"),
            });
            continue;
        };
        for value in &bucket.values {
            let kind = value.kind.as_deref().unwrap_or("instance");
            let resource = ResourceRef {
                id: &value.id,
                name: value.name.as_deref(),
                kind,
            };
            out.push(Line {
                resource: Some(resource),
                service: kind,
                sku: None,
                dimension: None,
                ecu: value.value.0,
                quantity: None,
                rate: None,
                extensions: Vec::new(),
                period: charged,
            })?;
        }
    }
    Ok(out.finish())
}

/// Seconds or milliseconds since the epoch: the spec says only int64, and both are in use; a value
/// past the year 5138 in seconds is read as milliseconds.
fn epoch(timestamp: i64) -> Option<DateTime<Utc>> {
    if timestamp.abs() >= 100_000_000_000 {
        DateTime::from_timestamp_millis(timestamp)
    } else {
        DateTime::from_timestamp(timestamp, 0)
    }
}

fn add(sum: Decimal, value: Decimal) -> Result<Decimal, String> {
    sum.checked_add(value)
        .ok_or_else(|| "ECU sum out of range".to_string())
}

/// One record's worth of upstream facts.
struct Line<'a> {
    resource: Option<ResourceRef<'a>>,
    service: &'a str,
    sku: Option<&'a str>,
    dimension: Option<&'a str>,
    ecu: Decimal,
    /// The consumed quantity and its unit.
    quantity: Option<(Decimal, &'a str)>,
    rate: Option<Decimal>,
    extensions: Vec<(&'static str, &'a str)>,
    period: Period,
}

struct Builder<'a> {
    org: &'a Organization<'a>,
    /// The requested period: what line items and v1 dimensions are charged over.
    period: Period,
    /// The configured rate as the `x_usd_per_ecu` every record carries.
    usd_per_ecu: &'a str,
    records: ColumnsBuilder<'a>,
    warnings: Vec<DataQualityWarning>,
}

impl<'a> Builder<'a> {
    fn new(org: &'a Organization<'a>, period: Period, usd_per_ecu: &'a str) -> Self {
        Builder {
            org,
            period,
            usd_per_ecu,
            records: ColumnsBuilder::new(),
            warnings: Vec::new(),
        }
    }

    /// Records for line items; returns the sum of their `total_ecu`.
    fn line_items(
        &mut self,
        resource: Option<ResourceRef<'a>>,
        service: &'a str,
        items: &'a [LineItem],
    ) -> Result<Decimal, String> {
        let mut sum = Decimal::ZERO;
        for item in items {
            sum = add(sum, item.total_ecu.0)?;
            let mut extensions = vec![("x_line_item_name", item.name.as_str())];
            if let Some(category) = &item.category {
                extensions.push(("x_line_item_kind", category));
            }
            if let Some(formatted) = &item.rate.formatted_value {
                extensions.push(("x_rate_formatted", formatted));
            }
            self.push(Line {
                resource,
                service,
                sku: Some(&item.sku),
                dimension: Some(&item.kind),
                ecu: item.total_ecu.0,
                quantity: Some((item.quantity.value.0, &item.unit)),
                rate: Some(item.rate.value.0),
                extensions,
                period: self.period,
            })?;
        }
        Ok(sum)
    }

    fn push(&mut self, line: Line<'a>) -> Result<(), String> {
        let billed = self.usd(line.ecu)?;
        let list_unit_price = match line.rate {
            Some(rate) => Some(
                rate.checked_mul(self.org.usd_per_ecu)
                    .ok_or("rate out of range")?
                    .normalize(),
            ),
            None => None,
        };
        let mut extensions = line.extensions;
        extensions.push(("x_usd_per_ecu", self.usd_per_ecu));
        self.records.push(
            &RecordRef {
                provider: self.org.account.kind,
                provider_account: &self.org.account.id,
                billing_account: (
                    self.org.organization_id,
                    Some(&self.org.account.display_name),
                ),
                sub_account: line.resource.map(|r| (r.id, r.name)),
                resource: line.resource,
                service_name: line.service,
                sku_id: line.sku,
                charge_dimension: line.dimension,
                charge_category: if line.ecu.is_sign_negative() {
                    ChargeCategory::Credit
                } else {
                    ChargeCategory::Usage
                },
                charge_period: line.period,
                billed_cost: billed,
                original_amount: (line.ecu, "ECU"),
                consumed_quantity: line.quantity,
                list_unit_price: list_unit_price.map(|price| (price, Currency::USD)),
                invoice_id: None,
            },
            &extensions,
        );
        Ok(())
    }

    /// ECU to exact USD; an amount that would need rounding below a nano is refused.
    fn usd(&self, ecu: Decimal) -> Result<Money, String> {
        let usd = ecu
            .checked_mul(self.org.usd_per_ecu)
            .ok_or("amount out of range")?;
        Money::from_decimal(Currency::USD, usd).map_err(|e| {
            format!(
                "{} ECU at {} USD/ECU: {e}",
                format_decimal(ecu),
                format_decimal(self.org.usd_per_ecu)
            )
        })
    }

    fn check(&mut self, what: &str, stated: Decimal, parts: Decimal) {
        if stated != parts {
            self.warnings.push(DataQualityWarning {
                code: "TOTAL_MISMATCH",
                message: format!(
                    "{what} says {} ECU, its parts sum to {} ECU",
                    format_decimal(stated),
                    format_decimal(parts)
                ),
            });
        }
    }

    fn finish(self) -> ChunkData {
        ChunkData {
            records: self.records.finish(),
            warnings: self.warnings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ProviderAccountId, ProviderKind, Text};
    use proptest::prelude::*;
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

    fn instances_body(
        instance_total: &str,
        lines: &[String],
    ) -> crate::providers::elastic::wire::Instances {
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
            .records()
            .map(|r| r.billed_cost.nanos())
            .sum();
        assert_eq!(nanos, 300_000_000);
    }

    fn instances_of(body: &crate::providers::elastic::wire::Instances, rate: &str) -> ChunkData {
        instances(&org(&account(), rate), january(), body).unwrap()
    }

    #[test]
    fn a_four_decimal_rate_times_quantity_is_kept_exactly() {
        let body = instances_body("19.1808", &[line("es.compute", "19.1808", "24", "0.7992")]);
        let record = instances_of(&body, "1").records.record(0);
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
        let record = instances_of(&body, "0.97125").records.record(0);
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
                .records()
                .map(|r| r.billed_cost.nanos())
                .sum::<i128>(),
            5_000_000_000
        );
    }

    #[test]
    fn chart_timestamps_in_seconds_or_milliseconds_name_the_same_day() {
        for timestamp in ["1767225600", "1767225600000"] {
            let body: crate::providers::elastic::wire::Charts = serde_json::from_str(&format!(
                r#"{{"data":[{{"timestamp":{timestamp},"values":[{{"id":"d1","name":"Search","type":"deployment","value":1.25}}]}}]}}"#
            ))
            .unwrap();
            let normalized =
                charts(&org(&account(), "1"), january(), Bucketing::Daily, &body).unwrap();
            let record = &normalized.records.record(0);
            assert_eq!(record.charge_period, Period::day_of(january().start()));
            assert_eq!(record.billed_cost.nanos(), 1_250_000_000);
        }
    }

    #[test]
    fn v1_dimensions_become_charge_dimensions() {
        let body: crate::providers::elastic::wire::DeploymentCosts = serde_json::from_str(
            r#"{"total_cost":3.5,"deployments":[{"deployment_id":"d1","deployment_name":"Search","hourly_rate":0.01,
                "costs":{"total":3.5,"dimensions":[{"type":"capacity","cost":3},{"type":"data_out","cost":0.5}]},
                "period":{"start":"2026-01-01T00:00:00+00:00","end":"2026-02-01T00:00:00+00:00"}}]}"#,
        )
        .unwrap();
        let normalized = deployments(&org(&account(), "1"), january(), &body).unwrap();
        assert!(normalized.warnings.is_empty());
        let dimensions: Vec<_> = normalized
            .records
            .records()
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
            prop_assert_eq!(normalized.records.records().map(|r| r.billed_cost.nanos()).sum::<i128>(), expected);
            prop_assert_eq!(normalized.records.len(), items.len());
            prop_assert!(normalized.warnings.is_empty());
        }
    }
}
