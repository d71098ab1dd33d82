//! Fills a chunk's columns one record at a time, interning texts as they come, then lays them out:
//! every column's values in one of two arrays, a column with one value for every record once.
//!
//! A provider pushes each record as borrowed texts and plain values ([`RecordRef`]), so normalizing
//! an answer builds no `CostRecord`: no `Arc` per text, no map of extensions per record. The texts
//! outlive the builder (its lifetime says so), so a text at the address and length of one seen before
//! is that text: most lookups end at comparing two pointers.

use super::{Column, INTS, Int, NO_TEXT, RecordColumns, TextId, WIDE, WORDS, WideValue, Word};
use crate::domain::{
    ChargeCategory, CostRecord, Currency, Money, Period, ProviderAccountId, ProviderKind,
};
use hashbrown::HashTable;
use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use std::hash::BuildHasher;

/// One record's fields, borrowed: what [`ColumnsBuilder::push`] takes, with the record's extensions.
/// The same fields as [`CostRecord`]; [`RecordColumns::record`] gives a pushed record back as one.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub provider: ProviderKind,
    pub provider_account: &'a ProviderAccountId,
    /// The billing account's id and display name.
    pub billing_account: (&'a str, Option<&'a str>),
    /// The sub-account's id and display name.
    pub sub_account: Option<(&'a str, Option<&'a str>)>,
    pub resource: Option<ResourceRef<'a>>,
    pub service_name: &'a str,
    pub sku_id: Option<&'a str>,
    pub charge_dimension: Option<&'a str>,
    pub charge_category: ChargeCategory,
    pub charge_period: Period,
    pub billed_cost: Money,
    /// The amount as the upstream stated it, and its unit.
    pub original_amount: (Decimal, &'a str),
    /// The consumed quantity and its unit.
    pub consumed_quantity: Option<(Decimal, &'a str)>,
    pub list_unit_price: Option<(Decimal, Currency)>,
    pub invoice_id: Option<&'a str>,
}

/// FOCUS Resource, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct ResourceRef<'a> {
    pub id: &'a str,
    pub name: Option<&'a str>,
    pub kind: &'a str,
}

/// The chunk's texts as they are interned: one arena, each text's end, and a table of ids hashed by
/// their text (the texts live in the arena, so the table holds only ids).
#[derive(Default)]
struct Dictionary<'a> {
    bytes: String,
    ends: Vec<u32>,
    ids: HashTable<TextId>,
    /// The text interned last: a record's consumed unit is often its dimension, just interned.
    previous: Option<Last<'a>>,
}

/// A text a column interned last, as it was passed, and its id.
#[derive(Clone, Copy)]
struct Last<'a> {
    text: &'a str,
    id: TextId,
}

impl Last<'_> {
    /// Whether `text` is this one.
    #[inline]
    fn is(&self, text: &str) -> bool {
        same_text(self.text, text)
    }
}

/// Whether two texts are the same: the same borrowed text, or the same bytes. The texts compared are
/// mostly short names of one length (`dimension_3`, `dimension_4`), so they are compared inline in
/// words rather than by a call to `memcmp`, which cost more than the rest of interning.
#[inline]
fn same_text(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    if std::ptr::eq(a.as_ptr(), b.as_ptr()) {
        return true;
    }
    let word = |bytes: &[u8], at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|word| <[u8; 8]>::try_from(word).ok())
            .map(u64::from_ne_bytes)
    };
    match a.len() {
        // Two words that overlap cover every byte.
        8..=16 => word(a, 0) == word(b, 0) && word(a, a.len() - 8) == word(b, b.len() - 8),
        0..8 => a.iter().zip(b).all(|(x, y)| x == y),
        _ => a == b,
    }
}

fn text_at<'a>(bytes: &'a str, ends: &[u32], id: TextId) -> &'a str {
    let id = id as usize;
    let start = match id {
        0 => 0,
        _ => ends[id - 1] as usize,
    };
    &bytes[start..ends[id] as usize]
}

fn hash(text: &str) -> u64 {
    rustc_hash::FxBuildHasher.hash_one(text)
}

impl<'a> Dictionary<'a> {
    /// The id of `text`, added when new. `last` is what this column interned last: consecutive
    /// records repeat most of their texts.
    #[inline(always)]
    fn intern(&mut self, last: &mut Option<Last<'a>>, text: &'a str) -> TextId {
        if let Some(known) = last
            && known.is(text)
        {
            return known.id;
        }
        self.intern_other(last, text)
    }

    /// [`Dictionary::intern`] of a text its column did not intern last: out of line, so the common
    /// case stays a comparison inlined in the push.
    #[inline(never)]
    fn intern_other(&mut self, last: &mut Option<Last<'a>>, text: &'a str) -> TextId {
        let id = match self.previous {
            Some(previous) if previous.is(text) => previous.id,
            _ => self.lookup(text),
        };
        let interned = Some(Last { text, id });
        self.previous = interned;
        *last = interned;
        id
    }

    fn lookup(&mut self, text: &str) -> TextId {
        let hashed = hash(text);
        let (bytes, ends) = (&self.bytes, &self.ends);
        if let Some(id) = self
            .ids
            .find(hashed, |id| same_text(text_at(bytes, ends, *id), text))
        {
            return *id;
        }
        let id = self.ends.len() as TextId;
        self.bytes.push_str(text);
        self.ends.push(self.bytes.len() as u32);
        let (bytes, ends) = (&self.bytes, &self.ends);
        self.ids
            .insert_unique(hashed, id, |id| hash(text_at(bytes, ends, *id)));
        id
    }
}

/// One column's values as records are pushed: a single value while every record so far has it, one
/// per record from the first record that differs. Most of a chunk's columns have one value (its
/// account, period, currency, an absent sub-account), and those are never written per record nor
/// scanned again when the chunk is laid out. How many records it holds is the builder's to know.
#[derive(Default)]
struct Values<T> {
    one: T,
    each: Vec<T>,
}

impl<T: Copy + PartialEq> Values<T> {
    /// Sets record `at`'s value, the column holding the records before it; `room` is how many
    /// records the chunk is expected to have.
    #[inline(always)]
    fn push(&mut self, at: usize, value: T, room: usize) {
        if self.each.is_empty() {
            if at == 0 || value == self.one {
                self.one = value;
                return;
            }
            self.spill(at, room);
        }
        self.each.push(value);
    }

    /// The first record whose value differs: every record before it gets its value written.
    #[cold]
    #[inline(never)]
    fn spill(&mut self, at: usize, room: usize) {
        self.each.reserve_exact(room.max(at + 1));
        self.each.resize(at, self.one);
    }

    /// The last record's value, the column holding `len` records.
    fn last(&self, len: usize) -> Option<T> {
        match self.each.last() {
            Some(last) => Some(*last),
            None => (len > 0).then_some(self.one),
        }
    }

    /// Its values, the column holding `len` records: none, one for every record, or one per record.
    fn values(&self, len: usize) -> &[T] {
        match (len, self.each.is_empty()) {
            (0, _) => &[],
            (_, true) => std::slice::from_ref(&self.one),
            (_, false) => &self.each,
        }
    }
}

/// An extension's column: its name, the text it interned last, its values, and how many records
/// they cover (the records after that lack it so far).
struct Extension<'a> {
    name: &'static str,
    last: Option<Last<'a>>,
    values: Values<TextId>,
    len: usize,
}

impl Extension<'_> {
    /// `NO_TEXT` for the records from this one's last to `len`.
    fn pad(&mut self, len: usize, room: usize) {
        while self.len < len {
            self.values.push(self.len, NO_TEXT, room);
            self.len += 1;
        }
    }
}

/// Builds one chunk's [`RecordColumns`]: [`ColumnsBuilder::push`] each record, then
/// [`ColumnsBuilder::finish`].
pub struct ColumnsBuilder<'a> {
    len: usize,
    texts: Dictionary<'a>,
    /// How many records the chunk is expected to hold: a column of one value per record is
    /// allocated for them at once.
    room: usize,
    /// Per `u32` column, the text it interned last.
    last: [Option<Last<'a>>; WORDS],
    words: [Values<u32>; WORDS],
    ints: [Values<i64>; INTS],
    wide: Vec<(u8, u32, WideValue)>,
    periods: Vec<Period>,
    period_ids: FxHashMap<Period, u32>,
    accounts: Vec<(ProviderKind, ProviderAccountId)>,
    account_ids: FxHashMap<ProviderAccountId, u32>,
    currencies: Vec<Currency>,
    /// Each extension seen: its name, the text it interned last, and its values so far.
    extensions: Vec<Extension<'a>>,
}

impl Default for ColumnsBuilder<'_> {
    fn default() -> Self {
        ColumnsBuilder {
            len: 0,
            room: 0,
            texts: Dictionary::default(),
            last: [None; WORDS],
            words: Default::default(),
            ints: Default::default(),
            wide: Vec::new(),
            periods: Vec::new(),
            period_ids: FxHashMap::default(),
            accounts: Vec::new(),
            account_ids: FxHashMap::default(),
            currencies: Vec::new(),
            extensions: Vec::new(),
        }
    }
}

impl<'a> ColumnsBuilder<'a> {
    pub fn new() -> Self {
        ColumnsBuilder::default()
    }

    /// Room for `records` more records in every column.
    pub fn reserve(&mut self, records: usize) {
        self.room = self.len + records;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    fn text(&mut self, column: Word, text: &'a str) -> TextId {
        self.texts.intern(&mut self.last[column as usize], text)
    }

    #[inline(always)]
    fn text_option(&mut self, column: Word, text: Option<&'a str>) -> TextId {
        text.map_or(NO_TEXT, |text| self.text(column, text))
    }

    fn currency(&mut self, currency: Currency) -> u32 {
        match self.currencies.iter().position(|known| *known == currency) {
            Some(at) => at as u32,
            None => {
                self.currencies.push(currency);
                (self.currencies.len() - 1) as u32
            }
        }
    }

    /// The index of `account`: the one of the record before, most often.
    fn account(&mut self, kind: ProviderKind, account: &ProviderAccountId) -> u32 {
        let last = self.words[Word::Account as usize].last(self.len);
        if let Some(last) = last
            && self.accounts[last as usize].1 == *account
        {
            return last;
        }
        match self.account_ids.get(account) {
            Some(id) => *id,
            None => {
                let id = self.accounts.len() as u32;
                self.accounts.push((kind, account.clone()));
                self.account_ids.insert(account.clone(), id);
                id
            }
        }
    }

    /// The index of `period`: the one of the record before, most often.
    fn period(&mut self, period: Period) -> u32 {
        let last = self.words[Word::Period as usize].last(self.len);
        if let Some(last) = last
            && self.periods[last as usize] == period
        {
            return last;
        }
        match self.period_ids.get(&period) {
            Some(id) => *id,
            None => {
                let id = self.periods.len() as u32;
                self.periods.push(period);
                self.period_ids.insert(period, id);
                id
            }
        }
    }

    #[inline(always)]
    fn word(&mut self, column: Word, value: u32) {
        self.words[column as usize].push(self.len, value, self.room);
    }

    /// An `i64` value, or the [`WIDE`] marker with the whole value beside it.
    #[inline(always)]
    fn int(&mut self, column: Int, narrow: Option<i64>, whole: WideValue) {
        let value = match narrow.filter(|value| *value != WIDE) {
            Some(value) => value,
            None => {
                self.wide.push((column as u8, self.len as u32, whole));
                WIDE
            }
        };
        self.ints[column as usize].push(self.len, value, self.room);
    }

    /// A decimal as mantissa and scale, kept whole when the mantissa is wider than `i64` or the
    /// value is a negative zero (which a mantissa cannot tell from zero).
    #[inline(always)]
    fn decimal(&mut self, mantissa: Int, scale: Word, value: Decimal) {
        let narrow = i64::try_from(value.mantissa())
            .ok()
            .filter(|m| *m != 0 || !value.is_sign_negative());
        self.int(mantissa, narrow, WideValue::Decimal(value));
        self.word(scale, value.scale());
    }

    /// Adds one record and its extensions (FOCUS `x_` columns, each name at most once).
    pub fn push(&mut self, record: &RecordRef<'a>, extensions: &[(&'static str, &'a str)]) {
        let account = self.account(record.provider, record.provider_account);
        let period = self.period(record.charge_period);
        let billing_id = self.text(Word::BillingId, record.billing_account.0);
        let billing_name = self.text_option(Word::BillingName, record.billing_account.1);
        let (sub_id, sub_name) = match record.sub_account {
            Some((id, name)) => (
                self.text(Word::SubId, id),
                self.text_option(Word::SubName, name),
            ),
            None => (NO_TEXT, NO_TEXT),
        };
        let (resource_id, resource_name, resource_kind) = match record.resource {
            Some(resource) => (
                self.text(Word::ResourceId, resource.id),
                self.text_option(Word::ResourceName, resource.name),
                self.text(Word::ResourceKind, resource.kind),
            ),
            None => (NO_TEXT, NO_TEXT, NO_TEXT),
        };
        let service = self.text(Word::Service, record.service_name);
        let sku = self.text_option(Word::Sku, record.sku_id);
        let dimension = self.text_option(Word::Dimension, record.charge_dimension);
        let invoice = self.text_option(Word::Invoice, record.invoice_id);
        let original_unit = self.text(Word::OriginalUnit, record.original_amount.1);
        let (consumed_value, consumed_unit) = match record.consumed_quantity {
            Some((value, unit)) => (value, self.text(Word::ConsumedUnit, unit)),
            None => (Decimal::ZERO, NO_TEXT),
        };
        let (price, price_currency) = match record.list_unit_price {
            Some((amount, currency)) => (amount, self.currency(currency)),
            None => (Decimal::ZERO, NO_TEXT),
        };
        let billed_currency = self.currency(record.billed_cost.currency());
        for &(name, value) in extensions {
            let at = match self
                .extensions
                .iter()
                .position(|known| same_text(known.name, name))
            {
                Some(at) => at,
                None => {
                    self.extensions.push(Extension {
                        name,
                        last: None,
                        values: Values::default(),
                        len: 0,
                    });
                    self.extensions.len() - 1
                }
            };
            let extension = &mut self.extensions[at];
            let value = self.texts.intern(&mut extension.last, value);
            // Records before this one that lacked the extension.
            extension.pad(self.len, self.room);
            extension.values.push(extension.len, value, self.room);
            extension.len += 1;
        }
        // One call each rather than a loop over pairs: each inlines to a comparison with the
        // column's one value.
        self.word(Word::Account, account);
        self.word(Word::BillingId, billing_id);
        self.word(Word::BillingName, billing_name);
        self.word(Word::SubId, sub_id);
        self.word(Word::SubName, sub_name);
        self.word(Word::ResourceId, resource_id);
        self.word(Word::ResourceName, resource_name);
        self.word(Word::ResourceKind, resource_kind);
        self.word(Word::Service, service);
        self.word(Word::Sku, sku);
        self.word(Word::Dimension, dimension);
        self.word(Word::Invoice, invoice);
        self.word(Word::Category, record.charge_category as u32);
        self.word(Word::Period, period);
        self.word(Word::BilledCurrency, billed_currency);
        self.word(Word::OriginalUnit, original_unit);
        self.word(Word::ConsumedUnit, consumed_unit);
        self.word(Word::PriceCurrency, price_currency);
        let nanos = record.billed_cost.nanos();
        self.int(
            Int::BilledNanos,
            i64::try_from(nanos).ok(),
            WideValue::Nanos(nanos),
        );
        self.decimal(
            Int::OriginalMantissa,
            Word::OriginalScale,
            record.original_amount.0,
        );
        self.decimal(Int::ConsumedMantissa, Word::ConsumedScale, consumed_value);
        self.decimal(Int::PriceMantissa, Word::PriceScale, price);
        self.len += 1;
    }

    /// Adds a record built whole: the form the stored chunks and tests give. `extensions` is room for
    /// its extensions as borrowed texts, reused from record to record.
    pub(super) fn push_record(
        &mut self,
        record: &'a CostRecord,
        extensions: &mut Vec<(&'static str, &'a str)>,
    ) {
        extensions.clear();
        extensions.extend(
            record
                .extensions
                .iter()
                .map(|(name, value)| (*name, value.as_ref())),
        );
        self.push(
            &RecordRef {
                provider: record.provider,
                provider_account: &record.provider_account,
                billing_account: (
                    &record.billing_account.id,
                    record.billing_account.name.as_deref(),
                ),
                sub_account: record
                    .sub_account
                    .as_ref()
                    .map(|sub| (sub.id.as_ref(), sub.name.as_deref())),
                resource: record.resource.as_ref().map(|resource| ResourceRef {
                    id: &resource.id,
                    name: resource.name.as_deref(),
                    kind: &resource.kind,
                }),
                service_name: &record.service_name,
                sku_id: record.sku_id.as_deref(),
                charge_dimension: record.charge_dimension.as_deref(),
                charge_category: record.charge_category,
                charge_period: record.charge_period,
                billed_cost: record.billed_cost,
                original_amount: (record.original_amount.value, &record.original_amount.unit),
                consumed_quantity: record
                    .consumed_quantity
                    .as_ref()
                    .map(|quantity| (quantity.value, quantity.unit.as_ref())),
                list_unit_price: record
                    .list_unit_price
                    .as_ref()
                    .map(|price| (price.amount, price.currency)),
                invoice_id: record.invoice_id.as_deref(),
            },
            extensions,
        );
    }

    pub fn finish(mut self) -> RecordColumns {
        let len = self.len;
        let text_count = self.texts.ends.len() as u32;
        self.extensions.sort_by_key(|extension| extension.name);
        for extension in &mut self.extensions {
            // Records after the last that had the extension.
            extension.pad(len, len);
        }
        let word_values: Vec<&[u32]> = self
            .words
            .iter()
            .chain(self.extensions.iter().map(|extension| &extension.values))
            .map(|values| values.values(len))
            .collect();
        let (words, columns) = lay_out(&self.texts.ends, &word_values);
        let mut word_columns = [Column::default(); WORDS];
        word_columns.copy_from_slice(&columns[..WORDS]);
        let extensions = self
            .extensions
            .iter()
            .zip(&columns[WORDS..])
            .map(|(extension, column)| (extension.name, *column))
            .collect();
        let int_values: Vec<&[i64]> = self.ints.iter().map(|values| values.values(len)).collect();
        let (ints, columns) = lay_out(&[], &int_values);
        let mut int_columns = [Column::default(); INTS];
        int_columns.copy_from_slice(&columns);
        // In (column, record) order, for the lookup's binary search; records come in order already.
        self.wide
            .sort_by_key(|(column, record, _)| (*column, *record));
        RecordColumns {
            len: len as u32,
            text_count,
            text_bytes: self.texts.bytes.into_boxed_str(),
            // Boxed slices: allocated to their length, so the weigher's lengths are what is held.
            words,
            word_columns,
            ints,
            int_columns,
            wide: self.wide.into_boxed_slice(),
            periods: self.periods.into_boxed_slice(),
            accounts: self.accounts.into_boxed_slice(),
            currencies: self.currencies.into_boxed_slice(),
            extensions,
        }
    }
}

/// `head`, then each column's values: once when every record has the same value (the builder's
/// [`Values`] say so), else one per record. A column whose values an earlier column holds already
/// shares them: a team record's original amount is its billed nanos, its consumed unit its
/// dimension. Allocated once, to its length.
fn lay_out<T: Copy + PartialEq>(head: &[T], columns: &[&[T]]) -> (Box<[T]>, Vec<Column>) {
    let mut placed: Vec<Column> = Vec::with_capacity(columns.len());
    // Which earlier column each shares, if any.
    let mut shares: Vec<Option<usize>> = Vec::with_capacity(columns.len());
    let mut total = head.len();
    for (at, values) in columns.iter().enumerate() {
        let earlier = columns[..at].iter().position(|other| other == values);
        shares.push(earlier);
        placed.push(match earlier {
            Some(earlier) => placed[earlier],
            None => {
                let column = Column::new(total, values.len() > 1);
                total += values.len();
                column
            }
        });
    }
    let mut array = Vec::with_capacity(total);
    array.extend_from_slice(head);
    for (values, earlier) in columns.iter().zip(shares) {
        if earlier.is_none() {
            array.extend_from_slice(values);
        }
    }
    (array.into_boxed_slice(), placed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The inline comparison says what `==` says, at every length around its word sizes.
        #[test]
        fn texts_are_the_same_exactly_when_their_bytes_are(
            a in "[ab]{0,20}",
            b in "[ab]{0,20}",
        ) {
            prop_assert_eq!(same_text(&a, &b), a == b);
            prop_assert!(same_text(&a, &a.clone()));
        }
    }
}
