//! Pure aggregation of normalized records into report rows: ordered group keys, time buckets, exact sums.

use crate::domain::{
    CostFilter, CostQuery, Currency, Granularity, GroupBy, HeldDecimal, Money, MoneyError, NO_TEXT,
    Period, ProviderAccountId, Quantity, RecordColumns, Text, TextId,
};
use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One value of a group key: the id, and the first display name seen for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupValue {
    pub group_by: GroupBy,
    pub id: Option<Text>,
    pub display_name: Option<Text>,
}

/// One report row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountTotal {
    pub billed_cost: Money,
    pub record_count: u64,
}

/// Groups and sums the records of `chunks` (each with whether its records are estimated) that the
/// query's filter keeps, as `query` asks. Totals are exact; a record that spans more than one bucket
/// is counted in `unbucketed` rather than split across buckets.
///
/// Keys are small integers: each chunk's texts are mapped once to ids shared by the whole answer, so a
/// record costs a few array lookups and one hash of integers, never a string comparison. A key of at
/// most three dimensions is two words with its bucket.
pub fn aggregate<'a>(
    chunks: impl IntoIterator<Item = (&'a RecordColumns, bool)>,
    query: &CostQuery,
) -> Result<Aggregation, MoneyError> {
    // The chunks as a trait object: the loop is compiled here, once, not in each caller's crate
    // (where the columns' reads could not be inlined).
    let mut chunks = chunks.into_iter();
    if query.group_by.len() <= PackedKey::DIMENSIONS {
        aggregate_keyed::<PackedKey>(&mut chunks, query)
    } else {
        aggregate_keyed::<WideKey>(&mut chunks, query)
    }
}

type Chunks<'c, 'a> = &'c mut dyn Iterator<Item = (&'a RecordColumns, bool)>;

/// [`aggregate`] with rows keyed by `K`.
fn aggregate_keyed<K: RowKey>(
    chunks: Chunks<'_, '_>,
    query: &CostQuery,
) -> Result<Aggregation, MoneyError> {
    let mut texts = Interner::default();
    let mut buckets: Vec<Period> = Vec::new();
    let mut bucket_ids: FxHashMap<Period, u32> = FxHashMap::default();
    // Each row's place in `sums`: the map's entries stay small, and a chunk's records, which come
    // in the order its rows were made, add to them in order.
    let mut rows: FxHashMap<K, u32> = FxHashMap::default();
    let mut sums: Vec<RowSums> = Vec::new();
    // Apart from the sums each record adds to, written once per row: its key and display names.
    let mut row_keys: Vec<(K, Ids)> = Vec::new();
    let mut accounts: BTreeMap<ProviderAccountId, AccountSums> = BTreeMap::new();
    let mut total_nanos: i128 = 0;
    let mut record_count = 0u64;
    for (chunk, estimated) in chunks {
        let mut global = vec![UNMAPPED; chunk.texts().len()];
        let keeps = ChunkFilter::new(chunk, &query.filter);
        // The chunk's few accounts, looked up once rather than per record.
        let mut chunk_accounts: Vec<AccountSums> =
            chunk.accounts().map(|_| AccountSums::default()).collect();
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
        // A dimension with one id for the whole chunk (its team, its day's SKU) is mapped once.
        let mut chunk_ids: Ids = [NO_TEXT; GroupBy::ALL.len()];
        // The others, in an array: most chunks are a day of ten records, and an allocation each
        // would cost about what their records do.
        let mut varying = [(0, chunk.key_ids(GroupBy::Provider)); GroupBy::ALL.len()];
        let mut varying_count = 0;
        for (slot, group_by) in query.group_by.iter().take(GroupBy::ALL.len()).enumerate() {
            let ids = chunk.key_ids(*group_by);
            if !ids.is_constant() {
                varying[varying_count] = (slot, ids);
                varying_count += 1;
            } else if !chunk.is_empty() {
                chunk_ids[slot] = texts.map(chunk, &mut global, ids.get(0));
            }
        }
        let all_usd = chunk.currencies().iter().all(|c| *c == Currency::USD);
        for index in 0..chunk.len() {
            if !keeps.keeps(index) {
                continue;
            }
            if !all_usd {
                let currency = chunk.billed_currency(index);
                if currency != Currency::USD {
                    return Err(MoneyError::CurrencyMismatch {
                        left: currency,
                        right: Currency::USD,
                    });
                }
            }
            let account = &mut chunk_accounts[chunk.account_index(index)];
            let Some(bucket) = chunk_buckets[chunk.period_index(index)] else {
                account.unbucketed += 1;
                continue;
            };
            let mut ids = chunk_ids;
            for (slot, column) in &varying[..varying_count] {
                ids[*slot] = texts.map(chunk, &mut global, column.get(index));
            }
            // Read as plain integers (a record without a quantity has no unit, which maps to none):
            // a tuple of them built here and copied into the row cost more than the sums.
            let unit = texts.map(chunk, &mut global, chunk.consumed_unit(index));
            let key = K::new(bucket, &ids);
            let at = *rows.entry(key).or_insert_with(|| {
                let mut names = [NO_TEXT; GroupBy::ALL.len()];
                for (name, group_by) in names.iter_mut().zip(&query.group_by) {
                    *name = texts.map(chunk, &mut global, chunk.key(index, *group_by).1);
                }
                row_keys.push((key, names));
                sums.push(RowSums {
                    billed_nanos: 0,
                    quantity: QuantitySum::ZERO,
                    quantity_unit: unit,
                    record_count: 0,
                    estimated: false,
                });
                (sums.len() - 1) as u32
            });
            let row = &mut sums[at as usize];
            let nanos = chunk.billed_nanos(index);
            row.billed_nanos = row
                .billed_nanos
                .checked_add(nanos)
                .ok_or(MoneyError::Overflow)?;
            // A row has a quantity while every record of it has one, all in one unit.
            if row.quantity_unit != NO_TEXT {
                let sum = match unit == row.quantity_unit {
                    true => row.quantity.add(chunk.consumed_value(index)),
                    false => None,
                };
                match sum {
                    Some(sum) => row.quantity = sum,
                    None => row.quantity_unit = NO_TEXT,
                }
            }
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
        for (id, sums) in chunk.accounts().zip(chunk_accounts) {
            if sums.records > 0 || sums.unbucketed > 0 {
                let total = accounts.entry(id.clone()).or_default();
                total.nanos = total
                    .nanos
                    .checked_add(sums.nanos)
                    .ok_or(MoneyError::Overflow)?;
                total.records += sums.records;
                total.unbucketed += sums.unbucketed;
            }
        }
    }
    let text = |id: u32| texts.text(id);
    let dimensions = query.group_by.len().min(GroupBy::ALL.len());
    let mut keyed: Vec<((K, Ids), RowSums)> = row_keys.into_iter().zip(sums).collect();
    // Buckets in time, then rows by their ids as texts (an absent id first): the order of the answer.
    keyed.sort_by(|((a, _), _), ((b, _), _)| {
        buckets[a.bucket() as usize]
            .start()
            .cmp(&buckets[b.bucket() as usize].start())
            .then_with(|| {
                let a_ids = (0..dimensions).map(|slot| text(a.id(slot)));
                a_ids.cmp((0..dimensions).map(|slot| text(b.id(slot))))
            })
    });
    let rows = keyed
        .into_iter()
        .map(|((key, names), row)| Row {
            group_values: query
                .group_by
                .iter()
                .enumerate()
                .map(|(slot, group_by)| GroupValue {
                    group_by: *group_by,
                    id: text(key.id(slot)).cloned(),
                    display_name: names.get(slot).and_then(|name| text(*name)).cloned(),
                })
                .collect(),
            period: buckets[key.bucket() as usize],
            billed_cost: Money::from_nanos(Currency::USD, row.billed_nanos),
            consumed_quantity: text(row.quantity_unit).map(|unit| Quantity {
                value: row.quantity.to_decimal(),
                unit: unit.clone(),
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
            (!set.is_empty()).then(|| chunk.texts().iter().map(|t| set.contains(t)).collect())
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
    #[inline]
    fn map(&mut self, chunk: &RecordColumns, global: &mut [u32], id: TextId) -> u32 {
        let Some(slot) = global.get_mut(id as usize) else {
            return NO_TEXT;
        };
        if *slot == UNMAPPED {
            *slot = self.intern(chunk.text(id).unwrap_or_default());
        }
        *slot
    }

    /// A text's id, added when new: once per text of a chunk, out of line.
    #[inline(never)]
    fn intern(&mut self, text: &str) -> u32 {
        match self.ids.get(text) {
            Some(known) => *known,
            None => {
                // The answer's own copy: the chunk's texts live in its arena.
                let text = Text::from(text);
                let new = self.texts.len() as u32;
                self.texts.push(text.clone());
                self.ids.insert(text, new);
                new
            }
        }
    }

    fn text(&self, id: u32) -> Option<&Text> {
        self.texts.get(id as usize)
    }
}

/// One id per grouping dimension (the rest unused).
type Ids = [u32; GroupBy::ALL.len()];

/// A row's place in the answer's map: its bucket and its ids, one per grouping dimension.
trait RowKey: Copy + Eq + std::hash::Hash {
    fn new(bucket: u32, ids: &Ids) -> Self;
    fn bucket(self) -> u32;
    /// The id of dimension `slot`, [`NO_TEXT`] past the key's dimensions.
    fn id(self, slot: usize) -> u32;
}

/// Any number of dimensions: the bucket and every id slot, hashed in full.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct WideKey {
    bucket: u32,
    ids: Ids,
}

impl RowKey for WideKey {
    fn new(bucket: u32, ids: &Ids) -> Self {
        WideKey { bucket, ids: *ids }
    }

    fn bucket(self) -> u32 {
        self.bucket
    }

    fn id(self, slot: usize) -> u32 {
        self.ids.get(slot).copied().unwrap_or(NO_TEXT)
    }
}

/// Up to three dimensions: the bucket and the ids in two words, hashed as two. Two `u64`s rather than
/// a `u128`, whose alignment of 16 would pad each entry of the map by half.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct PackedKey {
    bucket_and_first: u64,
    second_and_third: u64,
}

impl PackedKey {
    const DIMENSIONS: usize = 3;
}

impl RowKey for PackedKey {
    #[inline]
    fn new(bucket: u32, ids: &Ids) -> Self {
        PackedKey {
            bucket_and_first: u64::from(bucket) << 32 | u64::from(ids[0]),
            second_and_third: u64::from(ids[1]) << 32 | u64::from(ids[2]),
        }
    }

    fn bucket(self) -> u32 {
        (self.bucket_and_first >> 32) as u32
    }

    fn id(self, slot: usize) -> u32 {
        match slot {
            0 => self.bucket_and_first as u32,
            1 => (self.second_and_third >> 32) as u32,
            2 => self.second_and_third as u32,
            _ => NO_TEXT,
        }
    }
}

/// What the records of one row add up to.
struct RowSums {
    billed_nanos: i128,
    /// The quantity's sum, while every record has one in the row's unit.
    quantity: QuantitySum,
    /// [`NO_TEXT`] once a record has none or another.
    quantity_unit: u32,
    record_count: u64,
    estimated: bool,
}

/// A sum of quantities, exactly the `Decimal` that adding them one by one with
/// [`Decimal::checked_add`] gives (to its scale and a zero's sign), kept as a mantissa and scale so
/// that adding one of the same scale is an integer addition.
#[derive(Debug, Clone, Copy)]
enum QuantitySum {
    /// `sum` × 10^-`scale`, `sum` below 2^96 in magnitude; a zero is a positive one.
    Parts { sum: i128, scale: u32 },
    /// A negative zero, which a mantissa cannot tell from zero.
    Whole(Decimal),
}

impl QuantitySum {
    const ZERO: QuantitySum = QuantitySum::Parts { sum: 0, scale: 0 };

    /// The sum with `value` added, as `Decimal::checked_add` adds them; `None` where it fails.
    #[inline]
    fn add(self, value: HeldDecimal) -> Option<QuantitySum> {
        const MANTISSA: u128 = 1 << 96;
        if let (
            QuantitySum::Parts { sum, scale },
            HeldDecimal::Parts {
                mantissa,
                scale: at,
            },
        ) = (self, value)
        {
            // As `Decimal` adds: zero and a value is the value (at its own scale), a value and zero
            // the value; two of one scale their mantissas' sum while it fits. A sum cancelling to
            // zero takes the decimal path, which decides the zero's sign.
            if sum == 0 {
                return Some(QuantitySum::Parts {
                    sum: i128::from(mantissa),
                    scale: at,
                });
            }
            if mantissa == 0 {
                return Some(self);
            }
            let added = sum + i128::from(mantissa);
            if at == scale && added != 0 && added.unsigned_abs() < MANTISSA {
                return Some(QuantitySum::Parts { sum: added, scale });
            }
        }
        self.add_decimal(value)
    }

    /// [`QuantitySum::add`] as decimals: out of line, so the integer path inlines.
    #[cold]
    #[inline(never)]
    fn add_decimal(self, value: HeldDecimal) -> Option<QuantitySum> {
        self.to_decimal()
            .checked_add(value.to_decimal())
            .map(QuantitySum::from_decimal)
    }

    fn from_decimal(value: Decimal) -> QuantitySum {
        if value.is_zero() && value.is_sign_negative() {
            QuantitySum::Whole(value)
        } else {
            QuantitySum::Parts {
                sum: value.mantissa(),
                scale: value.scale(),
            }
        }
    }

    fn to_decimal(self) -> Decimal {
        match self {
            // A decimal's mantissa and scale, so this never fails.
            QuantitySum::Parts { sum, scale } => {
                Decimal::try_from_i128_with_scale(sum, scale).unwrap_or_default()
            }
            QuantitySum::Whole(value) => value,
        }
    }
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
mod tests;
