//! A chunk's records held compactly, the way the cache keeps them: every text once per chunk (a
//! dictionary), each record a row of small integer ids in columns, money as integer nanos and exact
//! decimals, extensions in one side table. Nothing is lost: [`RecordColumns::record`] gives back the
//! record that went in, field for field.

use super::{
    ChargeCategory, CostRecord, Currency, Money, Named, Period, ProviderAccountId, ProviderKind,
    Quantity, Resource, Text, UnitPrice,
};
use rust_decimal::Decimal;
use std::collections::HashMap;

/// A text of the chunk's dictionary.
pub type TextId = u32;

/// The id of an absent text (a record without a sub-account, an unnamed resource, ...).
pub const NO_TEXT: TextId = u32::MAX;

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
    sub_account_id: Vec<TextId>,
    sub_account_name: Vec<TextId>,
    resource_id: Vec<TextId>,
    resource_name: Vec<TextId>,
    resource_kind: Vec<TextId>,
    service: Vec<TextId>,
    sku: Vec<TextId>,
    charge_dimension: Vec<TextId>,
    invoice_id: Vec<TextId>,
    charge_category: Vec<ChargeCategory>,
    period: Vec<u32>,
    billed_currency: Vec<Currency>,
    billed_nanos: Vec<i128>,
    original_value: Vec<Decimal>,
    original_unit: Vec<TextId>,
    /// Meaningful where `consumed_unit` is not [`NO_TEXT`].
    consumed_value: Vec<Decimal>,
    consumed_unit: Vec<TextId>,
    /// Meaningful where `price_currency` is set.
    price_amount: Vec<Decimal>,
    price_currency: Vec<Option<Currency>>,
    /// Record `i`'s extensions are `extensions[extension_start[i]..extension_start[i + 1]]`.
    extension_start: Vec<u32>,
    extensions: Vec<(&'static str, TextId)>,
}

impl RecordColumns {
    pub fn from_records(records: Vec<CostRecord>) -> RecordColumns {
        let mut builder = Builder::default();
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

    pub fn billed_currency(&self, record: usize) -> Currency {
        self.billed_currency[record]
    }

    pub fn billed_nanos(&self, record: usize) -> i128 {
        self.billed_nanos[record]
    }

    /// The consumed quantity's value and unit, when the record has one.
    pub fn consumed(&self, record: usize) -> Option<(Decimal, TextId)> {
        let unit = self.consumed_unit[record];
        (unit != NO_TEXT).then(|| (self.consumed_value[record], unit))
    }

    pub fn service(&self, record: usize) -> TextId {
        self.service[record]
    }

    pub fn sub_account(&self, record: usize) -> TextId {
        self.sub_account_id[record]
    }

    pub fn resource(&self, record: usize) -> TextId {
        self.resource_id[record]
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
            GroupBy::SubAccount => (self.sub_account_id[record], self.sub_account_name[record]),
            GroupBy::Resource => (self.resource_id[record], self.resource_name[record]),
            GroupBy::Service => (self.service[record], NO_TEXT),
            GroupBy::Sku => (self.sku[record], NO_TEXT),
            GroupBy::ChargeDimension => (self.charge_dimension[record], NO_TEXT),
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
                let (name, value) = self.extensions[at as usize];
                Some((name, text(value)?))
            })
            .collect();
        CostRecord {
            provider: *provider,
            provider_account: provider_account.clone(),
            billing_account: Named {
                id: text(self.billing_account_id[index]).unwrap_or_default(),
                name: text(self.billing_account_name[index]),
            },
            sub_account: text(self.sub_account_id[index]).map(|id| Named {
                id,
                name: text(self.sub_account_name[index]),
            }),
            resource: text(self.resource_id[index]).map(|id| Resource {
                id,
                name: text(self.resource_name[index]),
                kind: text(self.resource_kind[index]).unwrap_or_default(),
            }),
            service_name: text(self.service[index]).unwrap_or_default(),
            sku_id: text(self.sku[index]),
            charge_dimension: text(self.charge_dimension[index]),
            charge_category: self.charge_category[index],
            charge_period: self.periods[self.period[index] as usize],
            billed_cost: Money::from_nanos(self.billed_currency[index], self.billed_nanos[index]),
            original_amount: Quantity {
                value: self.original_value[index],
                unit: text(self.original_unit[index]).unwrap_or_default(),
            },
            consumed_quantity: text(self.consumed_unit[index]).map(|unit| Quantity {
                value: self.consumed_value[index],
                unit,
            }),
            list_unit_price: self.price_currency[index].map(|currency| UnitPrice {
                amount: self.price_amount[index],
                currency,
            }),
            invoice_id: text(self.invoice_id[index]),
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
            + column(&self.sub_account_id)
            + column(&self.sub_account_name)
            + column(&self.resource_id)
            + column(&self.resource_name)
            + column(&self.resource_kind)
            + column(&self.service)
            + column(&self.sku)
            + column(&self.charge_dimension)
            + column(&self.invoice_id)
            + column(&self.charge_category)
            + column(&self.period)
            + column(&self.billed_currency)
            + column(&self.billed_nanos)
            + column(&self.original_value)
            + column(&self.original_unit)
            + column(&self.consumed_value)
            + column(&self.consumed_unit)
            + column(&self.price_amount)
            + column(&self.price_currency)
            + column(&self.extension_start)
            + column(&self.extensions)
    }
}

/// Fills the columns one record at a time, interning texts as they come.
#[derive(Default)]
struct Builder {
    columns: RecordColumns,
    text_ids: HashMap<Text, TextId>,
    period_ids: HashMap<Period, u32>,
    account_ids: HashMap<ProviderAccountId, u32>,
}

impl Builder {
    fn intern(&mut self, text: Text) -> TextId {
        if let Some(id) = self.text_ids.get(&text) {
            return *id;
        }
        let id = self.columns.texts.len() as TextId;
        self.columns.texts.push(text.clone());
        self.text_ids.insert(text, id);
        id
    }

    fn intern_option(&mut self, text: Option<Text>) -> TextId {
        text.map_or(NO_TEXT, |text| self.intern(text))
    }

    fn push(&mut self, record: CostRecord) {
        if self.columns.extension_start.is_empty() {
            self.columns.extension_start.push(0);
            self.columns.category_texts = [NO_TEXT; ChargeCategory::ALL.len()];
        }
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
        let extensions: Vec<(&'static str, TextId)> = record
            .extensions
            .into_iter()
            .map(|(name, value)| (name, self.intern(value)))
            .collect();
        let columns = &mut self.columns;
        columns.account.push(account);
        columns.billing_account_id.push(billing_id);
        columns.billing_account_name.push(billing_name);
        columns.sub_account_id.push(sub_id);
        columns.sub_account_name.push(sub_name);
        columns.resource_id.push(resource_id);
        columns.resource_name.push(resource_name);
        columns.resource_kind.push(resource_kind);
        columns.service.push(service);
        columns.sku.push(sku);
        columns.charge_dimension.push(dimension);
        columns.invoice_id.push(invoice);
        columns.charge_category.push(record.charge_category);
        columns.period.push(period);
        columns.billed_currency.push(record.billed_cost.currency());
        columns.billed_nanos.push(record.billed_cost.nanos());
        columns.original_value.push(record.original_amount.value);
        columns.original_unit.push(original_unit);
        columns.consumed_value.push(consumed_value);
        columns.consumed_unit.push(consumed_unit);
        columns.price_amount.push(
            record
                .list_unit_price
                .as_ref()
                .map_or(Decimal::ZERO, |p| p.amount),
        );
        columns
            .price_currency
            .push(record.list_unit_price.map(|p| p.currency));
        columns.extensions.extend(extensions);
        columns
            .extension_start
            .push(columns.extensions.len() as u32);
    }

    fn finish(mut self) -> RecordColumns {
        let columns = &mut self.columns;
        if columns.extension_start.is_empty() {
            columns.extension_start.push(0);
            columns.category_texts = [NO_TEXT; ChargeCategory::ALL.len()];
        }
        // Exact capacities: the cache weighs what is held, and holds it for hours.
        columns.texts.shrink_to_fit();
        columns.periods.shrink_to_fit();
        columns.accounts.shrink_to_fit();
        columns.account.shrink_to_fit();
        columns.billing_account_id.shrink_to_fit();
        columns.billing_account_name.shrink_to_fit();
        columns.sub_account_id.shrink_to_fit();
        columns.sub_account_name.shrink_to_fit();
        columns.resource_id.shrink_to_fit();
        columns.resource_name.shrink_to_fit();
        columns.resource_kind.shrink_to_fit();
        columns.service.shrink_to_fit();
        columns.sku.shrink_to_fit();
        columns.charge_dimension.shrink_to_fit();
        columns.invoice_id.shrink_to_fit();
        columns.charge_category.shrink_to_fit();
        columns.period.shrink_to_fit();
        columns.billed_currency.shrink_to_fit();
        columns.billed_nanos.shrink_to_fit();
        columns.original_value.shrink_to_fit();
        columns.original_unit.shrink_to_fit();
        columns.consumed_value.shrink_to_fit();
        columns.consumed_unit.shrink_to_fit();
        columns.price_amount.shrink_to_fit();
        columns.price_currency.shrink_to_fit();
        columns.extension_start.shrink_to_fit();
        columns.extensions.shrink_to_fit();
        self.columns
    }
}
