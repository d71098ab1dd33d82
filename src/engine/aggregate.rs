//! Pure aggregation of normalized records into report rows: ordered group keys, time buckets, exact sums.

use crate::domain::{
    CostFilter, CostQuery, Currency, Granularity, GroupBy, Money, MoneyError, NO_TEXT, Period,
    ProviderAccountId, Quantity, RecordColumns, Text, TextId,
};
use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet};

/// One value of a group key: the id, and the first display name seen for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub group_by: GroupBy,
    pub id: Option<Text>,
    pub display_name: Option<Text>,
}

/// One report row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub group_values: Vec<GroupValue>,
    pub period: Period,
    pub billed_cost: Money,
    /// Set when every record of the row has a quantity, all in one unit.
    pub consumed_quantity: Option<Quantity>,
    pub record_count: u64,
    /// A record of the row belongs to a period whose costs may still change.
    pub estimated: bool,
}

/// The rows, their total, and the records no bucket could hold without smearing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregation {
    pub rows: Vec<Row>,
    pub total: Money,
    pub record_count: u64,
    /// Records whose charge period is longer than one bucket, by account; they are in no row.
    pub unbucketed: BTreeMap<ProviderAccountId, u64>,
    /// What each account contributed to the rows.
    pub by_account: BTreeMap<ProviderAccountId, AccountTotal>,
}

/// One account's share of the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountTotal {
    pub billed_cost: Money,
    pub record_count: u64,
}

/// Groups and sums the records of `chunks` (each with whether its records are estimated) that the
/// query's filter keeps, as `query` asks. Totals are exact; a record that spans more than one bucket
/// is counted in `unbucketed` rather than split across buckets.
///
/// Keys are small integers: each chunk's texts are mapped once to ids shared by the whole answer, so a
/// record costs a few array lookups and one hash of integers, never a string comparison.
pub fn aggregate<'a>(
    chunks: impl IntoIterator<Item = (&'a RecordColumns, bool)>,
    query: &CostQuery,
) -> Result<Aggregation, MoneyError> {
    let mut texts = Interner::default();
    let mut buckets: Vec<Period> = Vec::new();
    let mut bucket_ids: FxHashMap<Period, u32> = FxHashMap::default();
    let mut rows: FxHashMap<RowKey, RowAccumulator> = FxHashMap::default();
    let mut accounts: BTreeMap<ProviderAccountId, AccountSums> = BTreeMap::new();
    let mut total_nanos: i128 = 0;
    let mut record_count = 0u64;
    for (chunk, estimated) in chunks {
        let mut global = vec![UNMAPPED; chunk.texts().len()];
        let keeps = ChunkFilter::new(chunk, &query.filter);
        let chunk_buckets: Vec<Option<u32>> = chunk
            .periods()
            .iter()
            .map(|period| {
                bucket_of(period, query).map(|bucket| {
                    *bucket_ids.entry(bucket).or_insert_with(|| {
                        buckets.push(bucket);
                        (buckets.len() - 1) as u32
                    })
                })
            })
            .collect();
        for index in 0..chunk.len() {
            if !keeps.keeps(index) {
                continue;
            }
            let currency = chunk.billed_currency(index);
            if currency != Currency::USD {
                return Err(MoneyError::CurrencyMismatch {
                    left: currency,
                    right: Currency::USD,
                });
            }
            let account = accounts.entry(chunk.account_of(index).clone()).or_default();
            let Some(bucket) = chunk_buckets[chunk.period_index(index)] else {
                account.unbucketed += 1;
                continue;
            };
            let mut key = RowKey {
                bucket,
                ids: [NO_TEXT; GroupBy::ALL.len()],
            };
            for (slot, group_by) in key.ids.iter_mut().zip(&query.group_by) {
                *slot = texts.map(chunk, &mut global, chunk.key(index, *group_by).0);
            }
            let consumed = chunk
                .consumed(index)
                .map(|(value, unit)| (value, texts.map(chunk, &mut global, unit)));
            let row = match rows.entry(key) {
                std::collections::hash_map::Entry::Occupied(row) => row.into_mut(),
                std::collections::hash_map::Entry::Vacant(slot) => {
                    let mut names = [NO_TEXT; GroupBy::ALL.len()];
                    for (name, group_by) in names.iter_mut().zip(&query.group_by) {
                        *name = texts.map(chunk, &mut global, chunk.key(index, *group_by).1);
                    }
                    slot.insert(RowAccumulator {
                        names,
                        billed_nanos: 0,
                        quantity: consumed.map(|(_, unit)| (Decimal::ZERO, unit)),
                        record_count: 0,
                        estimated: false,
                    })
                }
            };
            let nanos = chunk.billed_nanos(index);
            row.billed_nanos = row
                .billed_nanos
                .checked_add(nanos)
                .ok_or(MoneyError::Overflow)?;
            // A row has a quantity while every record of it has one, all in one unit.
            row.quantity = match (row.quantity, consumed) {
                (Some((sum, unit)), Some((value, same))) if unit == same => {
                    sum.checked_add(value).map(|sum| (sum, unit))
                }
                _ => None,
            };
            row.record_count += 1;
            row.estimated |= estimated;
            account.nanos = account
                .nanos
                .checked_add(nanos)
                .ok_or(MoneyError::Overflow)?;
            account.records += 1;
            total_nanos = total_nanos.checked_add(nanos).ok_or(MoneyError::Overflow)?;
            record_count += 1;
        }
    }
    let text = |id: u32| texts.text(id);
    let mut keyed: Vec<(RowKey, RowAccumulator)> = rows.into_iter().collect();
    // Buckets in time, then rows by their ids as texts (an absent id first): the order of the answer.
    keyed.sort_by(|(a, _), (b, _)| {
        buckets[a.bucket as usize]
            .start()
            .cmp(&buckets[b.bucket as usize].start())
            .then_with(|| {
                let ids = |key: &RowKey| -> Vec<Option<&Text>> {
                    key.ids[..query.group_by.len()]
                        .iter()
                        .map(|id| text(*id))
                        .collect()
                };
                ids(a).cmp(&ids(b))
            })
    });
    let rows = keyed
        .into_iter()
        .map(|(key, row)| Row {
            group_values: query
                .group_by
                .iter()
                .enumerate()
                .map(|(slot, group_by)| GroupValue {
                    group_by: *group_by,
                    id: text(key.ids[slot]).cloned(),
                    display_name: text(row.names[slot]).cloned(),
                })
                .collect(),
            period: buckets[key.bucket as usize],
            billed_cost: Money::from_nanos(Currency::USD, row.billed_nanos),
            consumed_quantity: row.quantity.and_then(|(value, unit)| {
                Some(Quantity {
                    value,
                    unit: text(unit)?.clone(),
                })
            }),
            record_count: row.record_count,
            estimated: row.estimated,
        })
        .collect();
    let unbucketed = accounts
        .iter()
        .filter(|(_, sums)| sums.unbucketed > 0)
        .map(|(id, sums)| (id.clone(), sums.unbucketed))
        .collect();
    let by_account = accounts
        .into_iter()
        .filter(|(_, sums)| sums.records > 0)
        .map(|(id, sums)| {
            (
                id,
                AccountTotal {
                    billed_cost: Money::from_nanos(Currency::USD, sums.nanos),
                    record_count: sums.records,
                },
            )
        })
        .collect();
    Ok(Aggregation {
        rows,
        total: Money::from_nanos(Currency::USD, total_nanos),
        record_count,
        unbucketed,
        by_account,
    })
}

/// A query's filter over one chunk: whether each text passes is decided once per chunk, so a record
/// costs three lookups.
pub struct ChunkFilter<'a> {
    chunk: &'a RecordColumns,
    services: Option<Vec<bool>>,
    sub_accounts: Option<Vec<bool>>,
    resources: Option<Vec<bool>>,
}

impl<'a> ChunkFilter<'a> {
    pub fn new(chunk: &'a RecordColumns, filter: &CostFilter) -> Self {
        let admits = |set: &BTreeSet<String>| -> Option<Vec<bool>> {
            (!set.is_empty()).then(|| chunk.texts().iter().map(|t| set.contains(&**t)).collect())
        };
        ChunkFilter {
            chunk,
            services: admits(&filter.services),
            sub_accounts: admits(&filter.sub_accounts),
            resources: admits(&filter.resources),
        }
    }

    /// Whether record `index` of the chunk is kept (as [`CostFilter::keeps`] says of a record).
    pub fn keeps(&self, index: usize) -> bool {
        let admitted = |mask: &Option<Vec<bool>>, id: TextId| match mask {
            None => true,
            Some(mask) => mask.get(id as usize).copied().unwrap_or(false),
        };
        admitted(&self.services, self.chunk.service(index))
            && admitted(&self.sub_accounts, self.chunk.sub_account(index))
            && admitted(&self.resources, self.chunk.resource(index))
    }
}

/// A chunk's text not yet mapped to an id of the answer.
const UNMAPPED: u32 = u32::MAX - 1;

/// The texts of one answer, each once, by id.
#[derive(Default)]
struct Interner {
    ids: FxHashMap<Text, u32>,
    texts: Vec<Text>,
}

impl Interner {
    /// The answer's id of `chunk`'s text `id`, through the chunk's own mapping `global`.
    fn map(&mut self, chunk: &RecordColumns, global: &mut [u32], id: TextId) -> u32 {
        let Some(slot) = global.get_mut(id as usize) else {
            return NO_TEXT;
        };
        if *slot == UNMAPPED {
            let text = &chunk.texts()[id as usize];
            *slot = match self.ids.get(text) {
                Some(known) => *known,
                None => {
                    let new = self.texts.len() as u32;
                    self.texts.push(text.clone());
                    self.ids.insert(text.clone(), new);
                    new
                }
            };
        }
        *slot
    }

    fn text(&self, id: u32) -> Option<&Text> {
        self.texts.get(id as usize)
    }
}

/// A row's place: its bucket and its ids, one per grouping dimension (the rest unused).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct RowKey {
    bucket: u32,
    ids: [u32; GroupBy::ALL.len()],
}

struct RowAccumulator {
    /// The first display name seen for each id.
    names: [u32; GroupBy::ALL.len()],
    billed_nanos: i128,
    /// The quantity's sum and unit, while every record has one in that unit.
    quantity: Option<(Decimal, u32)>,
    record_count: u64,
    estimated: bool,
}

#[derive(Default)]
struct AccountSums {
    nanos: i128,
    records: u64,
    unbucketed: u64,
}

/// The bucket that wholly holds a charge period; `None` when the period spans several buckets or runs
/// past the query's range (a month of costs is never counted in a query for half of it).
fn bucket_of(charge_period: &Period, query: &CostQuery) -> Option<Period> {
    let unit = match query.granularity {
        Granularity::None => query.period,
        Granularity::Daily => Period::day_of(charge_period.start()),
        Granularity::Monthly => Period::month_of(charge_period.start()),
    };
    let bucket = unit.intersection(&query.period)?;
    bucket.contains_period(charge_period).then_some(bucket)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record-by-record implementation the integer-keyed one replaced, kept as the reference it
    /// must agree with.
    mod reference {
        use super::super::bucket_of;
        use crate::domain::{
            CostQuery, CostRecord, Currency, GroupBy, Money, MoneyError, ProviderAccountId,
            Quantity, Text,
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
                GroupBy::ChargeCategory => {
                    (Some(Text::from(record.charge_category.as_str())), None)
                }
            }
        }
    }

    use crate::domain::{ChargeCategory, CostFilter, CostRecord, Named, ProviderKind, Resource};
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
    fn aggregate_records(
        records: &[CostRecord],
        query: &CostQuery,
    ) -> Result<Aggregation, MoneyError> {
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
            aggregate_records(&records, &query(Granularity::Daily, vec![GroupBy::Service]))
                .unwrap();
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

    /// A record of random shape: every dimension drawn from a few values, some absent.
    fn any_record() -> impl Strategy<Value = CostRecord> {
        let text =
            |values: &'static [&'static str]| proptest::sample::select(values).prop_map(Text::from);
        let optional = move |values: &'static [&'static str]| proptest::option::of(text(values));
        (
            (0usize..3, text(&["b1", "b2"]), optional(&["Billing One"])),
            proptest::option::of((text(&["p1", "p2", "p3"]), optional(&["Project"]))),
            proptest::option::of((
                text(&["r1", "r2"]),
                optional(&["Res"]),
                text(&["cluster", "vm"]),
            )),
            (
                text(&["s1", "s2", "s3"]),
                optional(&["k1", "k2"]),
                optional(&["d1", "d2"]),
            ),
            (0usize..5, 0i64..40, prop_oneof![Just(1i64), Just(31)]),
            // Now and then an amount too large for i64 nanos, or exactly the column's marker.
            prop_oneof![
                8 => -10i128.pow(12)..10i128.pow(12),
                1 => Just(i128::from(i64::MIN)),
                1 => -10i128.pow(20)..10i128.pow(20),
            ],
            proptest::option::of((0i64..1000, text(&["hours", "GB"]))),
            (
                optional(&["inv-1"]),
                proptest::option::of(text(&["rule-a", "rule-b"])),
            ),
        )
            .prop_map(
                |(
                    (account, billing, billing_name),
                    sub,
                    resource,
                    (service, sku, dimension),
                    (category, day, days),
                    nanos,
                    quantity,
                    (invoice, rule),
                )| {
                    let accounts = ["team-a", "team-b", "elastic-c"];
                    CostRecord {
                        provider: if account == 2 {
                            ProviderKind::Elastic
                        } else {
                            ProviderKind::TeamBilling
                        },
                        provider_account: ProviderAccountId::parse(accounts[account]).unwrap(),
                        billing_account: Named {
                            id: billing,
                            name: billing_name,
                        },
                        sub_account: sub.map(|(id, name)| Named { id, name }),
                        resource: resource.map(|(id, name, kind)| Resource { id, name, kind }),
                        service_name: service,
                        sku_id: sku,
                        charge_dimension: dimension,
                        charge_category: ChargeCategory::ALL[category],
                        charge_period: Period::new(at(day), at(day + days)).unwrap(),
                        billed_cost: Money::from_nanos(Currency::USD, nanos),
                        original_amount: Quantity {
                            value: Decimal::from_i128_with_scale(nanos, 9),
                            unit: Text::from("USD"),
                        },
                        consumed_quantity: quantity.map(|(value, unit)| Quantity {
                            value: Decimal::from(value),
                            unit,
                        }),
                        list_unit_price: (nanos % 3 == 0).then(|| crate::domain::UnitPrice {
                            amount: Decimal::new(125, 3),
                            currency: Currency::USD,
                        }),
                        invoice_id: invoice,
                        extensions: rule
                            .map(|r| BTreeMap::from([("x_pricing_rule_id", r)]))
                            .unwrap_or_default(),
                    }
                },
            )
    }

    fn any_query() -> impl Strategy<Value = CostQuery> {
        let subset = |values: &'static [&'static str]| {
            proptest::sample::subsequence(values, 0..=values.len())
                .prop_map(|chosen| chosen.into_iter().map(String::from).collect())
        };
        (
            proptest::sample::subsequence(GroupBy::ALL.to_vec(), 0..=GroupBy::ALL.len())
                .prop_shuffle(),
            prop_oneof![
                Just(Granularity::None),
                Just(Granularity::Daily),
                Just(Granularity::Monthly)
            ],
            (subset(&["s1", "s3"]), subset(&["p2"]), subset(&["r1"])),
            (0i64..10, 20i64..75),
        )
            .prop_map(
                |(group_by, granularity, (services, sub_accounts, resources), (from, to))| {
                    CostQuery {
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
                    }
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
            prop_assert_eq!(columns.records().collect::<Vec<_>>(), records);
        }
    }
}
