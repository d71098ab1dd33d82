//! Team billing answers into normalized records: one record per operation × dimension. Pure.

use super::wire::CostResponse;
use crate::{
    domain::{
        ChargeCategory, CostRecord, Currency, DataQualityWarning, Money, Named, Period, Quantity,
        Text, UnitPrice, format_decimal,
    },
    providers::AccountRef,
};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// Records and the checks that failed.
#[derive(Debug)]
pub struct Normalized {
    pub records: Vec<CostRecord>,
    pub warnings: Vec<DataQualityWarning>,
}

/// Normalizes the answer to a request for `team_id` over `requested`. A field that cannot be held
/// exactly is an error; totals that do not add up are warnings, and the parts are kept as sent.
pub fn normalize(
    account: &AccountRef,
    team_id: &str,
    requested: Period,
    body: &CostResponse,
) -> Result<Normalized, String> {
    let mut warnings = Vec::new();
    let period = Period::new(
        parse_time("startDate", &body.start_date)?,
        parse_time("endDate", &body.end_date)?,
    )
    .map_err(|e| format!("startDate/endDate: {e}"))?;
    if period != requested {
        warnings.push(DataQualityWarning {
            code: "PERIOD_MISMATCH",
            message: format!("asked for {requested}, the upstream answered for {period}"),
        });
    }
    if body.team_id != team_id {
        warnings.push(DataQualityWarning {
            code: "ACCOUNT_MISMATCH",
            message: format!(
                "asked for team `{team_id}`, the upstream answered for `{}`",
                body.team_id
            ),
        });
    }
    let billing_account = Named {
        id: Text::from(body.team_id.as_str()),
        name: Some(account.display_name.clone()),
    };
    let pricing_sheet = Text::from(body.pricing_sheet_id.as_str());
    let mut records = Vec::new();
    let mut operations_sum: i128 = 0;
    for operation in &body.operation_costs {
        let service = Text::from(operation.operation_type.as_str());
        let mut dimensions_sum: i128 = 0;
        for dimension in &operation.dimensions {
            let field = |name: &str| {
                format!(
                    "operationCosts[{}].dimensions[{}].{name}",
                    operation.operation_type, dimension.dimension
                )
            };
            let nanos = whole_nanos(&field("costNanodollars"), dimension.cost_nanodollars.0)?;
            check_usd(
                &mut warnings,
                &field("costUsd"),
                dimension.cost_usd.0,
                nanos,
            );
            dimensions_sum = dimensions_sum.checked_add(nanos).ok_or("cost overflow")?;
            let charge_dimension = Text::from(dimension.dimension.as_str());
            records.push(CostRecord {
                provider: account.kind,
                provider_account: account.id.clone(),
                billing_account: billing_account.clone(),
                sub_account: None,
                resource: None,
                service_name: service.clone(),
                sku_id: None,
                charge_dimension: Some(charge_dimension.clone()),
                charge_category: ChargeCategory::Usage,
                charge_period: period,
                billed_cost: Money::from_nanos(Currency::USD, nanos),
                original_amount: Quantity {
                    value: dimension.cost_nanodollars.0,
                    unit: Text::from("nanodollar"),
                },
                consumed_quantity: Some(Quantity {
                    value: dimension.units.0,
                    unit: charge_dimension,
                }),
                list_unit_price: Some(UnitPrice {
                    amount: nanos_to_units(
                        &field("unitPriceNanodollars"),
                        dimension.unit_price_nanodollars.0,
                    )?,
                    currency: Currency::USD,
                }),
                invoice_id: None,
                extensions: BTreeMap::from([
                    ("x_pricing_sheet_id", pricing_sheet.clone()),
                    (
                        "x_pricing_rule_id",
                        Text::from(dimension.pricing_rule_id.as_str()),
                    ),
                ]),
            });
        }
        let stated = whole_nanos(
            &format!(
                "operationCosts[{}].totalCostNanodollars",
                operation.operation_type
            ),
            operation.total_cost_nanodollars.0,
        )?;
        check_usd(
            &mut warnings,
            &format!("operationCosts[{}].totalCostUsd", operation.operation_type),
            operation.total_cost_usd.0,
            stated,
        );
        if stated != dimensions_sum {
            warnings.push(DataQualityWarning {
                code: "TOTAL_MISMATCH",
                message: format!(
                    "operation `{}`: dimensions sum to {dimensions_sum} nanodollars, its total says {stated}",
                    operation.operation_type
                ),
            });
        }
        operations_sum = operations_sum.checked_add(stated).ok_or("cost overflow")?;
    }
    let stated_total = whole_nanos("totalCostNanodollars", body.total_cost_nanodollars.0)?;
    check_usd(
        &mut warnings,
        "totalCostUsd",
        body.total_cost_usd.0,
        stated_total,
    );
    if stated_total != operations_sum {
        warnings.push(DataQualityWarning {
            code: "TOTAL_MISMATCH",
            message: format!(
                "operation totals sum to {operations_sum} nanodollars, the grand total says {stated_total}"
            ),
        });
    }
    Ok(Normalized { records, warnings })
}

fn parse_time(field: &str, text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            format!(
                "{field}: `{}` is not an RFC 3339 date-time",
                text.chars().take(40).collect::<String>()
            )
        })
}

/// Nanodollar fields are whole numbers by contract; a fraction is not silently dropped.
fn whole_nanos(field: &str, value: Decimal) -> Result<i128, String> {
    if !value.fract().is_zero() {
        return Err(format!(
            "{field}: {value} is not a whole number of nanodollars"
        ));
    }
    i128::try_from(value.trunc()).map_err(|_| format!("{field}: {value} is out of range"))
}

/// Nanodollars as exact dollars.
fn nanos_to_units(field: &str, nanos: Decimal) -> Result<Decimal, String> {
    let mut units = nanos;
    units
        .set_scale(nanos.scale() + 9)
        .map_err(|_| format!("{field}: {nanos} has too many decimal places"))?;
    Ok(units.normalize())
}

/// The USD fields are float renderings of the nanodollar ones; they must agree to float precision.
fn check_usd(warnings: &mut Vec<DataQualityWarning>, field: &str, usd: Decimal, nanos: i128) {
    let Some(usd_in_nanos) = usd.checked_mul(Decimal::from(1_000_000_000)) else {
        return;
    };
    let Ok(nanos_decimal) = Decimal::try_from_i128_with_scale(nanos, 0) else {
        return;
    };
    // A double holds about 16 significant digits; anything closer than that is the same amount.
    let tolerance = Decimal::ONE + nanos_decimal.abs() / Decimal::from(1_000_000_000_000_i64);
    if (usd_in_nanos - nanos_decimal).abs() > tolerance {
        warnings.push(DataQualityWarning {
            code: "USD_MISMATCH",
            message: format!(
                "{field} is {} USD but the nanodollar amount is {nanos}",
                format_decimal(usd)
            ),
        });
    }
}
