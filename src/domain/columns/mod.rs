//! A chunk's records held compactly, the way the cache keeps them: every text once per chunk (a
//! dictionary), each record a row of small integer ids in columns, money as integer nanos and exact
//! decimals, extensions in one side table. Nothing is lost: [`RecordColumns::record`] gives back the
//! record that went in, field for field.

use super::{
    ChargeCategory, CostRecord, Currency, Money, Named, Period, ProviderAccountId, ProviderKind,
    Quantity, Resource, Text, UnitPrice,
};
use rust_decimal::Decimal;
use rustc_hash::FxHashMap;

/// A text of the chunk's dictionary.
pub type TextId = u32;

/// The id of an absent text (a record without a sub-account, an unnamed resource, ...).
pub const NO_TEXT: TextId = u32::MAX;

/// A column of text ids that is empty while every record lacks the text (a team has no resources):
/// such a chunk pays nothing for it.
#[derive(Debug, Clone, Default)]
struct Sparse<T> {
    values: Vec<T>,
}

impl<T: Copy + PartialEq> Sparse<T> {
    fn get(&self, index: usize, absent: T) -> T {
        self.values.get(index).copied().unwrap_or(absent)
    }

    fn push(&mut self, value: T, absent: T, len_before: usize) {
        if self.values.is_empty() && value == absent {
            return;
        }
        if self.values.len() < len_before {
            self.values.resize(len_before, absent);
        }
        self.values.push(value);
    }

    fn finish(&mut self, len: usize, absent: T) {
        if !self.values.is_empty() {
            self.values.resize(len, absent);
        }
        self.values.shrink_to_fit();
    }

    fn heap_bytes(&self) -> usize {
        self.values.capacity() * std::mem::size_of::<T>()
    }
}

/// A billed amount too large for `i64` nanos (over 9.2 billion a record) is kept whole beside the
/// column, which then holds this marker.
const WIDE_NANOS: i64 = i64::MIN;

/// One chunk's records, column by column.
#[derive(Debug, Clone, Default)]
pub struct RecordColumns {
    texts: Vec<Text>,
    periods: Vec<Period>,
    /// Provider kind, account, and the text of the kind's name (for grouping by provider).
    accounts: Vec<(ProviderKind, ProviderAccountId, TextId)>,
    /// The text of each charge category's name, interned when first used.
    category_texts: [TextId; ChargeCategory::ALL.len()],
    account: Vec<u32>,
    billing_account_id: Vec<TextId>,
    billing_account_name: Vec<TextId>,
    sub_account_id: Sparse<TextId>,
    sub_account_name: Sparse<TextId>,
    resource_id: Sparse<TextId>,
    resource_name: Sparse<TextId>,
    resource_kind: Sparse<TextId>,
    service: Vec<TextId>,
    sku: Sparse<TextId>,
    charge_dimension: Sparse<TextId>,
    invoice_id: Sparse<TextId>,
    charge_category: Vec<ChargeCategory>,
    period: Vec<u32>,
    billed_currency: Vec<Currency>,
    billed_nanos: Vec<i64>,
    /// Records whose nanos do not fit `i64`, by index (see [`WIDE_NANOS`]).
    billed_wide: Vec<(u32, i128)>,
    original_value: Vec<Decimal>,
    original_unit: Vec<TextId>,
    /// Meaningful where `consumed_unit` is not [`NO_TEXT`].
    consumed_value: Sparse<Decimal>,
    consumed_unit: Sparse<TextId>,
    /// Meaningful where `price_currency` is set.
    price_amount: Sparse<Decimal>,
    price_currency: Sparse<Option<Currency>>,
    /// Record `i`'s extensions are those at `extension_start[i]..extension_start[i + 1]` of
    /// `extension_name` (an index into `extension_names`) and `extension_value`.
    extension_start: Vec<u32>,
    extension_names: Vec<&'static str>,
    extension_name: Vec<u16>,
    extension_value: Vec<TextId>,
}

impl RecordColumns {
    pub fn from_records(records: Vec<CostRecord>) -> RecordColumns {
        let mut builder = Builder::new();
        for record in records {
            builder.push(record);
        }
        builder.finish()
    }

    pub fn len(&self) -> usize {
        self.service.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The chunk's dictionary; a [`TextId`] indexes it.
    pub fn texts(&self) -> &[Text] {
        &self.texts
    }

    pub fn text(&self, id: TextId) -> Option<&Text> {
        self.texts.get(id as usize)
    }

    /// The names of the extensions the chunk's records carry.
    pub fn extension_names(&self) -> &[&'static str] {
        &self.extension_names
    }

    /// The distinct charge periods; [`RecordColumns::period_index`] indexes them.
    pub fn periods(&self) -> &[Period] {
        &self.periods
    }

    pub fn period_index(&self, record: usize) -> usize {
        self.period[record] as usize
    }

    pub fn account_of(&self, record: usize) -> &ProviderAccountId {
        &self.accounts[self.account[record] as usize].1
    }

    /// The chunk's accounts (usually one); [`RecordColumns::account_index`] indexes them.
    pub fn accounts(&self) -> impl ExactSizeIterator<Item = &ProviderAccountId> {
        self.accounts.iter().map(|(_, id, _)| id)
    }

    pub fn account_index(&self, record: usize) -> usize {
        self.account[record] as usize
    }

    pub fn billed_currency(&self, record: usize) -> Currency {
        self.billed_currency[record]
    }

    pub fn billed_nanos(&self, record: usize) -> i128 {
        match self.billed_nanos[record] {
            WIDE_NANOS => self
                .billed_wide
                .binary_search_by_key(&(record as u32), |(index, _)| *index)
                .map_or(i128::from(WIDE_NANOS), |at| self.billed_wide[at].1),
            nanos => i128::from(nanos),
        }
    }

    /// The consumed quantity's value and unit, when the record has one.
    pub fn consumed(&self, record: usize) -> Option<(Decimal, TextId)> {
        let unit = self.consumed_unit.get(record, NO_TEXT);
        (unit != NO_TEXT).then(|| (self.consumed_value.get(record, Decimal::ZERO), unit))
    }

    pub fn service(&self, record: usize) -> TextId {
        self.service[record]
    }

    pub fn sub_account(&self, record: usize) -> TextId {
        self.sub_account_id.get(record, NO_TEXT)
    }

    pub fn resource(&self, record: usize) -> TextId {
        self.resource_id.get(record, NO_TEXT)
    }

    /// The id and display name of one grouping dimension of a record, as texts of this chunk.
    pub fn key(&self, record: usize, group_by: super::GroupBy) -> (TextId, TextId) {
        use super::GroupBy;
        match group_by {
            GroupBy::Provider => (self.accounts[self.account[record] as usize].2, NO_TEXT),
            GroupBy::BillingAccount => (
                self.billing_account_id[record],
                self.billing_account_name[record],
            ),
            GroupBy::SubAccount => (
                self.sub_account_id.get(record, NO_TEXT),
                self.sub_account_name.get(record, NO_TEXT),
            ),
            GroupBy::Resource => (
                self.resource_id.get(record, NO_TEXT),
                self.resource_name.get(record, NO_TEXT),
            ),
            GroupBy::Service => (self.service[record], NO_TEXT),
            GroupBy::Sku => (self.sku.get(record, NO_TEXT), NO_TEXT),
            GroupBy::ChargeDimension => (self.charge_dimension.get(record, NO_TEXT), NO_TEXT),
            GroupBy::ChargeCategory => (
                self.category_texts[self.charge_category[record] as usize],
                NO_TEXT,
            ),
        }
    }

    /// Record `index` as it went in.
    pub fn record(&self, index: usize) -> CostRecord {
        let text = |id: TextId| self.text(id).cloned();
        let (provider, provider_account, _) = &self.accounts[self.account[index] as usize];
        let extensions = (self.extension_start[index]..self.extension_start[index + 1])
            .filter_map(|at| {
                let name = self.extension_names[usize::from(self.extension_name[at as usize])];
                Some((name, text(self.extension_value[at as usize])?))
            })
            .collect();
        CostRecord {
            provider: *provider,
            provider_account: provider_account.clone(),
            billing_account: Named {
                id: text(self.billing_account_id[index]).unwrap_or_default(),
                name: text(self.billing_account_name[index]),
            },
            sub_account: text(self.sub_account_id.get(index, NO_TEXT)).map(|id| Named {
                id,
                name: text(self.sub_account_name.get(index, NO_TEXT)),
            }),
            resource: text(self.resource_id.get(index, NO_TEXT)).map(|id| Resource {
                id,
                name: text(self.resource_name.get(index, NO_TEXT)),
                kind: text(self.resource_kind.get(index, NO_TEXT)).unwrap_or_default(),
            }),
            service_name: text(self.service[index]).unwrap_or_default(),
            sku_id: text(self.sku.get(index, NO_TEXT)),
            charge_dimension: text(self.charge_dimension.get(index, NO_TEXT)),
            charge_category: self.charge_category[index],
            charge_period: self.periods[self.period[index] as usize],
            billed_cost: Money::from_nanos(self.billed_currency[index], self.billed_nanos(index)),
            original_amount: Quantity {
                value: self.original_value[index],
                unit: text(self.original_unit[index]).unwrap_or_default(),
            },
            consumed_quantity: self.consumed(index).and_then(|(value, unit)| {
                Some(Quantity {
                    value,
                    unit: text(unit)?,
                })
            }),
            list_unit_price: self
                .price_currency
                .get(index, None)
                .map(|currency| UnitPrice {
                    amount: self.price_amount.get(index, Decimal::ZERO),
                    currency,
                }),
            invoice_id: text(self.invoice_id.get(index, NO_TEXT)),
            extensions,
        }
    }

    /// Every record, in the order they went in.
    pub fn records(&self) -> impl Iterator<Item = CostRecord> + '_ {
        (0..self.len()).map(|index| self.record(index))
    }

    /// What the columns hold on the heap, in bytes: every column's capacity, the dictionary's texts
    /// (each an `Arc<str>`: two counters and the bytes), and the side tables. Texts are counted here
    /// even when a caller still shares them, so the estimate errs on the side of a smaller cache.
    pub fn heap_bytes(&self) -> usize {
        fn column<T>(values: &Vec<T>) -> usize {
            values.capacity() * std::mem::size_of::<T>()
        }
        let texts: usize = self
            .texts
            .iter()
            .map(|text| 2 * std::mem::size_of::<usize>() + text.len())
            .sum();
        let accounts: usize = self
            .accounts
            .iter()
            .map(|(_, id, _)| 2 * std::mem::size_of::<usize>() + id.as_str().len())
            .sum();
        texts
            + accounts
            + column(&self.texts)
            + column(&self.periods)
            + column(&self.accounts)
            + column(&self.account)
            + column(&self.billing_account_id)
            + column(&self.billing_account_name)
            + self.sub_account_id.heap_bytes()
            + self.sub_account_name.heap_bytes()
            + self.resource_id.heap_bytes()
            + self.resource_name.heap_bytes()
            + self.resource_kind.heap_bytes()
            + column(&self.service)
            + self.sku.heap_bytes()
            + self.charge_dimension.heap_bytes()
            + self.invoice_id.heap_bytes()
            + column(&self.charge_category)
            + column(&self.period)
            + column(&self.billed_currency)
            + column(&self.billed_nanos)
            + column(&self.billed_wide)
            + column(&self.original_value)
            + column(&self.original_unit)
            + self.consumed_value.heap_bytes()
            + self.consumed_unit.heap_bytes()
            + self.price_amount.heap_bytes()
            + self.price_currency.heap_bytes()
            + column(&self.extension_start)
            + column(&self.extension_names)
            + column(&self.extension_name)
            + column(&self.extension_value)
    }
}

/// Fills the columns one record at a time, interning texts as they come.
#[derive(Default)]
struct Builder {
    columns: RecordColumns,
    text_ids: FxHashMap<Text, TextId>,
    /// The last text interned: parsers share one `Arc` for a text repeated in consecutive records, so
    /// most lookups end at a pointer comparison.
    last: Option<(Text, TextId)>,
    period_ids: FxHashMap<Period, u32>,
    account_ids: FxHashMap<ProviderAccountId, u32>,
}

impl Builder {
    fn new() -> Self {
        let mut builder = Builder::default();
        builder.columns.extension_start.push(0);
        builder.columns.category_texts = [NO_TEXT; ChargeCategory::ALL.len()];
        builder
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
                let id = self.columns.texts.len() as TextId;
                self.columns.texts.push(text.clone());
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

    fn push(&mut self, record: CostRecord) {
        let before = self.columns.len();
        let account = match self.account_ids.get(&record.provider_account) {
            Some(id) => *id,
            None => {
                let kind = self.intern(Text::from(record.provider.as_str()));
                let id = self.columns.accounts.len() as u32;
                self.columns.accounts.push((
                    record.provider,
                    record.provider_account.clone(),
                    kind,
                ));
                self.account_ids.insert(record.provider_account.clone(), id);
                id
            }
        };
        let category = record.charge_category as usize;
        if self.columns.category_texts[category] == NO_TEXT {
            self.columns.category_texts[category] =
                self.intern(Text::from(record.charge_category.as_str()));
        }
        let period = match self.period_ids.get(&record.charge_period) {
            Some(id) => *id,
            None => {
                let id = self.columns.periods.len() as u32;
                self.columns.periods.push(record.charge_period);
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
        for (name, value) in record.extensions {
            let value = self.intern(value);
            let columns = &mut self.columns;
            let name_index = match columns.extension_names.iter().position(|n| *n == name) {
                Some(at) => at,
                None => {
                    columns.extension_names.push(name);
                    columns.extension_names.len() - 1
                }
            };
            // Extension names are a provider's fixed `x_` columns: a handful, never 65,536.
            columns
                .extension_name
                .push(u16::try_from(name_index).unwrap_or(u16::MAX));
            columns.extension_value.push(value);
        }
        let columns = &mut self.columns;
        columns.account.push(account);
        columns.billing_account_id.push(billing_id);
        columns.billing_account_name.push(billing_name);
        columns.sub_account_id.push(sub_id, NO_TEXT, before);
        columns.sub_account_name.push(sub_name, NO_TEXT, before);
        columns.resource_id.push(resource_id, NO_TEXT, before);
        columns.resource_name.push(resource_name, NO_TEXT, before);
        columns.resource_kind.push(resource_kind, NO_TEXT, before);
        columns.sku.push(sku, NO_TEXT, before);
        columns.charge_dimension.push(dimension, NO_TEXT, before);
        columns.invoice_id.push(invoice, NO_TEXT, before);
        columns.charge_category.push(record.charge_category);
        columns.period.push(period);
        columns.billed_currency.push(record.billed_cost.currency());
        let nanos = record.billed_cost.nanos();
        match i64::try_from(nanos) {
            Ok(narrow) if narrow != WIDE_NANOS => columns.billed_nanos.push(narrow),
            _ => {
                columns.billed_nanos.push(WIDE_NANOS);
                columns.billed_wide.push((before as u32, nanos));
            }
        }
        columns.original_value.push(record.original_amount.value);
        columns.original_unit.push(original_unit);
        columns
            .consumed_value
            .push(consumed_value, Decimal::ZERO, before);
        columns.consumed_unit.push(consumed_unit, NO_TEXT, before);
        columns.price_amount.push(
            record
                .list_unit_price
                .as_ref()
                .map_or(Decimal::ZERO, |p| p.amount),
            Decimal::ZERO,
            before,
        );
        columns
            .price_currency
            .push(record.list_unit_price.map(|p| p.currency), None, before);
        // The service column is pushed last: its length is the record count the others follow.
        columns.service.push(service);
        columns
            .extension_start
            .push(columns.extension_value.len() as u32);
    }

    fn finish(mut self) -> RecordColumns {
        let columns = &mut self.columns;
        let len = columns.len();
        // Exact capacities: the cache weighs what is held, and holds it for hours.
        for sparse in [
            &mut columns.sub_account_id,
            &mut columns.sub_account_name,
            &mut columns.resource_id,
            &mut columns.resource_name,
            &mut columns.resource_kind,
            &mut columns.sku,
            &mut columns.charge_dimension,
            &mut columns.invoice_id,
            &mut columns.consumed_unit,
        ] {
            sparse.finish(len, NO_TEXT);
        }
        columns.consumed_value.finish(len, Decimal::ZERO);
        columns.price_amount.finish(len, Decimal::ZERO);
        columns.price_currency.finish(len, None);
        for dense in [
            &mut columns.account,
            &mut columns.billing_account_id,
            &mut columns.billing_account_name,
            &mut columns.service,
            &mut columns.period,
            &mut columns.original_unit,
            &mut columns.extension_start,
            &mut columns.extension_value,
        ] {
            dense.shrink_to_fit();
        }
        columns.texts.shrink_to_fit();
        columns.periods.shrink_to_fit();
        columns.accounts.shrink_to_fit();
        columns.charge_category.shrink_to_fit();
        columns.billed_currency.shrink_to_fit();
        columns.billed_nanos.shrink_to_fit();
        columns.billed_wide.shrink_to_fit();
        columns.original_value.shrink_to_fit();
        columns.extension_names.shrink_to_fit();
        columns.extension_name.shrink_to_fit();
        self.columns
    }
}
