//! Elastic answers into normalized records. Pure. ECU amounts are kept as sent (original amount, unit
//! "ECU") and converted exactly to USD at the account's configured rate; stated totals are checked
//! against their parts and a mismatch is a warning, never a correction.

use super::wire::{Charts, DeploymentCosts, Instances, Items, LineItem};
use crate::{
    domain::{
        ChargeCategory, CostRecord, Currency, DataQualityWarning, Money, Named, Period, Quantity,
        Resource, Text, UnitPrice, format_decimal,
    },
    providers::{AccountRef, Normalized},
};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

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
) -> Result<Normalized, String> {
    let mut out = Builder::new(org, period);
    let mut deployments_sum = Decimal::ZERO;
    for deployment in &body.deployments {
        let resource = Resource {
            id: Text::from(deployment.deployment_id.as_str()),
            name: Some(Text::from(deployment.deployment_name.as_str())),
            kind: Text::from("deployment"),
        };
        let mut dimensions_sum = Decimal::ZERO;
        for dimension in &deployment.costs.dimensions {
            dimensions_sum = add(dimensions_sum, dimension.cost.0)?;
            out.push(Line {
                resource: Some(&resource),
                service: "deployment",
                sku: None,
                dimension: Some(&dimension.kind),
                ecu: dimension.cost.0,
                quantity: None,
                rate: None,
                extensions: vec![(
                    "x_hourly_rate_ecu",
                    format_decimal(deployment.hourly_rate.0),
                )],
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

/// v2 `costs/instances`: one record per instance × line item.
pub fn instances(
    org: &Organization<'_>,
    period: Period,
    body: &Instances,
) -> Result<Normalized, String> {
    let mut out = Builder::new(org, period);
    let mut instances_sum = Decimal::ZERO;
    for instance in &body.instances {
        let resource = Resource {
            id: Text::from(instance.id.as_str()),
            name: instance.name.as_deref().map(Text::from),
            kind: Text::from(instance.kind.as_str()),
        };
        let items_sum = out.line_items(
            Some(&resource),
            &instance.kind,
            &instance.product_line_items,
        )?;
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

/// v2 `costs/items` (the whole organization) or `costs/instances/{id}/items` (one instance, given).
pub fn items(
    org: &Organization<'_>,
    period: Period,
    instance: Option<&str>,
    body: &Items,
) -> Result<Normalized, String> {
    let mut out = Builder::new(org, period);
    let resource = instance.map(|id| Resource {
        id: Text::from(id),
        name: None,
        kind: Text::from("instance"),
    });
    let mut products_sum = Decimal::ZERO;
    for product in &body.products {
        let items_sum = out.line_items(
            resource.as_ref(),
            &product.kind,
            &product.product_line_items,
        )?;
        out.check(
            &format!("product `{}` total_ecu", product.kind),
            product.total_ecu.0,
            items_sum,
        );
        products_sum = add(products_sum, product.total_ecu.0)?;
    }
    out.check("total_ecu", body.total_ecu.0, products_sum);
    Ok(out.finish())
}

/// v2 charts: one record per bucket × instance, charged over the bucket (clipped to the request).
/// v2 charts: one record per bucket × value, charged over the bucket (clipped to the request). For the
/// organization's chart each value is an instance; for one instance's chart (`instance` given) the
/// instance is the resource and each value one of its SKUs.
pub fn charts(
    org: &Organization<'_>,
    requested: Period,
    bucketing: Bucketing,
    instance: Option<&str>,
    body: &Charts,
) -> Result<Normalized, String> {
    let mut out = Builder::new(org, requested);
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
            let (resource, sku) = match instance {
                Some(id) => (
                    Resource {
                        id: Text::from(id),
                        name: None,
                        kind: Text::from("instance"),
                    },
                    Some(value.id.as_str()),
                ),
                None => (
                    Resource {
                        id: Text::from(value.id.as_str()),
                        name: value.name.as_deref().map(Text::from),
                        kind: Text::from(kind),
                    },
                    None,
                ),
            };
            out.push(Line {
                resource: Some(&resource),
                service: kind,
                sku,
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
    resource: Option<&'a Resource>,
    service: &'a str,
    sku: Option<&'a str>,
    dimension: Option<&'a str>,
    ecu: Decimal,
    quantity: Option<Quantity>,
    rate: Option<Decimal>,
    extensions: Vec<(&'static str, String)>,
    period: Period,
}

struct Builder<'a> {
    org: &'a Organization<'a>,
    /// The requested period: what line items and v1 dimensions are charged over.
    period: Period,
    billing_account: Named,
    ecu: Text,
    records: Vec<CostRecord>,
    warnings: Vec<DataQualityWarning>,
}

impl<'a> Builder<'a> {
    fn new(org: &'a Organization<'a>, period: Period) -> Self {
        Builder {
            org,
            period,
            billing_account: Named {
                id: Text::from(org.organization_id),
                name: Some(org.account.display_name.clone()),
            },
            ecu: Text::from("ECU"),
            records: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Records for line items; returns the sum of their `total_ecu`.
    fn line_items(
        &mut self,
        resource: Option<&Resource>,
        service: &str,
        items: &[LineItem],
    ) -> Result<Decimal, String> {
        let mut sum = Decimal::ZERO;
        for item in items {
            sum = add(sum, item.total_ecu.0)?;
            let mut extensions = vec![("x_line_item_name", item.name.clone())];
            if let Some(category) = &item.category {
                extensions.push(("x_line_item_kind", category.clone()));
            }
            if let Some(formatted) = &item.rate.formatted_value {
                extensions.push(("x_rate_formatted", formatted.clone()));
            }
            self.push(Line {
                resource,
                service,
                sku: Some(&item.sku),
                dimension: Some(&item.kind),
                ecu: item.total_ecu.0,
                quantity: Some(Quantity {
                    value: item.quantity.value.0,
                    unit: Text::from(item.unit.as_str()),
                }),
                rate: Some(item.rate.value.0),
                extensions,
                period: self.period,
            })?;
        }
        Ok(sum)
    }

    fn push(&mut self, line: Line<'_>) -> Result<(), String> {
        let billed = self.usd(line.ecu)?;
        let list_unit_price = match line.rate {
            Some(rate) => Some(UnitPrice {
                amount: rate
                    .checked_mul(self.org.usd_per_ecu)
                    .ok_or("rate out of range")?
                    .normalize(),
                currency: Currency::USD,
            }),
            None => None,
        };
        let mut extensions: BTreeMap<&'static str, Text> = line
            .extensions
            .into_iter()
            .map(|(k, v)| (k, Text::from(v)))
            .collect();
        extensions.insert(
            "x_usd_per_ecu",
            Text::from(format_decimal(self.org.usd_per_ecu)),
        );
        self.records.push(CostRecord {
            provider: self.org.account.kind,
            provider_account: self.org.account.id.clone(),
            billing_account: self.billing_account.clone(),
            sub_account: line.resource.map(|r| Named {
                id: r.id.clone(),
                name: r.name.clone(),
            }),
            resource: line.resource.cloned(),
            service_name: Text::from(line.service),
            sku_id: line.sku.map(Text::from),
            charge_dimension: line.dimension.map(Text::from),
            charge_category: if line.ecu.is_sign_negative() {
                ChargeCategory::Credit
            } else {
                ChargeCategory::Usage
            },
            charge_period: line.period,
            billed_cost: billed,
            original_amount: Quantity {
                value: line.ecu,
                unit: self.ecu.clone(),
            },
            consumed_quantity: line.quantity,
            list_unit_price,
            invoice_id: None,
            extensions,
        });
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

    fn finish(self) -> Normalized {
        Normalized {
            records: self.records,
            warnings: self.warnings,
        }
    }
}
