//! The FOCUS mapping and both writers on hand-made records: values, exactness, pieces, and a
//! Parquet file read back by the parquet crate's own reader.

use super::*;
use crate::domain::{
    ChargeCategory, Currency, Money, Named, Period, ProviderAccountId, ProviderKind, Quantity,
    Resource, Text, UnitPrice,
};
use chrono::{TimeZone, Utc};
use rust_decimal::Decimal;
use std::{collections::BTreeMap, str::FromStr};

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).expect("a decimal")
}

fn period(day: u32, days: u32) -> Period {
    let start = Utc
        .with_ymd_and_hms(2026, 1, day, 0, 0, 0)
        .single()
        .expect("a day");
    Period::new(start, start + chrono::Duration::days(i64::from(days))).expect("a period")
}

fn team_record(nanos: i128) -> CostRecord {
    CostRecord {
        provider: ProviderKind::TeamBilling,
        provider_account: ProviderAccountId::parse("team-acme").expect("an id"),
        billing_account: Named {
            id: Text::from("team_acme"),
            name: Some(Text::from("Acme")),
        },
        sub_account: None,
        resource: None,
        service_name: Text::from("inference"),
        sku_id: None,
        charge_dimension: Some(Text::from("input_tokens")),
        charge_category: ChargeCategory::Usage,
        charge_period: period(3, 1),
        billed_cost: Money::from_nanos(Currency::USD, nanos),
        original_amount: Quantity {
            value: Decimal::from_i128_with_scale(nanos, 0),
            unit: Text::from("nanodollar"),
        },
        consumed_quantity: Some(Quantity {
            value: dec("1000"),
            unit: Text::from("input_tokens"),
        }),
        list_unit_price: Some(UnitPrice {
            amount: Decimal::from_i128_with_scale(nanos / 1000, 9),
            currency: Currency::USD,
        }),
        invoice_id: None,
        extensions: BTreeMap::from([("x_pricing_rule_id", Text::from("rule0"))]),
    }
}

/// An Elastic v1 dimension: ECU only, at 1.25 USD per ECU.
fn elastic_ecu_only(ecu: &str) -> CostRecord {
    let ecu = dec(ecu);
    CostRecord {
        provider: ProviderKind::Elastic,
        provider_account: ProviderAccountId::parse("elastic-prod").expect("an id"),
        billing_account: Named {
            id: Text::from("1234567890"),
            name: Some(Text::from("Prod")),
        },
        sub_account: Some(Named {
            id: Text::from("d1"),
            name: Some(Text::from("search")),
        }),
        resource: Some(Resource {
            id: Text::from("d1"),
            name: Some(Text::from("search")),
            kind: Text::from("deployment"),
        }),
        service_name: Text::from("deployment"),
        sku_id: None,
        charge_dimension: Some(Text::from("capacity")),
        charge_category: if ecu.is_sign_negative() {
            ChargeCategory::Credit
        } else {
            ChargeCategory::Usage
        },
        charge_period: period(1, 31),
        billed_cost: Money::from_decimal(Currency::USD, ecu * dec("1.25")).expect("exact"),
        original_amount: Quantity {
            value: ecu,
            unit: Text::from("ECU"),
        },
        consumed_quantity: None,
        list_unit_price: None,
        invoice_id: None,
        extensions: BTreeMap::from([("x_usd_per_ecu", Text::from("1.25"))]),
    }
}

fn cells(row: &FocusRow) -> BTreeMap<&'static str, String> {
    columns()
        .enumerate()
        .map(|(index, (name, _))| {
            let text = match cell(row, index) {
                Cell::Null => "null".to_string(),
                Cell::Decimal(d) => crate::domain::format_decimal(d),
                Cell::DateTime(at) => at.to_rfc3339(),
                Cell::Text(t) => t.to_string(),
                Cell::Bool(b) => b.to_string(),
            };
            (name, text)
        })
        .collect()
}

#[test]
fn a_unit_priced_record_fills_pricing_from_its_quantity_and_price() {
    let row = FocusRow::new(team_record(3_500_000), false).expect("maps");
    let c = cells(&row);
    assert_eq!(c["BilledCost"], "0.0035");
    assert_eq!(c["EffectiveCost"], "0.0035");
    assert_eq!(c["ContractedCost"], "0.0035");
    assert_eq!(c["ListUnitPrice"], "0.0000035");
    assert_eq!(c["PricingQuantity"], "1000");
    assert_eq!(c["ListCost"], "0.0035", "unit price × quantity");
    assert_eq!(c["PricingUnit"], "input tokens");
    assert_eq!(c["ConsumedUnit"], "input tokens");
    assert_eq!(c["PricingCurrency"], "USD");
    assert_eq!(c["SkuId"], "inference/input_tokens");
    assert_eq!(c["ServiceCategory"], "AI and Machine Learning");
    assert_eq!(c["ProviderName"], "Catalyzed");
    assert_eq!(c["ServiceProviderName"], "Catalyzed");
    assert_eq!(c["HostProviderName"], "null");
    assert_eq!(c["BillingPeriodStart"], "2026-01-01T00:00:00+00:00");
    assert_eq!(c["BillingPeriodEnd"], "2026-02-01T00:00:00+00:00");
    assert_eq!(c["ChargePeriodStart"], "2026-01-03T00:00:00+00:00");
    assert_eq!(c["SubAccountId"], "null");
    assert_eq!(c["SubAccountType"], "null");
    assert_eq!(c["x_pricing_rule_id"], "rule0");
    assert_eq!(c["x_original_amount"], "3500000");
    assert_eq!(c["x_original_unit"], "nanodollar");
    assert_eq!(c["x_estimated"], "false");
}

#[test]
fn an_ecu_amount_is_priced_in_ecu_at_the_accounts_rate() {
    let row = FocusRow::new(elastic_ecu_only("19.1808"), true).expect("maps");
    let c = cells(&row);
    assert_eq!(c["BilledCost"], "23.976");
    assert_eq!(c["PricingCurrency"], "ECU");
    assert_eq!(c["PricingQuantity"], "19.1808");
    assert_eq!(c["PricingUnit"], "ECU");
    assert_eq!(c["ListUnitPrice"], "1.25");
    assert_eq!(c["PricingCurrencyListUnitPrice"], "1");
    assert_eq!(c["PricingCurrencyEffectiveCost"], "19.1808");
    assert_eq!(c["ListCost"], "23.976");
    assert_eq!(c["SubAccountType"], "Deployment");
    assert_eq!(c["ChargeDescription"], "deployment capacity");
    assert_eq!(c["x_estimated"], "true");
}

#[test]
fn a_credit_is_not_priced_and_every_cost_is_its_billed_cost() {
    let row = FocusRow::new(elastic_ecu_only("-2"), false).expect("maps");
    let c = cells(&row);
    assert_eq!(c["ChargeCategory"], "Credit");
    assert_eq!(c["BilledCost"], "-2.5");
    assert_eq!(c["ListCost"], "-2.5");
    assert_eq!(c["EffectiveCost"], "-2.5");
    for unpriced in [
        "PricingQuantity",
        "PricingUnit",
        "ListUnitPrice",
        "SkuId",
        "ConsumedQuantity",
    ] {
        assert_eq!(c[unpriced], "null", "{unpriced}");
    }
    assert_eq!(c["ChargeFrequency"], "One-Time");
}

fn export(
    records: Vec<CostRecord>,
    format: FileFormat,
    rows_per_group: usize,
) -> (Vec<Vec<u8>>, Vec<u64>, u64) {
    let plan = ExportPlan {
        format,
        rows_per_group,
    };
    let mut pieces = Vec::new();
    let mut progress = Vec::new();
    let rows = write_file(
        records.into_iter().map(|r| (r, false)),
        &plan,
        &mut |bytes, rows| {
            pieces.push(bytes);
            progress.push(rows);
            Ok(())
        },
    )
    .expect("writes");
    (pieces, progress, rows)
}

#[test]
fn csv_has_a_header_and_one_exact_line_per_record_sent_a_group_at_a_time() {
    let records: Vec<CostRecord> = (1..=5).map(|i| team_record(i * 1_000_000_001)).collect();
    let (pieces, progress, rows) = export(records, FileFormat::FocusCsv, 2);
    assert_eq!(rows, 5);
    assert_eq!(
        progress,
        vec![2, 4, 5],
        "a piece per group, rows complete after each"
    );
    let text = String::from_utf8(pieces.concat()).expect("utf-8");
    let mut reader = ::csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("a header")
        .iter()
        .map(String::from)
        .collect();
    let fixed: Vec<&str> = columns().map(|(name, _)| name).collect();
    assert_eq!(
        header, fixed,
        "the fixed columns, whatever extensions the rows carry"
    );
    assert_eq!(
        header.len(),
        COLUMNS.len() + crate::domain::EXTENSION_NAMES.len()
    );
    let billed = header
        .iter()
        .position(|h| h == "BilledCost")
        .expect("BilledCost");
    let amounts: Vec<String> = reader
        .records()
        .map(|r| r.expect("a row")[billed].to_string())
        .collect();
    assert_eq!(
        amounts,
        [
            "1.000000001",
            "2.000000002",
            "3.000000003",
            "4.000000004",
            "5.000000005"
        ]
    );
}

#[test]
fn a_file_without_records_still_has_its_header() {
    let (pieces, _, rows) = export(Vec::new(), FileFormat::FocusCsv, 10);
    assert_eq!(rows, 0);
    let text = String::from_utf8(pieces.concat()).expect("utf-8");
    assert!(text.starts_with("BilledCost,EffectiveCost,"), "{text}");
    assert_eq!(text.lines().count(), 1);
}

#[test]
fn a_group_larger_than_a_piece_is_sent_in_pieces_and_counted_once_complete() {
    let mut sent = Vec::new();
    send_in_pieces(
        vec![7u8; MAX_PIECE_BYTES * 2 + 1],
        10,
        20,
        &mut |bytes, rows| {
            sent.push((bytes.len(), rows));
            Ok(())
        },
    )
    .expect("sends");
    assert_eq!(
        sent,
        vec![(MAX_PIECE_BYTES, 10), (MAX_PIECE_BYTES, 10), (1, 20)]
    );
}

#[test]
fn parquet_holds_exact_decimals_in_one_row_group_per_group() {
    use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use arrow_array::{Array, Decimal128Array};
    let records: Vec<CostRecord> = (1..=5).map(|i| team_record(i * 1_000_000_001)).collect();
    let (pieces, progress, rows) = export(records, FileFormat::FocusParquet, 2);
    assert_eq!(rows, 5);
    assert_eq!(progress.last(), Some(&5));
    let file = bytes::Bytes::from(pieces.concat());
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("a parquet file");
    assert_eq!(builder.metadata().num_row_groups(), 3);
    let mut billed = Vec::new();
    for batch in builder.build().expect("a reader") {
        let batch = batch.expect("a batch");
        let column = batch
            .column_by_name("BilledCost")
            .expect("BilledCost")
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .expect("decimal");
        assert_eq!(column.scale(), 18);
        billed.extend((0..column.len()).map(|i| column.value(i)));
    }
    let expected: Vec<i128> = (1..=5).map(|i| i * 1_000_000_001 * 1_000_000_000).collect();
    assert_eq!(billed, expected, "nanos × 10^9 at scale 18: exact");
}

#[test]
fn a_value_parquet_cannot_hold_exactly_fails_the_export_instead_of_rounding() {
    let mut record = team_record(1);
    record.consumed_quantity = Some(Quantity {
        value: dec("0.0000000000000000001"),
        unit: Text::from("tokens"),
    });
    let plan = ExportPlan {
        format: FileFormat::FocusParquet,
        rows_per_group: 10,
    };
    let result = write_file(std::iter::once((record, false)), &plan, &mut |_, _| Ok(()));
    assert!(
        matches!(result, Err(ExportError::Inexact { .. })),
        "{result:?}"
    );
}
