//! Team billing answers into normalized records: one record per operation × dimension. Pure.

use super::wire::CostResponse;
use crate::{
    domain::{
        ChargeCategory, ColumnsBuilder, Currency, DataQualityWarning, Money, Period, RecordRef,
        format_decimal,
    },
    providers::{AccountRef, ChunkData},
};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

/// Normalizes the answer to a request for `team_id` over `requested`. A field that cannot be held
/// exactly is an error; totals that do not add up are warnings, and the parts are kept as sent.
pub fn normalize(
    account: &AccountRef,
    team_id: &str,
    requested: Period,
    body: &CostResponse,
) -> Result<ChunkData, String> {
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
    let mut records = ColumnsBuilder::new();
    records.reserve(
        body.operation_costs
            .iter()
            .map(|o| o.dimensions.len())
            .sum(),
    );
    // One record and its extensions, only the fields that differ rewritten per dimension: built
    // afresh for each, its many small fields were written and read back at once, and the reads
    // waited on the writes.
    let mut record = RecordRef {
        provider: account.kind,
        provider_account: &account.id,
        billing_account: (&body.team_id, Some(&account.display_name)),
        sub_account: None,
        resource: None,
        service_name: "",
        sku_id: None,
        charge_dimension: None,
        charge_category: ChargeCategory::Usage,
        charge_period: period,
        billed_cost: Money::from_nanos(Currency::USD, 0),
        original_amount: (Decimal::ZERO, "nanodollar"),
        consumed_quantity: None,
        list_unit_price: Some((Decimal::ZERO, Currency::USD)),
        invoice_id: None,
    };
    let mut extensions = [
        ("x_pricing_rule_id", ""),
        ("x_pricing_sheet_id", body.pricing_sheet_id.as_str()),
    ];
    let mut operations_sum: i128 = 0;
    for operation in &body.operation_costs {
        let mut dimensions_sum: i128 = 0;
        record.service_name = &operation.operation_type;
        for dimension in &operation.dimensions {
            // Field names are only spelled out when something is wrong with the field.
            let field = |name: &'static str| {
                move || {
                    format!(
                        "operationCosts[{}].dimensions[{}].{name}",
                        operation.operation_type, dimension.dimension
                    )
                }
            };
            let nanos = whole_nanos(field("costNanodollars"), dimension.cost_nanodollars.0)?;
            check_usd(&mut warnings, field("costUsd"), dimension.cost_usd.0, nanos);
            dimensions_sum = dimensions_sum.checked_add(nanos).ok_or("cost overflow")?;
            let unit_price = nanos_to_units(
                field("unitPriceNanodollars"),
                dimension.unit_price_nanodollars.0,
            )?;
            record.charge_dimension = Some(&dimension.dimension);
            record.billed_cost = Money::from_nanos(Currency::USD, nanos);
            record.original_amount.0 = dimension.cost_nanodollars.0;
            record.consumed_quantity = Some((dimension.units.0, &dimension.dimension));
            // The price alone: its currency written anew was read back before the write was done.
            if let Some((price, _)) = &mut record.list_unit_price {
                *price = unit_price;
            }
            extensions[0].1 = &dimension.pricing_rule_id;
            records.push(&record, &extensions);
        }
        let operation_field = |name: &'static str| {
            move || format!("operationCosts[{}].{name}", operation.operation_type)
        };
        let stated = whole_nanos(
            operation_field("totalCostNanodollars"),
            operation.total_cost_nanodollars.0,
        )?;
        check_usd(
            &mut warnings,
            operation_field("totalCostUsd"),
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
    let top_field = |name: &'static str| move || name.to_string();
    let stated_total = whole_nanos(
        top_field("totalCostNanodollars"),
        body.total_cost_nanodollars.0,
    )?;
    check_usd(
        &mut warnings,
        top_field("totalCostUsd"),
        body.total_cost_usd.0,
        stated_total,
    );
    if stated_total != operations_sum {
        warnings.push(DataQualityWarning {
            code: "TOTAL_MISMATCH",
            message: format!("operation totals sum to {operations_sum} nanodollars, the grand total says {stated_total}"),
        });
    }
    Ok(ChunkData {
        records: records.finish(),
        warnings,
    })
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
fn whole_nanos(field: impl Fn() -> String, value: Decimal) -> Result<i128, String> {
    // The common case, a whole number as sent: its mantissa is the value.
    if value.scale() == 0 {
        return Ok(value.mantissa());
    }
    if !value.fract().is_zero() {
        return Err(format!(
            "{}: {value} is not a whole number of nanodollars",
            field()
        ));
    }
    i128::try_from(value.trunc()).map_err(|_| format!("{}: {value} is out of range", field()))
}

/// Nanodollars as exact dollars.
fn nanos_to_units(field: impl Fn() -> String, nanos: Decimal) -> Result<Decimal, String> {
    // The common case, a whole amount within 64 bits: its trailing zeros stripped in a `u64`, as
    // `Decimal::normalize` would (a `u128` division is a library call).
    if nanos.scale() == 0
        && let Ok(mut magnitude) = u64::try_from(nanos.mantissa().unsigned_abs())
    {
        if magnitude == 0 {
            return Ok(Decimal::ZERO);
        }
        let mut scale = 9;
        while scale > 0 && magnitude % 10 == 0 {
            magnitude /= 10;
            scale -= 1;
        }
        return Ok(Decimal::from_parts(
            magnitude as u32,
            (magnitude >> 32) as u32,
            0,
            nanos.is_sign_negative(),
            scale,
        ));
    }
    let mut units = nanos;
    units
        .set_scale(nanos.scale() + 9)
        .map_err(|_| format!("{}: {nanos} has too many decimal places", field()))?;
    Ok(units.normalize())
}

/// A trillionth of `nanos`' magnitude, exactly: the quotient is always representable (a 96-bit
/// mantissa at scale 12), so it is the mantissa at that scale, without a division.
fn tolerance_beyond_one(nanos: Decimal) -> Decimal {
    let mut tolerance = nanos.abs();
    // A whole number has scale 0, so this never fails; were it to, the division says the same.
    match tolerance.set_scale(12) {
        Ok(()) => tolerance,
        Err(_) => nanos.abs() / Decimal::from(1_000_000_000_000_i64),
    }
}

/// The USD fields are float renderings of the nanodollar ones; they must agree to float precision.
fn check_usd(
    warnings: &mut Vec<DataQualityWarning>,
    field: impl Fn() -> String,
    usd: Decimal,
    nanos: i128,
) {
    let disagrees = usd_disagrees_in_integers(usd, nanos)
        .unwrap_or_else(|| usd_disagrees_in_decimals(usd, nanos));
    if disagrees {
        warnings.push(DataQualityWarning {
            code: "USD_MISMATCH",
            message: format!(
                "{} is {} USD but the nanodollar amount is {nanos}",
                field(),
                format_decimal(usd)
            ),
        });
    }
}

/// Whether `usd` and `nanos` differ by more than float precision. An amount beyond a decimal's range
/// in nanos is not checked.
fn usd_disagrees_in_decimals(usd: Decimal, nanos: i128) -> bool {
    let Some(usd_in_nanos) = usd.checked_mul(Decimal::from(1_000_000_000)) else {
        return false;
    };
    let Ok(nanos_decimal) = Decimal::try_from_i128_with_scale(nanos, 0) else {
        return false;
    };
    // A double holds about 16 significant digits; anything closer than that is the same amount.
    let tolerance = Decimal::ONE + tolerance_beyond_one(nanos_decimal);
    match usd_in_nanos.checked_sub(nanos_decimal) {
        Some(difference) => difference.abs() > tolerance,
        // A difference beyond a decimal's range is beyond any tolerance.
        None => true,
    }
}

/// Every power of ten a decimal's scale can ask for.
const POWERS_OF_TEN: [u128; 29] = {
    let mut powers = [1u128; 29];
    let mut at = 1;
    while at < powers.len() {
        powers[at] = powers[at - 1] * 10;
        at += 1;
    }
    powers
};

/// [`usd_disagrees_in_decimals`] in integers, when each of its steps is exact (every intermediate
/// fits a decimal's 96-bit mantissa), so the answer is the same; `None` when one might round. The
/// decimal steps cost more than the rest of a record's normalizing; magnitudes in `u128` with powers
/// from a table, since signed `i128` overflow checks and `checked_pow` cost most of what is left.
fn usd_disagrees_in_integers(usd: Decimal, nanos: i128) -> Option<bool> {
    const MANTISSA: u128 = 1 << 96;
    let scale = usd.scale() as usize;
    let power = *POWERS_OF_TEN.get(scale)?;
    // The decimal steps' values, each as a mantissa: `usd` in nanos and `nanos` at `usd`'s scale,
    // their difference, and the tolerance at scale 12. A mantissa is below 2^96, so `usd` in nanos
    // is below 2^126.
    let usd_in_nanos = usd.mantissa() * 1_000_000_000;
    let nanos_magnitude = nanos.unsigned_abs();
    let nanos_scaled = nanos_magnitude.checked_mul(power)?;
    let tolerance = nanos_magnitude + 1_000_000_000_000;
    if usd_in_nanos.unsigned_abs() >= MANTISSA || nanos_scaled >= MANTISSA || tolerance >= MANTISSA
    {
        return None;
    }
    // Both below 2^96, so neither the sign nor the difference overflows.
    let nanos_scaled = if nanos < 0 {
        -(nanos_scaled as i128)
    } else {
        nanos_scaled as i128
    };
    let difference = (usd_in_nanos - nanos_scaled).unsigned_abs();
    if difference >= MANTISSA {
        return None;
    }
    // difference / 10^scale > tolerance / 10^12, the smaller power divided out of both sides; a
    // product past `u128` is past the other side, which is below 2^96.
    Some(match scale.checked_sub(12) {
        None => difference
            .checked_mul(POWERS_OF_TEN[12 - scale])
            .is_none_or(|difference| difference > tolerance),
        Some(over) => tolerance
            .checked_mul(POWERS_OF_TEN[over])
            .is_some_and(|tolerance| difference > tolerance),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ProviderAccountId, ProviderKind, Text};
    use proptest::prelude::*;
    use serde_json::json;

    fn account() -> AccountRef {
        AccountRef {
            id: ProviderAccountId::parse("team-a").unwrap(),
            kind: ProviderKind::TeamBilling,
            display_name: Text::from("Team A"),
        }
    }

    fn january() -> Period {
        Period::new(
            DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            DateTime::parse_from_rfc3339("2026-02-01T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
        )
        .unwrap()
    }

    /// A body as the document describes it, with `skew` added to the first operation's stated total.
    fn body(operations: &[Vec<i64>], skew: i64) -> Vec<u8> {
        let operation_costs: Vec<serde_json::Value> = operations
            .iter()
            .enumerate()
            .map(|(i, dims)| {
                let stated: i64 = dims.iter().sum::<i64>() + if i == 0 { skew } else { 0 };
                json!({
                    "operationType": format!("op{i}"),
                    "dimensions": dims.iter().enumerate().map(|(d, cost)| json!({
                        "dimension": format!("dim{d}"),
                        "units": 3,
                        "unitPriceNanodollars": 7,
                        "costNanodollars": cost,
                        "costUsd": *cost as f64 / 1e9,
                        "pricingRuleId": format!("rule{d}"),
                    })).collect::<Vec<_>>(),
                    "totalCostNanodollars": stated,
                    "totalCostUsd": stated as f64 / 1e9,
                })
            })
            .collect();
        let grand: i64 = operations.iter().flatten().sum::<i64>() + skew;
        serde_json::to_vec(&json!({
            "teamId": "t1", "pricingSheetId": "ps", "startDate": "2026-01-01T00:00:00Z",
            "endDate": "2026-02-01T00:00:00.000Z", "operationCosts": operation_costs,
            "totalCostNanodollars": grand, "totalCostUsd": grand as f64 / 1e9,
            "usageRecordCount": 12, "calculatedAt": "2026-02-01T00:00:05Z",
        }))
        .unwrap()
    }

    fn parse(bytes: &[u8]) -> CostResponse {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn each_dimension_becomes_one_exact_record() {
        let normalized = normalize(
            &account(),
            "t1",
            january(),
            &parse(&body(&[vec![1_500_000_001, 2]], 0)),
        )
        .unwrap();
        assert!(normalized.warnings.is_empty(), "{:?}", normalized.warnings);
        let first = &normalized.records.record(0);
        assert_eq!(first.billed_cost.nanos(), 1_500_000_001);
        assert_eq!(first.original_amount.unit.as_ref(), "nanodollar");
        assert_eq!(first.service_name.as_ref(), "op0");
        assert_eq!(first.charge_dimension.as_deref(), Some("dim0"));
        assert_eq!(
            first.consumed_quantity.as_ref().unwrap().value,
            Decimal::from(3)
        );
        assert_eq!(
            first.list_unit_price.as_ref().unwrap().amount,
            Decimal::new(7, 9)
        );
        assert_eq!(first.extensions["x_pricing_rule_id"].as_ref(), "rule0");
        assert_eq!(first.billing_account.name.as_deref(), Some("Team A"));
        assert_eq!(first.charge_period, january());
    }

    #[test]
    fn a_fractional_nanodollar_is_refused_not_rounded() {
        let text = String::from_utf8(body(&[vec![5]], 0))
            .unwrap()
            .replace("\"costNanodollars\":5", "\"costNanodollars\":5.5");
        let problem = normalize(&account(), "t1", january(), &parse(text.as_bytes())).unwrap_err();
        assert!(problem.contains("not a whole number"), "{problem}");
    }

    #[test]
    fn a_different_period_or_team_in_the_answer_is_a_warning() {
        let text = String::from_utf8(body(&[vec![5]], 0))
            .unwrap()
            .replace("\"teamId\":\"t1\"", "\"teamId\":\"t2\"");
        let normalized = normalize(&account(), "t1", january(), &parse(text.as_bytes())).unwrap();
        assert_eq!(
            normalized
                .warnings
                .iter()
                .map(|w| w.code)
                .collect::<Vec<_>>(),
            ["ACCOUNT_MISMATCH"]
        );
    }

    #[test]
    fn small_amounts_are_checked_in_integers_on_both_sides_of_the_tolerance() {
        let usd = Decimal::new(99_099, 9);
        assert_eq!(usd_disagrees_in_integers(usd, 99_099), Some(false));
        assert_eq!(usd_disagrees_in_integers(usd, 99_100), Some(false));
        assert_eq!(usd_disagrees_in_integers(usd, 99_101), Some(true));
        assert_eq!(usd_disagrees_in_integers(-usd, 99_099), Some(true));
        // A cent written at scales 2 to 20 (past 18, a smaller amount: `i64` ends there), and the
        // widest `i64` amounts: the integer path answers each.
        for scale in 0..=20 {
            let usd = Decimal::new(10i64.pow(scale.min(18)), scale + 2);
            assert!(usd_disagrees_in_integers(usd, 0).is_some(), "{usd}");
        }
        assert!(
            usd_disagrees_in_integers(
                Decimal::from(i64::MAX / 1_000_000_000),
                i128::from(i64::MAX)
            )
            .is_some()
        );
        assert!(!usd_disagrees_in_decimals(usd, 99_100));
        assert!(usd_disagrees_in_decimals(usd, 99_101));
    }

    /// A decimal of any mantissa and a scale below `scales`.
    fn any_decimal(scales: u32) -> impl Strategy<Value = Decimal> {
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<bool>(),
            0..scales,
        )
            .prop_map(|(lo, mid, hi, negative, scale)| {
                Decimal::from_parts(lo, mid, hi, negative, scale)
            })
    }

    proptest! {
        #[test]
        fn usd_is_checked_in_integers_as_in_decimals(
            usd in prop_oneof![
                any_decimal(29),
                (any::<i64>(), 0u32..20).prop_map(|(m, s)| Decimal::new(m, s)),
            ],
            near in -3i128..3,
            far in prop_oneof![any::<i64>().prop_map(i128::from), any::<i128>(), any::<i128>().prop_map(|n| n >> 30)],
            choice in 0..3,
        ) {
            // Amounts on both sides of the tolerance, and anywhere.
            let close = usd.checked_mul(Decimal::from(1_000_000_000)).unwrap_or_default().trunc();
            let nanos = match choice {
                0 => i128::try_from(close).unwrap_or(0) + near,
                1 => i128::try_from(close).unwrap_or(0) + near * (i128::try_from(close).unwrap_or(0) / 1_000_000_000_000),
                _ => far,
            };
            if let Some(integers) = usd_disagrees_in_integers(usd, nanos) {
                prop_assert_eq!(integers, usd_disagrees_in_decimals(usd, nanos));
            }
        }

        #[test]
        fn a_unit_price_reads_as_the_slow_path_read_it(
            nanos in prop_oneof![
                any_decimal(20),
                (any::<i64>(), 0u32..3).prop_map(|(m, s)| Decimal::new(m, s)),
                (-1000i64..1000, 0u32..12).prop_map(|(m, zeros)| Decimal::new(m * 10i64.pow(zeros), 0)),
                Just(Decimal::ZERO),
                Just(-Decimal::ZERO),
                Just(Decimal::new(0, 3)),
            ],
        ) {
            let mut slow = nanos;
            let slow = slow.set_scale(nanos.scale() + 9).map(|()| slow.normalize()).ok();
            let fast = nanos_to_units(String::new, nanos).ok();
            // Debug: `Decimal`'s equality ignores its scale, its text does not.
            prop_assert_eq!(format!("{fast:?}"), format!("{slow:?}"));
        }

        #[test]
        fn the_tolerance_is_the_division_it_replaced(
            lo in any::<u32>(), mid in any::<u32>(), hi in any::<u32>(), negative in any::<bool>(),
        ) {
            let nanos = Decimal::from_parts(lo, mid, hi, negative, 0);
            let divided = nanos.abs() / Decimal::from(1_000_000_000_000_i64);
            let tolerance = tolerance_beyond_one(nanos);
            prop_assert_eq!(tolerance, divided);
            prop_assert_eq!(Decimal::ONE + tolerance, Decimal::ONE + divided);
        }

        #[test]
        fn a_whole_number_reads_as_the_slow_path_read_it(
            lo in any::<u32>(), mid in any::<u32>(), hi in any::<u32>(), negative in any::<bool>(),
            scale in 0u32..4,
        ) {
            let value = Decimal::from_parts(lo, mid, hi, negative, scale);
            let slow = if value.fract().is_zero() { i128::try_from(value.trunc()).ok() } else { None };
            prop_assert_eq!(whole_nanos(String::new, value).ok(), slow);
        }

        #[test]
        fn normalization_never_loses_or_invents_a_nano(
            operations in proptest::collection::vec(proptest::collection::vec(0i64..4_000_000_000_000, 0..5), 0..6),
            skew in prop_oneof![Just(0i64), -1000i64..1000],
        ) {
            let normalized = normalize(&account(), "t1", january(), &parse(&body(&operations, skew))).unwrap();
            let sent: i128 = operations.iter().flatten().map(|c| i128::from(*c)).sum();
            let kept: i128 = normalized.records.records().map(|r| r.billed_cost.nanos()).sum();
            prop_assert_eq!(kept, sent);
            prop_assert_eq!(normalized.records.len(), operations.iter().map(Vec::len).sum::<usize>());
            let mismatches = normalized.warnings.iter().filter(|w| w.code == "TOTAL_MISMATCH").count();
            // The skew sits in the first operation's total, or in the grand total when there is none.
            prop_assert_eq!(mismatches, usize::from(skew != 0));
            prop_assert!(normalized.warnings.iter().all(|w| w.code == "TOTAL_MISMATCH"), "{:?}", normalized.warnings);
        }
    }
}
