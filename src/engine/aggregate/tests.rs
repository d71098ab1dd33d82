//! Aggregation against its reference: fixed cases, and random records, chunks and queries compared
//! with the record-by-record implementation the integer-keyed one replaced.
use super::*;

/// The record-by-record implementation the integer-keyed one replaced, kept as the reference it
/// must agree with.
mod reference {
    use super::super::bucket_of;
    use crate::domain::{
        CostQuery, CostRecord, Currency, GroupBy, Money, MoneyError, ProviderAccountId, Quantity,
        Text,
    };
    use crate::engine::aggregate::{AccountTotal, Aggregation, GroupValue, Row};
    use chrono::{DateTime, Utc};
    use rust_decimal::Decimal;
    use std::collections::{BTreeMap, HashMap};

    enum QuantitySum {
        Same(Quantity),
        Missing,
    }

    struct RowAccumulator {
        period: crate::domain::Period,
        names: Vec<Option<Text>>,
        billed_nanos: i128,
        quantity: QuantitySum,
        record_count: u64,
        estimated: bool,
    }

    /// Groups and sums `records` (each with whether it is estimated) as `query` asks. Totals are exact; a
    /// record that spans more than one bucket is counted in `unbucketed` rather than split across buckets.
    pub fn aggregate<'a>(
        records: impl IntoIterator<Item = (&'a CostRecord, bool)>,
        query: &CostQuery,
    ) -> Result<Aggregation, MoneyError> {
        // Bucket start → group ids → row. A reused scratch key means a record that joins an existing row
        // allocates nothing.
        let mut rows: BTreeMap<DateTime<Utc>, HashMap<Vec<Option<Text>>, RowAccumulator>> =
            BTreeMap::new();
        let mut scratch: Vec<Option<Text>> = Vec::with_capacity(query.group_by.len());
        let mut unbucketed: BTreeMap<ProviderAccountId, u64> = BTreeMap::new();
        let mut by_account: BTreeMap<ProviderAccountId, (i128, u64)> = BTreeMap::new();
        let mut total_nanos: i128 = 0;
        let mut record_count = 0u64;
        for (record, estimated) in records {
            if record.billed_cost.currency() != Currency::USD {
                return Err(MoneyError::CurrencyMismatch {
                    left: record.billed_cost.currency(),
                    right: Currency::USD,
                });
            }
            let Some(bucket) = bucket_of(&record.charge_period, query) else {
                *unbucketed
                    .entry(record.provider_account.clone())
                    .or_default() += 1;
                continue;
            };
            scratch.clear();
            scratch.extend(query.group_by.iter().map(|g| key_of(record, *g).0));
            let bucket_rows = rows.entry(bucket.start()).or_default();
            if !bucket_rows.contains_key(scratch.as_slice()) {
                let row = RowAccumulator {
                    period: bucket,
                    names: query
                        .group_by
                        .iter()
                        .map(|g| key_of(record, *g).1)
                        .collect(),
                    billed_nanos: 0,
                    quantity: match &record.consumed_quantity {
                        Some(q) => QuantitySum::Same(Quantity {
                            value: Decimal::ZERO,
                            unit: q.unit.clone(),
                        }),
                        None => QuantitySum::Missing,
                    },
                    record_count: 0,
                    estimated: false,
                };
                bucket_rows.insert(scratch.clone(), row);
            }
            let Some(row) = bucket_rows.get_mut(scratch.as_slice()) else {
                continue;
            };
            row.billed_nanos = row
                .billed_nanos
                .checked_add(record.billed_cost.nanos())
                .ok_or(MoneyError::Overflow)?;
            row.quantity = match (
                std::mem::replace(&mut row.quantity, QuantitySum::Missing),
                &record.consumed_quantity,
            ) {
                (QuantitySum::Same(sum), Some(q)) if sum.unit == q.unit => {
                    match sum.value.checked_add(q.value) {
                        Some(value) => QuantitySum::Same(Quantity {
                            value,
                            unit: sum.unit,
                        }),
                        None => QuantitySum::Missing,
                    }
                }
                _ => QuantitySum::Missing,
            };
            row.record_count += 1;
            row.estimated |= estimated;
            let account = by_account
                .entry(record.provider_account.clone())
                .or_default();
            account.0 = account
                .0
                .checked_add(record.billed_cost.nanos())
                .ok_or(MoneyError::Overflow)?;
            account.1 += 1;
            total_nanos = total_nanos
                .checked_add(record.billed_cost.nanos())
                .ok_or(MoneyError::Overflow)?;
            record_count += 1;
        }
        let rows = rows
            .into_values()
            .flat_map(|bucket_rows| {
                let mut keyed: Vec<(Vec<Option<Text>>, RowAccumulator)> =
                    bucket_rows.into_iter().collect();
                keyed.sort_by(|a, b| a.0.cmp(&b.0));
                keyed
            })
            .map(|(ids, acc)| Row {
                group_values: query
                    .group_by
                    .iter()
                    .zip(ids)
                    .zip(acc.names)
                    .map(|((group_by, id), display_name)| GroupValue {
                        group_by: *group_by,
                        id,
                        display_name,
                    })
                    .collect(),
                period: acc.period,
                billed_cost: Money::from_nanos(Currency::USD, acc.billed_nanos),
                consumed_quantity: match acc.quantity {
                    QuantitySum::Same(q) => Some(q),
                    QuantitySum::Missing => None,
                },
                record_count: acc.record_count,
                estimated: acc.estimated,
            })
            .collect();
        Ok(Aggregation {
            rows,
            total: Money::from_nanos(Currency::USD, total_nanos),
            record_count,
            unbucketed,
            by_account: by_account
                .into_iter()
                .map(|(id, (nanos, record_count))| {
                    let billed_cost = Money::from_nanos(Currency::USD, nanos);
                    (
                        id,
                        AccountTotal {
                            billed_cost,
                            record_count,
                        },
                    )
                })
                .collect(),
        })
    }

    /// The id and display name of one dimension of a record.
    fn key_of(record: &CostRecord, group_by: GroupBy) -> (Option<Text>, Option<Text>) {
        match group_by {
            GroupBy::Provider => (Some(Text::from(record.provider.as_str())), None),
            GroupBy::BillingAccount => (
                Some(record.billing_account.id.clone()),
                record.billing_account.name.clone(),
            ),
            GroupBy::SubAccount => record
                .sub_account
                .as_ref()
                .map_or((None, None), |s| (Some(s.id.clone()), s.name.clone())),
            GroupBy::Resource => record
                .resource
                .as_ref()
                .map_or((None, None), |r| (Some(r.id.clone()), r.name.clone())),
            GroupBy::Service => (Some(record.service_name.clone()), None),
            GroupBy::Sku => (record.sku_id.clone(), None),
            GroupBy::ChargeDimension => (record.charge_dimension.clone(), None),
            GroupBy::ChargeCategory => (Some(Text::from(record.charge_category.as_str())), None),
        }
    }
}

use crate::domain::{
    ChargeCategory, CostFilter, CostRecord, Named, ProviderKind, testing::any_record,
};
use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn at(day: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap() + Duration::days(day)
}

fn record(day: i64, days: i64, service: &str, nanos: i128) -> CostRecord {
    CostRecord {
        provider: ProviderKind::TeamBilling,
        provider_account: ProviderAccountId::parse("team-a").unwrap(),
        billing_account: Named {
            id: Text::from("t1"),
            name: Some(Text::from("Team 1")),
        },
        sub_account: None,
        resource: None,
        service_name: Text::from(service),
        sku_id: None,
        charge_dimension: Some(Text::from("tokens")),
        charge_category: ChargeCategory::Usage,
        charge_period: Period::new(at(day), at(day + days)).unwrap(),
        billed_cost: Money::from_nanos(Currency::USD, nanos),
        original_amount: Quantity {
            value: Decimal::from(nanos as i64),
            unit: Text::from("nanodollar"),
        },
        consumed_quantity: Some(Quantity {
            value: Decimal::from(2),
            unit: Text::from("tokens"),
        }),
        list_unit_price: None,
        invoice_id: None,
        extensions: BTreeMap::new(),
    }
}

/// The records as one cached chunk, aggregated.
fn aggregate_records(records: &[CostRecord], query: &CostQuery) -> Result<Aggregation, MoneyError> {
    let columns = RecordColumns::from_records(records.to_vec());
    aggregate([(&columns, false)], query)
}

fn query(granularity: Granularity, group_by: Vec<GroupBy>) -> CostQuery {
    CostQuery {
        period: Period::new(at(0), at(31)).unwrap(),
        filter: CostFilter::default(),
        group_by,
        granularity,
        max_staleness: None,
    }
}

#[test]
fn rows_group_by_service_per_day_in_a_stable_order() {
    let records = [
        record(1, 1, "b", 5),
        record(0, 1, "b", 7),
        record(0, 1, "a", 1),
        record(0, 1, "b", 3),
    ];
    let result =
        aggregate_records(&records, &query(Granularity::Daily, vec![GroupBy::Service])).unwrap();
    let summary: Vec<(i64, Option<&str>, i128, u64)> = result
        .rows
        .iter()
        .map(|r| {
            (
                (r.period.start() - at(0)).num_days(),
                r.group_values[0].id.as_deref(),
                r.billed_cost.nanos(),
                r.record_count,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (0, Some("a"), 1, 1),
            (0, Some("b"), 10, 2),
            (1, Some("b"), 5, 1)
        ]
    );
    assert_eq!(result.total.nanos(), 16);
    assert_eq!(
        result.rows[1].consumed_quantity.as_ref().unwrap().value,
        Decimal::from(4)
    );
}

#[test]
fn a_month_record_is_never_smeared_over_days() {
    let records = [record(0, 31, "a", 100), record(3, 1, "a", 1)];
    let result = aggregate_records(&records, &query(Granularity::Daily, vec![])).unwrap();
    assert_eq!(result.total.nanos(), 1);
    assert_eq!(result.unbucketed.values().sum::<u64>(), 1);
    let monthly = aggregate_records(&records, &query(Granularity::Monthly, vec![])).unwrap();
    assert_eq!(monthly.total.nanos(), 101);
    assert!(monthly.unbucketed.is_empty());
}

#[test]
fn a_record_running_past_the_range_is_never_counted_whole() {
    let mut half_month = query(Granularity::None, vec![]);
    half_month.period = Period::new(at(0), at(15)).unwrap();
    let records = [record(0, 31, "a", 100), record(3, 1, "a", 1)];
    let result = aggregate_records(&records, &half_month).unwrap();
    assert_eq!(result.total.nanos(), 1);
    assert_eq!(result.unbucketed.values().sum::<u64>(), 1);
}

#[test]
fn mixed_units_leave_the_quantity_unset() {
    let mut other = record(0, 1, "a", 1);
    other.consumed_quantity = Some(Quantity {
        value: Decimal::ONE,
        unit: Text::from("GB"),
    });
    let result = aggregate_records(
        &[record(0, 1, "a", 1), other],
        &query(Granularity::None, vec![]),
    )
    .unwrap();
    assert_eq!(result.rows[0].consumed_quantity, None);
}

fn any_query() -> impl Strategy<Value = CostQuery> {
    let subset = |values: &'static [&'static str]| {
        proptest::sample::subsequence(values, 0..=values.len())
            .prop_map(|chosen| chosen.into_iter().map(String::from).collect())
    };
    (
        proptest::sample::subsequence(GroupBy::ALL.to_vec(), 0..=GroupBy::ALL.len()).prop_shuffle(),
        prop_oneof![
            Just(Granularity::None),
            Just(Granularity::Daily),
            Just(Granularity::Monthly)
        ],
        (subset(&["s1", "s3"]), subset(&["p2"]), subset(&["r1"])),
        (0i64..10, 20i64..75),
    )
        .prop_map(
            |(group_by, granularity, (services, sub_accounts, resources), (from, to))| CostQuery {
                period: Period::new(at(from), at(to)).unwrap(),
                filter: CostFilter {
                    services,
                    sub_accounts,
                    resources,
                    ..CostFilter::default()
                },
                group_by,
                granularity,
                max_staleness: None,
            },
        )
}

proptest! {
    #[test]
    fn grouping_never_loses_or_invents_a_nano(
        parts in proptest::collection::vec((0i64..30, 0usize..3, -10i128.pow(15)..10i128.pow(15)), 0..300),
        granularity in prop_oneof![Just(Granularity::None), Just(Granularity::Daily), Just(Granularity::Monthly)],
    ) {
        let services = ["x", "y", "z"];
        let records: Vec<CostRecord> = parts.iter().map(|(d, s, n)| record(*d, 1, services[*s], *n)).collect();
        let result = aggregate_records(&records, &query(granularity, vec![GroupBy::Service, GroupBy::BillingAccount])).unwrap();
        let expected: i128 = parts.iter().map(|p| p.2).sum();
        prop_assert_eq!(result.total.nanos(), expected);
        prop_assert_eq!(result.rows.iter().map(|r| r.billed_cost.nanos()).sum::<i128>(), expected);
        prop_assert_eq!(result.rows.iter().map(|r| r.record_count).sum::<u64>(), records.len() as u64);
    }

    #[test]
    fn integer_keys_answer_exactly_as_the_record_by_record_reference(
        records in proptest::collection::vec(any_record(), 0..200),
        cuts in proptest::collection::vec(0usize..200, 0..4),
        query in any_query(),
    ) {
        // The records as several chunks, as the cache would hold them.
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(records.len())).collect();
        cuts.push(0);
        cuts.push(records.len());
        cuts.sort_unstable();
        let chunks: Vec<RecordColumns> = cuts
            .windows(2)
            .map(|w| RecordColumns::from_records(records[w[0]..w[1]].to_vec()))
            .collect();
        let estimated = |i: usize| i % 2 == 1;
        let fast = aggregate(chunks.iter().enumerate().map(|(i, c)| (c, estimated(i))), &query);
        let kept: Vec<(CostRecord, bool)> = cuts
            .windows(2)
            .enumerate()
            .flat_map(|(i, w)| records[w[0]..w[1]].iter().map(move |r| (r.clone(), estimated(i))))
            .filter(|(r, _)| query.filter.keeps(r))
            .collect();
        let expected = reference::aggregate(kept.iter().map(|(r, e)| (r, *e)), &query);
        prop_assert_eq!(fast, expected);
    }

    #[test]
    fn columns_give_back_every_record_as_it_went_in(
        records in proptest::collection::vec(any_record(), 0..100),
    ) {
        let columns = RecordColumns::from_records(records.clone());
        prop_assert_eq!(columns.len(), records.len());
        let back: Vec<CostRecord> = columns.records().collect();
        // Debug too: `Decimal`'s equality ignores its scale and a zero's sign, its text does not.
        prop_assert_eq!(format!("{back:?}"), format!("{records:?}"));
        let one_by_one: Vec<CostRecord> = (0..columns.len()).map(|i| columns.record(i)).collect();
        prop_assert_eq!(format!("{one_by_one:?}"), format!("{records:?}"));
        prop_assert_eq!(back, records);
    }
}

/// A quantity as a chunk may hold it: small or wide mantissas, scales that agree or differ, zeros
/// of either sign, values that cancel.
fn any_held_decimal() -> impl Strategy<Value = HeldDecimal> {
    prop_oneof![
        4 => (-3i64..4, 0u32..3).prop_map(|(mantissa, scale)| HeldDecimal::Parts { mantissa, scale }),
        2 => (any::<i64>(), 0u32..29).prop_map(|(mantissa, scale)| HeldDecimal::Parts { mantissa, scale }),
        1 => (any::<u32>(), any::<u32>(), any::<u32>(), any::<bool>(), 0u32..29)
            .prop_map(|(lo, mid, hi, negative, scale)| {
                HeldDecimal::Whole(Decimal::from_parts(lo, mid, hi, negative, scale))
            }),
        1 => Just(HeldDecimal::Whole(-Decimal::ZERO)),
    ]
}

proptest! {
    #[test]
    fn quantities_add_as_decimals_do(values in proptest::collection::vec(any_held_decimal(), 0..40)) {
        let mut decimal = Some(Decimal::ZERO);
        let mut parts = Some(QuantitySum::ZERO);
        for value in values {
            decimal = decimal.and_then(|sum| sum.checked_add(value.to_decimal()));
            parts = parts.and_then(|sum| sum.add(value));
            // Debug: `Decimal`'s equality ignores its scale and a zero's sign, its text does not.
            prop_assert_eq!(
                format!("{:?}", parts.map(QuantitySum::to_decimal)),
                format!("{decimal:?}")
            );
        }
    }

    #[test]
    fn packed_keys_answer_as_wide_keys(
        records in proptest::collection::vec(any_record(), 0..200),
        cut in 0usize..200,
        query in any_query(),
    ) {
        let mut query = query;
        query.group_by.truncate(PackedKey::DIMENSIONS);
        let cut = cut.min(records.len());
        let chunks = [
            RecordColumns::from_records(records[..cut].to_vec()),
            RecordColumns::from_records(records[cut..].to_vec()),
        ];
        let chunks = || chunks.iter().enumerate().map(|(i, c)| (c, i == 1));
        let packed = aggregate_keyed::<PackedKey>(&mut chunks(), &query);
        let wide = aggregate_keyed::<WideKey>(&mut chunks(), &query);
        prop_assert_eq!(format!("{packed:?}"), format!("{wide:?}"));
    }
}
