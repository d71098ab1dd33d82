//! A chunk's records held compactly, the way the cache keeps them: every text once per chunk (one
//! string arena), each record a row of small integer ids in columns, money as integer nanos and
//! decimals as integer mantissas, extensions as columns of their own. A column with one value for every
//! record (the chunk's one account, currency or period, an absent sub-account) holds it once. Nothing
//! is lost: [`RecordColumns::record`] gives back the record that went in, field for field.
//!
//! Small chunks (a day of one account: ten records) are the common case, so the fixed cost is kept
//! low too: all of a chunk's `u32` columns share one allocation, all its `i64` columns another.

use super::{
    ChargeCategory, CostRecord, Currency, Money, Named, Period, ProviderAccountId, ProviderKind,
    Quantity, Resource, Text, UnitPrice,
};
use rust_decimal::Decimal;

mod build;

pub use build::{ColumnsBuilder, RecordRef, ResourceRef};

/// A text of the chunk's dictionary.
pub type TextId = u32;

/// The id of an absent text (a record without a sub-account, an unnamed resource, ...).
pub const NO_TEXT: TextId = u32::MAX;

/// An `i64` column's marker for a value kept whole in [`RecordColumns::wide`]: billed nanos beyond
/// `i64` (over 9.2 billion a record), a decimal whose mantissa is wider, or a negative zero.
const WIDE: i64 = i64::MIN;

/// Where a column's values are in one of the chunk's value arrays: record `i`'s at `start + i`, or
/// at `start` for every record when the column has one value for all (the top bit says which), so
/// such a column holds it once.
#[derive(Debug, Clone, Copy, Default)]
struct Column(u32);

const PER_RECORD: u32 = 1 << 31;

impl Column {
    /// A chunk's arrays stay far below 2^31 values: its upstream answer is bounded in bytes.
    fn new(start: usize, per_record: bool) -> Column {
        let start = (start as u32) & !PER_RECORD;
        Column(if per_record {
            start | PER_RECORD
        } else {
            start
        })
    }

    /// Whether the column holds a value per record, rather than one for all.
    fn per_record(self) -> bool {
        self.0 & PER_RECORD != 0
    }

    #[inline]
    fn at(self, record: usize) -> usize {
        // Branch-free: the step is 1 or 0.
        let step = (self.0 >> 31) as usize;
        (self.0 & !PER_RECORD) as usize + record * step
    }
}

/// The `u32` columns, in [`RecordColumns::words`].
#[derive(Debug, Clone, Copy)]
enum Word {
    Account,
    BillingId,
    BillingName,
    SubId,
    SubName,
    ResourceId,
    ResourceName,
    ResourceKind,
    Service,
    Sku,
    Dimension,
    Invoice,
    /// The index of the record's [`ChargeCategory`] in `ChargeCategory::ALL`.
    Category,
    Period,
    /// An index into the chunk's currencies.
    BilledCurrency,
    OriginalUnit,
    OriginalScale,
    /// [`NO_TEXT`] when the record has no consumed quantity.
    ConsumedUnit,
    ConsumedScale,
    /// An index into the chunk's currencies; [`NO_TEXT`] when the record has no list price.
    PriceCurrency,
    PriceScale,
}

const WORDS: usize = Word::PriceScale as usize + 1;

/// The `i64` columns, in [`RecordColumns::ints`].
#[derive(Debug, Clone, Copy)]
enum Int {
    BilledNanos,
    OriginalMantissa,
    ConsumedMantissa,
    PriceMantissa,
}

const INTS: usize = Int::PriceMantissa as usize + 1;

/// A value too wide for its `i64` column.
#[derive(Debug, Clone, Copy, PartialEq)]
enum WideValue {
    Nanos(i128),
    Decimal(Decimal),
}

/// A decimal as a chunk holds it: mantissa and scale when the mantissa fits an `i64` (never a
/// negative zero, which a mantissa cannot tell from zero), else whole.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HeldDecimal {
    Parts { mantissa: i64, scale: u32 },
    Whole(Decimal),
}

impl HeldDecimal {
    pub fn to_decimal(self) -> Decimal {
        match self {
            // A scale taken from a `Decimal` is at most 28, so this never fails.
            HeldDecimal::Parts { mantissa, scale } => {
                Decimal::try_new(mantissa, scale).unwrap_or_default()
            }
            HeldDecimal::Whole(value) => value,
        }
    }
}

/// One grouping dimension's ids in a chunk ([`RecordColumns::key_ids`]).
#[derive(Clone, Copy)]
pub struct KeyIds<'a> {
    chunk: &'a RecordColumns,
    group_by: super::GroupBy,
    /// The column the ids come from: the texts themselves, or (provider, charge category) what
    /// they are derived from.
    column: Column,
    is_text: bool,
}

impl KeyIds<'_> {
    /// Whether every record of the chunk has the same id.
    pub fn is_constant(&self) -> bool {
        !self.column.per_record()
    }

    /// Record `record`'s id, as [`RecordColumns::key`] gives it.
    #[inline]
    pub fn get(&self, record: usize) -> TextId {
        if self.is_text {
            self.chunk.words[self.column.at(record)]
        } else {
            self.chunk.key(record, self.group_by).0
        }
    }
}

/// The chunk's texts: one arena and where each ends, then the names every chunk may group by
/// without holding them (each charge category's, then each provider kind's).
#[derive(Debug, Clone, Copy)]
pub struct Texts<'a> {
    bytes: &'a str,
    ends: &'a [u32],
}

const FIXED_TEXTS: usize = ChargeCategory::ALL.len() + ProviderKind::ALL.len();

impl<'a> Texts<'a> {
    pub fn len(&self) -> usize {
        self.ends.len() + FIXED_TEXTS
    }

    /// Never: the fixed names are always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn get(&self, id: TextId) -> Option<&'a str> {
        let id = id as usize;
        let Some(end) = self.ends.get(id) else {
            let fixed = id - self.ends.len();
            return match ChargeCategory::ALL.get(fixed) {
                Some(category) => Some(category.as_str()),
                None => ProviderKind::ALL
                    .get(fixed - ChargeCategory::ALL.len())
                    .map(ProviderKind::as_str),
            };
        };
        let start = match id {
            0 => 0,
            _ => self.ends[id - 1] as usize,
        };
        self.bytes.get(start..*end as usize)
    }

    /// The id of a charge category's name.
    fn category(&self, category: ChargeCategory) -> TextId {
        (self.ends.len() + category as usize) as TextId
    }

    /// The id of a provider kind's name.
    fn kind(&self, kind: ProviderKind) -> TextId {
        (self.ends.len() + ChargeCategory::ALL.len() + kind as usize) as TextId
    }

    /// Every text, by id.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a str> + 'a {
        let texts = *self;
        (0..self.len() as TextId).map(move |id| texts.get(id).unwrap_or_default())
    }
}

/// One chunk's records, column by column.
#[derive(Debug, Clone, Default)]
pub struct RecordColumns {
    len: u32,
    /// Every text of the chunk, one after the other; their ends are the first `text_count` words.
    text_bytes: Box<str>,
    text_count: u32,
    /// The text ends, then every `u32` column's values.
    words: Box<[u32]>,
    word_columns: [Column; WORDS],
    ints: Box<[i64]>,
    int_columns: [Column; INTS],
    /// The values marked [`WIDE`], by `i64` column and record, in that order.
    wide: Box<[(u8, u32, WideValue)]>,
    periods: Box<[Period]>,
    accounts: Box<[(ProviderKind, ProviderAccountId)]>,
    currencies: Box<[Currency]>,
    /// Each extension the chunk's records carry, and its column of texts ([`NO_TEXT`] where a record
    /// lacks it), in name order.
    extensions: Box<[(&'static str, Column)]>,
}

impl RecordColumns {
    pub fn from_records(records: Vec<CostRecord>) -> RecordColumns {
        let mut builder = ColumnsBuilder::new();
        builder.reserve(records.len());
        let mut extensions = Vec::new();
        for record in &records {
            builder.push_record(record, &mut extensions);
        }
        builder.finish()
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunk's dictionary; a [`TextId`] indexes it.
    pub fn texts(&self) -> Texts<'_> {
        Texts {
            bytes: &self.text_bytes,
            ends: &self.words[..self.text_count as usize],
        }
    }

    pub fn text(&self, id: TextId) -> Option<&str> {
        self.texts().get(id)
    }

    /// The names of the extensions the chunk's records carry.
    pub fn extension_names(&self) -> impl ExactSizeIterator<Item = &'static str> + '_ {
        self.extensions.iter().map(|(name, _)| *name)
    }

    /// The distinct charge periods; [`RecordColumns::period_index`] indexes them.
    pub fn periods(&self) -> &[Period] {
        &self.periods
    }

    #[inline]
    fn word(&self, column: Word, record: usize) -> u32 {
        self.words[self.word_columns[column as usize].at(record)]
    }

    #[inline]
    pub fn period_index(&self, record: usize) -> usize {
        self.word(Word::Period, record) as usize
    }

    pub fn account_of(&self, record: usize) -> &ProviderAccountId {
        &self.accounts[self.account_index(record)].1
    }

    /// The chunk's accounts (usually one); [`RecordColumns::account_index`] indexes them.
    pub fn accounts(&self) -> impl ExactSizeIterator<Item = &ProviderAccountId> {
        self.accounts.iter().map(|(_, id)| id)
    }

    #[inline]
    pub fn account_index(&self, record: usize) -> usize {
        self.word(Word::Account, record) as usize
    }

    #[inline]
    pub fn billed_currency(&self, record: usize) -> Currency {
        self.currencies[self.word(Word::BilledCurrency, record) as usize]
    }

    /// The value of `i64` column `column` for `record`, and the whole value when it is marked wide.
    #[inline]
    fn int(&self, column: Int, record: usize) -> Result<i64, WideValue> {
        match self.ints[self.int_columns[column as usize].at(record)] {
            WIDE => Err(self.wide_value(column, record)),
            value => Ok(value),
        }
    }

    /// Out of line: wide values are rare, and the reads that find none stay small enough to inline.
    #[cold]
    #[inline(never)]
    fn wide_value(&self, column: Int, record: usize) -> WideValue {
        let key = (column as u8, record as u32);
        let at = self.wide.binary_search_by_key(&key, |(c, r, _)| (*c, *r));
        // Every marked value has its entry (the builder writes both); 0 is never read.
        at.map_or(WideValue::Nanos(0), |at| self.wide[at].2)
    }

    #[inline]
    pub fn billed_nanos(&self, record: usize) -> i128 {
        match self.int(Int::BilledNanos, record) {
            Ok(nanos) => i128::from(nanos),
            Err(WideValue::Nanos(nanos)) => nanos,
            Err(WideValue::Decimal(_)) => 0,
        }
    }

    fn decimal(&self, mantissa: Int, scale: Word, record: usize) -> Decimal {
        self.held_decimal(mantissa, scale, record).to_decimal()
    }

    #[inline]
    fn held_decimal(&self, mantissa: Int, scale: Word, record: usize) -> HeldDecimal {
        match self.int(mantissa, record) {
            Ok(mantissa) => HeldDecimal::Parts {
                mantissa,
                scale: self.word(scale, record),
            },
            Err(WideValue::Decimal(value)) => HeldDecimal::Whole(value),
            Err(WideValue::Nanos(_)) => HeldDecimal::Whole(Decimal::ZERO),
        }
    }

    /// The consumed quantity's value and unit, when the record has one.
    pub fn consumed(&self, record: usize) -> Option<(Decimal, TextId)> {
        let unit = self.consumed_unit(record);
        (unit != NO_TEXT).then(|| (self.consumed_value(record).to_decimal(), unit))
    }

    /// The consumed quantity's unit; [`NO_TEXT`] when the record has none.
    #[inline]
    pub fn consumed_unit(&self, record: usize) -> TextId {
        self.word(Word::ConsumedUnit, record)
    }

    /// The consumed quantity's value as held (a sum of quantities of one scale can add mantissas),
    /// read where [`RecordColumns::consumed_unit`] says the record has one.
    #[inline]
    pub fn consumed_value(&self, record: usize) -> HeldDecimal {
        self.held_decimal(Int::ConsumedMantissa, Word::ConsumedScale, record)
    }

    /// The chunk's currencies (billed and list prices'), each once.
    pub fn currencies(&self) -> &[Currency] {
        &self.currencies
    }

    #[inline]
    pub fn service(&self, record: usize) -> TextId {
        self.word(Word::Service, record)
    }

    #[inline]
    pub fn sub_account(&self, record: usize) -> TextId {
        self.word(Word::SubId, record)
    }

    #[inline]
    pub fn resource(&self, record: usize) -> TextId {
        self.word(Word::ResourceId, record)
    }

    fn category(&self, record: usize) -> ChargeCategory {
        let index = self.word(Word::Category, record) as usize;
        ChargeCategory::ALL
            .get(index)
            .copied()
            .unwrap_or(ChargeCategory::Usage)
    }

    /// The id and display name of one grouping dimension of a record, as texts of this chunk.
    pub fn key(&self, record: usize, group_by: super::GroupBy) -> (TextId, TextId) {
        use super::GroupBy;
        let pair = |id: Word, name: Word| (self.word(id, record), self.word(name, record));
        match group_by {
            GroupBy::Provider => {
                let kind = self.accounts[self.account_index(record)].0;
                (self.texts().kind(kind), NO_TEXT)
            }
            GroupBy::BillingAccount => pair(Word::BillingId, Word::BillingName),
            GroupBy::SubAccount => pair(Word::SubId, Word::SubName),
            GroupBy::Resource => pair(Word::ResourceId, Word::ResourceName),
            GroupBy::Service => (self.word(Word::Service, record), NO_TEXT),
            GroupBy::Sku => (self.word(Word::Sku, record), NO_TEXT),
            GroupBy::ChargeDimension => (self.word(Word::Dimension, record), NO_TEXT),
            GroupBy::ChargeCategory => (self.texts().category(self.category(record)), NO_TEXT),
        }
    }

    /// One grouping dimension's ids over the chunk's records: what [`RecordColumns::key`] says of
    /// each, read from its column without choosing the column per record.
    pub fn key_ids(&self, group_by: super::GroupBy) -> KeyIds<'_> {
        use super::GroupBy;
        let (word, is_text) = match group_by {
            GroupBy::Provider => (Word::Account, false),
            GroupBy::BillingAccount => (Word::BillingId, true),
            GroupBy::SubAccount => (Word::SubId, true),
            GroupBy::Resource => (Word::ResourceId, true),
            GroupBy::Service => (Word::Service, true),
            GroupBy::Sku => (Word::Sku, true),
            GroupBy::ChargeDimension => (Word::Dimension, true),
            GroupBy::ChargeCategory => (Word::Category, false),
        };
        KeyIds {
            chunk: self,
            group_by,
            column: self.word_columns[word as usize],
            is_text,
        }
    }

    /// Record `index` as it went in.
    pub fn record(&self, index: usize) -> CostRecord {
        self.build_record(index, &|id| self.text(id).map(Text::from))
    }

    /// Every record, in the order they went in.
    pub fn records(&self) -> impl Iterator<Item = CostRecord> + '_ {
        self.records_where(|_| true)
    }

    /// The records `keep` keeps, in order. Each text is made once for all of them, so records that
    /// share a text share one allocation, as they did before the chunk was held.
    pub fn records_where<'a>(
        &'a self,
        keep: impl Fn(usize) -> bool + 'a,
    ) -> impl Iterator<Item = CostRecord> + 'a {
        let texts: Vec<Text> = self.texts().iter().map(Text::from).collect();
        (0..self.len())
            .filter(move |index| keep(*index))
            .map(move |index| self.build_record(index, &|id| texts.get(id as usize).cloned()))
    }

    fn build_record(&self, index: usize, text: &dyn Fn(TextId) -> Option<Text>) -> CostRecord {
        let word = |column: Word| self.word(column, index);
        let (provider, provider_account) = &self.accounts[self.account_index(index)];
        let extensions = self
            .extensions
            .iter()
            .filter_map(|(name, column)| Some((*name, text(self.words[column.at(index)])?)))
            .collect();
        let currency = |at: u32| self.currencies.get(at as usize).copied();
        CostRecord {
            provider: *provider,
            provider_account: provider_account.clone(),
            billing_account: Named {
                id: text(word(Word::BillingId)).unwrap_or_default(),
                name: text(word(Word::BillingName)),
            },
            sub_account: text(word(Word::SubId)).map(|id| Named {
                id,
                name: text(word(Word::SubName)),
            }),
            resource: text(word(Word::ResourceId)).map(|id| Resource {
                id,
                name: text(word(Word::ResourceName)),
                kind: text(word(Word::ResourceKind)).unwrap_or_default(),
            }),
            service_name: text(word(Word::Service)).unwrap_or_default(),
            sku_id: text(word(Word::Sku)),
            charge_dimension: text(word(Word::Dimension)),
            charge_category: self.category(index),
            charge_period: self.periods[self.period_index(index)],
            billed_cost: Money::from_nanos(self.billed_currency(index), self.billed_nanos(index)),
            original_amount: Quantity {
                value: self.decimal(Int::OriginalMantissa, Word::OriginalScale, index),
                unit: text(word(Word::OriginalUnit)).unwrap_or_default(),
            },
            consumed_quantity: self.consumed(index).and_then(|(value, unit)| {
                Some(Quantity {
                    value,
                    unit: text(unit)?,
                })
            }),
            list_unit_price: currency(word(Word::PriceCurrency)).map(|currency| UnitPrice {
                amount: self.decimal(Int::PriceMantissa, Word::PriceScale, index),
                currency,
            }),
            invoice_id: text(word(Word::Invoice)),
            extensions,
        }
    }

    /// What the columns hold on the heap, in bytes: each boxed slice is allocated to its length, so
    /// this is their lengths; the accounts' ids (each an `Arc<str>`: two counters and the bytes) are
    /// counted though the settings share them, so the estimate errs on the side of a smaller cache.
    pub fn heap_bytes(&self) -> usize {
        fn boxed<T>(values: &[T]) -> usize {
            std::mem::size_of_val(values)
        }
        let account_ids: usize = self
            .accounts
            .iter()
            .map(|(_, id)| 2 * std::mem::size_of::<usize>() + id.as_str().len())
            .sum();
        self.text_bytes.len()
            + boxed(&self.words)
            + boxed(&self.ints)
            + boxed(&self.wide)
            + boxed(&self.periods)
            + boxed(&self.accounts)
            + account_ids
            + boxed(&self.currencies)
            + boxed(&self.extensions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::any_record;
    use proptest::prelude::*;

    proptest! {
        /// Runs of one record (a column of one value until some record differs, at any point),
        /// columns equal to others (held once), extensions some records lack: every record comes
        /// back as it went in, decimals with their scale and sign (`Debug` shows both).
        #[test]
        fn columns_give_back_each_record_as_it_went_in(
            pool in proptest::collection::vec(any_record(), 1..4),
            runs in proptest::collection::vec((0usize..4, 1usize..40), 0..6),
        ) {
            let records: Vec<CostRecord> = runs
                .iter()
                .flat_map(|(which, length)| std::iter::repeat_n(pool[which % pool.len()].clone(), *length))
                .collect();
            let columns = RecordColumns::from_records(records.clone());
            prop_assert_eq!(columns.len(), records.len());
            for (index, record) in records.iter().enumerate() {
                prop_assert_eq!(format!("{:?}", columns.record(index)), format!("{record:?}"));
            }
            let back: Vec<CostRecord> = columns.records().collect();
            prop_assert_eq!(format!("{back:?}"), format!("{records:?}"));
            // Each grouping dimension read down its column says what `key` says, record by record.
            for group_by in super::super::GroupBy::ALL {
                let ids = columns.key_ids(group_by);
                for index in 0..columns.len() {
                    prop_assert_eq!(ids.get(index), columns.key(index, group_by).0);
                    if ids.is_constant() {
                        prop_assert_eq!(ids.get(index), ids.get(0));
                    }
                }
            }
        }
    }

    #[test]
    fn every_chunk_names_each_charge_category_and_provider_kind_without_holding_them() {
        let columns = RecordColumns::default();
        let texts = columns.texts();
        for category in ChargeCategory::ALL {
            assert_eq!(texts.get(texts.category(category)), Some(category.as_str()));
        }
        for kind in ProviderKind::ALL {
            assert_eq!(texts.get(texts.kind(kind)), Some(kind.as_str()));
        }
        assert_eq!(texts.get(NO_TEXT), None);
        assert_eq!(columns.heap_bytes(), 0);
    }
}
