//! Fills a chunk's columns one record at a time, interning texts as they come, then lays them out:
//! every column's values in one of two arrays, a column with one value for every record once.

use super::{Column, INTS, Int, NO_TEXT, RecordColumns, TextId, WIDE, WORDS, WideValue, Word};
use crate::domain::{CostRecord, Currency, Period, ProviderAccountId, Text};
use rust_decimal::Decimal;
use rustc_hash::FxHashMap;

#[derive(Default)]
pub(super) struct Builder {
    len: usize,
    text_bytes: String,
    text_ends: Vec<u32>,
    text_ids: FxHashMap<Text, TextId>,
    /// The last text interned: parsers share one `Arc` for a text repeated in consecutive records, so
    /// most lookups end at a pointer comparison.
    last: Option<(Text, TextId)>,
    words: [Vec<u32>; WORDS],
    ints: [Vec<i64>; INTS],
    wide: Vec<(u8, u32, WideValue)>,
    periods: Vec<Period>,
    period_ids: FxHashMap<Period, u32>,
    accounts: Vec<(crate::domain::ProviderKind, ProviderAccountId)>,
    account_ids: FxHashMap<ProviderAccountId, u32>,
    currencies: Vec<Currency>,
    extensions: Vec<(&'static str, Vec<TextId>)>,
}

impl Builder {
    pub(super) fn new() -> Self {
        Builder::default()
    }

    fn intern(&mut self, text: Text) -> TextId {
        if let Some((last, id)) = &self.last
            && std::sync::Arc::ptr_eq(last, &text)
        {
            return *id;
        }
        let id = match self.text_ids.get(&text) {
            Some(id) => *id,
            None => {
                let id = self.text_ends.len() as TextId;
                self.text_bytes.push_str(&text);
                self.text_ends.push(self.text_bytes.len() as u32);
                self.text_ids.insert(text.clone(), id);
                id
            }
        };
        self.last = Some((text, id));
        id
    }

    fn intern_option(&mut self, text: Option<Text>) -> TextId {
        text.map_or(NO_TEXT, |text| self.intern(text))
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

    fn word(&mut self, column: Word, value: u32) {
        self.words[column as usize].push(value);
    }

    /// An `i64` value, or the [`WIDE`] marker with the whole value beside it.
    fn int(&mut self, column: Int, narrow: Option<i64>, whole: WideValue) {
        let value = match narrow.filter(|value| *value != WIDE) {
            Some(value) => value,
            None => {
                self.wide.push((column as u8, self.len as u32, whole));
                WIDE
            }
        };
        self.ints[column as usize].push(value);
    }

    /// A decimal as mantissa and scale, kept whole when the mantissa is wider than `i64` or the
    /// value is a negative zero (which a mantissa cannot tell from zero).
    fn decimal(&mut self, mantissa: Int, scale: Word, value: Decimal) {
        let narrow = i64::try_from(value.mantissa())
            .ok()
            .filter(|m| *m != 0 || !value.is_sign_negative());
        self.int(mantissa, narrow, WideValue::Decimal(value));
        self.word(scale, value.scale());
    }

    pub(super) fn push(&mut self, record: CostRecord) {
        let account = match self.account_ids.get(&record.provider_account) {
            Some(id) => *id,
            None => {
                let id = self.accounts.len() as u32;
                let account = (record.provider, record.provider_account.clone());
                self.accounts.push(account);
                self.account_ids.insert(record.provider_account.clone(), id);
                id
            }
        };
        let category = record.charge_category as usize;
        let period = match self.period_ids.get(&record.charge_period) {
            Some(id) => *id,
            None => {
                let id = self.periods.len() as u32;
                self.periods.push(record.charge_period);
                self.period_ids.insert(record.charge_period, id);
                id
            }
        };
        let billing_id = self.intern(record.billing_account.id);
        let billing_name = self.intern_option(record.billing_account.name);
        let (sub_id, sub_name) = match record.sub_account {
            Some(sub) => (self.intern(sub.id), self.intern_option(sub.name)),
            None => (NO_TEXT, NO_TEXT),
        };
        let (resource_id, resource_name, resource_kind) = match record.resource {
            Some(resource) => (
                self.intern(resource.id),
                self.intern_option(resource.name),
                self.intern(resource.kind),
            ),
            None => (NO_TEXT, NO_TEXT, NO_TEXT),
        };
        let service = self.intern(record.service_name);
        let sku = self.intern_option(record.sku_id);
        let dimension = self.intern_option(record.charge_dimension);
        let invoice = self.intern_option(record.invoice_id);
        let original_unit = self.intern(record.original_amount.unit);
        let (consumed_value, consumed_unit) = match record.consumed_quantity {
            Some(quantity) => (quantity.value, self.intern(quantity.unit)),
            None => (Decimal::ZERO, NO_TEXT),
        };
        let (price, price_currency) = match record.list_unit_price {
            Some(price) => (price.amount, self.currency(price.currency)),
            None => (Decimal::ZERO, NO_TEXT),
        };
        let billed_currency = self.currency(record.billed_cost.currency());
        for (name, value) in record.extensions {
            let value = self.intern(value);
            let at = match self.extensions.iter().position(|(known, _)| *known == name) {
                Some(at) => at,
                None => {
                    self.extensions.push((name, Vec::new()));
                    self.extensions.len() - 1
                }
            };
            // Records before this one that lacked the extension.
            let column = &mut self.extensions[at].1;
            column.resize(self.len, NO_TEXT);
            column.push(value);
        }
        for (column, value) in [
            (Word::Account, account),
            (Word::BillingId, billing_id),
            (Word::BillingName, billing_name),
            (Word::SubId, sub_id),
            (Word::SubName, sub_name),
            (Word::ResourceId, resource_id),
            (Word::ResourceName, resource_name),
            (Word::ResourceKind, resource_kind),
            (Word::Service, service),
            (Word::Sku, sku),
            (Word::Dimension, dimension),
            (Word::Invoice, invoice),
            (Word::Category, category as u32),
            (Word::Period, period),
            (Word::BilledCurrency, billed_currency),
            (Word::OriginalUnit, original_unit),
            (Word::ConsumedUnit, consumed_unit),
            (Word::PriceCurrency, price_currency),
        ] {
            self.word(column, value);
        }
        let nanos = record.billed_cost.nanos();
        self.int(
            Int::BilledNanos,
            i64::try_from(nanos).ok(),
            WideValue::Nanos(nanos),
        );
        self.decimal(
            Int::OriginalMantissa,
            Word::OriginalScale,
            record.original_amount.value,
        );
        self.decimal(Int::ConsumedMantissa, Word::ConsumedScale, consumed_value);
        self.decimal(Int::PriceMantissa, Word::PriceScale, price);
        self.len += 1;
    }

    pub(super) fn finish(mut self) -> RecordColumns {
        let len = self.len;
        let text_count = self.text_ends.len() as u32;
        let mut words = self.text_ends;
        let mut word_columns = [Column::default(); WORDS];
        for (column, values) in word_columns.iter_mut().zip(&self.words) {
            *column = lay_out(&mut words, values);
        }
        let mut extensions = Vec::with_capacity(self.extensions.len());
        self.extensions.sort_by_key(|(name, _)| *name);
        for (name, mut values) in self.extensions {
            values.resize(len, NO_TEXT);
            extensions.push((name, lay_out(&mut words, &values)));
        }
        let mut ints = Vec::new();
        let mut int_columns = [Column::default(); INTS];
        for (column, values) in int_columns.iter_mut().zip(&self.ints) {
            *column = lay_out(&mut ints, values);
        }
        // In (column, record) order, for the lookup's binary search; records come in order already.
        self.wide
            .sort_by_key(|(column, record, _)| (*column, *record));
        RecordColumns {
            len: len as u32,
            text_count,
            text_bytes: self.text_bytes.into_boxed_str(),
            // Boxed slices: allocated to their length, so the weigher's lengths are what is held.
            words: words.into_boxed_slice(),
            word_columns,
            ints: ints.into_boxed_slice(),
            int_columns,
            wide: self.wide.into_boxed_slice(),
            periods: self.periods.into_boxed_slice(),
            accounts: self.accounts.into_boxed_slice(),
            currencies: self.currencies.into_boxed_slice(),
            extensions: extensions.into_boxed_slice(),
        }
    }
}

/// Appends a column's values to `array`: once when every record has the same value (or there are
/// none), else one per record.
fn lay_out<T: Copy + PartialEq>(array: &mut Vec<T>, values: &[T]) -> Column {
    let start = array.len();
    match values.first() {
        Some(first) if values.iter().any(|value| value != first) => {
            array.extend_from_slice(values);
            Column::new(start, true)
        }
        Some(first) => {
            array.push(*first);
            Column::new(start, false)
        }
        None => Column::new(start, false),
    }
}
