//! costd's records as FOCUS 1.2 rows: the columns, in file order, and how each is filled. Both
//! writers read this one table, so CSV and Parquet can never disagree on a column.

use super::ExportError;
use crate::domain::{
    ChargeCategory, CostRecord, Currency, EXTENSION_NAMES, Period, ProviderKind, parse_decimal,
};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use std::borrow::Cow;

/// The FOCUS version the columns follow.
pub const FOCUS_VERSION: &str = "1.2";

/// The extension Elastic records carry their ECU rate in: it makes ECU the pricing currency.
const USD_PER_ECU: &str = "x_usd_per_ecu";

/// How a column is typed in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Exact decimal: CSV text, Parquet DECIMAL(38, 18).
    Decimal,
    /// UTC instant: CSV `YYYY-MM-DDTHH:MM:SSZ`, Parquet timestamp (seconds, UTC).
    DateTime,
    Text,
    Bool,
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Null,
    Decimal(Decimal),
    DateTime(DateTime<Utc>),
    Text(&'a str),
    Bool(bool),
}

/// A column of the fixed part of the schema.
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    pub cell: for<'a> fn(&'a FocusRow) -> Cell<'a>,
}

const fn column(
    name: &'static str,
    kind: Kind,
    cell: for<'a> fn(&'a FocusRow) -> Cell<'a>,
) -> Column {
    Column { name, kind, cell }
}

fn text(value: &str) -> Cell<'_> {
    Cell::Text(value)
}

fn optional(value: Option<&str>) -> Cell<'_> {
    value.map_or(Cell::Null, Cell::Text)
}

fn decimal(value: Option<Decimal>) -> Cell<'static> {
    value.map_or(Cell::Null, Cell::Decimal)
}

/// The FOCUS columns (mandatory, the conditional ones costd knows, the recommended ones the
/// validator asks for, the 1.3 names beside the deprecated ones), then costd's own `x_` columns.
/// The provider extensions follow them ([`EXTENSION_NAMES`]).
pub static COLUMNS: &[Column] = &[
    column("BilledCost", Kind::Decimal, |r| Cell::Decimal(r.billed)),
    column("EffectiveCost", Kind::Decimal, |r| Cell::Decimal(r.billed)),
    column("ListCost", Kind::Decimal, |r| Cell::Decimal(r.list_cost)),
    column("ContractedCost", Kind::Decimal, |r| Cell::Decimal(r.billed)),
    column("BillingAccountId", Kind::Text, |r| {
        text(&r.record.billing_account.id)
    }),
    column("BillingAccountName", Kind::Text, |r| {
        optional(r.record.billing_account.name.as_deref())
    }),
    column("BillingAccountType", Kind::Text, |r| {
        text(r.provider.billing_account_type)
    }),
    column("BillingCurrency", Kind::Text, |r| {
        text(r.billing_currency.as_str())
    }),
    column("BillingPeriodStart", Kind::DateTime, |r| {
        Cell::DateTime(r.billing_period.start())
    }),
    column("BillingPeriodEnd", Kind::DateTime, |r| {
        Cell::DateTime(r.billing_period.end())
    }),
    column("ChargeCategory", Kind::Text, |r| {
        text(charge_category(r.record.charge_category))
    }),
    // costd has no corrections of earlier billing periods: always null.
    column("ChargeClass", Kind::Text, |_| Cell::Null),
    column("ChargeDescription", Kind::Text, |r| text(&r.description)),
    column("ChargeFrequency", Kind::Text, |r| text(r.frequency)),
    column("ChargePeriodStart", Kind::DateTime, |r| {
        Cell::DateTime(r.record.charge_period.start())
    }),
    column("ChargePeriodEnd", Kind::DateTime, |r| {
        Cell::DateTime(r.record.charge_period.end())
    }),
    column("ConsumedQuantity", Kind::Decimal, |r| {
        decimal(r.consumed.as_ref().map(|c| c.0))
    }),
    column("ConsumedUnit", Kind::Text, |r| {
        optional(r.consumed.as_ref().map(|c| c.1.as_ref()))
    }),
    // FOCUS 1.3: the provider hosting the resource when it is not the service provider. No upstream
    // says so in a field, so it is unknown: null.
    column("HostProviderName", Kind::Text, |_| Cell::Null),
    column("InvoiceId", Kind::Text, |r| {
        optional(r.record.invoice_id.as_deref())
    }),
    column("InvoiceIssuerName", Kind::Text, |r| text(r.provider.name)),
    column("ListUnitPrice", Kind::Decimal, |r| {
        decimal(r.pricing.as_ref().map(|p| p.list_unit_price))
    }),
    column("PricingCurrency", Kind::Text, |r| text(&r.pricing_currency)),
    column("PricingCurrencyEffectiveCost", Kind::Decimal, |r| {
        Cell::Decimal(r.pricing_currency_effective_cost)
    }),
    column("PricingCurrencyListUnitPrice", Kind::Decimal, |r| {
        decimal(
            r.pricing
                .as_ref()
                .map(|p| p.pricing_currency_list_unit_price),
        )
    }),
    column("PricingQuantity", Kind::Decimal, |r| {
        decimal(r.pricing.as_ref().map(|p| p.quantity))
    }),
    column("PricingUnit", Kind::Text, |r| {
        optional(r.pricing.as_ref().map(|p| p.unit.as_ref()))
    }),
    // Deprecated in 1.3 for ServiceProviderName, and still mandatory in 1.2.
    column("ProviderName", Kind::Text, |r| text(r.provider.name)),
    column("PublisherName", Kind::Text, |r| text(r.provider.name)),
    column("ResourceId", Kind::Text, |r| {
        optional(r.record.resource.as_ref().map(|x| x.id.as_ref()))
    }),
    column("ResourceName", Kind::Text, |r| {
        optional(r.record.resource.as_ref().and_then(|x| x.name.as_deref()))
    }),
    column("ResourceType", Kind::Text, |r| {
        optional(r.record.resource.as_ref().map(|x| x.kind.as_ref()))
    }),
    column("ServiceCategory", Kind::Text, |r| text(r.service.0)),
    column("ServiceName", Kind::Text, |r| text(&r.record.service_name)),
    column("ServiceProviderName", Kind::Text, |r| text(r.provider.name)),
    column("ServiceSubcategory", Kind::Text, |r| text(r.service.1)),
    column("SkuId", Kind::Text, |r| optional(r.sku.as_deref())),
    column("SubAccountId", Kind::Text, |r| {
        optional(r.record.sub_account.as_ref().map(|x| x.id.as_ref()))
    }),
    column("SubAccountName", Kind::Text, |r| {
        optional(
            r.record
                .sub_account
                .as_ref()
                .and_then(|x| x.name.as_deref()),
        )
    }),
    column("SubAccountType", Kind::Text, |r| {
        optional(r.sub_account_type)
    }),
    column("x_provider", Kind::Text, |r| {
        text(r.record.provider.as_str())
    }),
    column("x_provider_account", Kind::Text, |r| {
        text(r.record.provider_account.as_str())
    }),
    column("x_charge_dimension", Kind::Text, |r| {
        optional(r.record.charge_dimension.as_deref())
    }),
    column("x_original_amount", Kind::Decimal, |r| {
        Cell::Decimal(r.record.original_amount.value)
    }),
    column("x_original_unit", Kind::Text, |r| {
        text(&r.record.original_amount.unit)
    }),
    column("x_estimated", Kind::Bool, |r| Cell::Bool(r.estimated)),
];

/// The provider extensions are written as `x_` text columns after [`COLUMNS`], always all of
/// [`EXTENSION_NAMES`] (the domain's one list), null on a row without one: every export has the same
/// columns whichever providers, accounts and rows it holds, since a warehouse table loading several
/// exports needs one schema.
/// How many columns every file has.
pub fn column_count() -> usize {
    COLUMNS.len() + EXTENSION_NAMES.len()
}

/// Every column's name and kind, in file order.
pub fn columns() -> impl Iterator<Item = (&'static str, Kind)> {
    COLUMNS
        .iter()
        .map(|c| (c.name, c.kind))
        .chain(EXTENSION_NAMES.iter().map(|name| (*name, Kind::Text)))
}

/// Column `index` of `row`.
pub fn cell(row: &FocusRow, index: usize) -> Cell<'_> {
    match COLUMNS.get(index) {
        Some(column) => (column.cell)(row),
        None => index
            .checked_sub(COLUMNS.len())
            .and_then(|extension| EXTENSION_NAMES.get(extension))
            .and_then(|name| row.record.extensions.get(name))
            .map_or(Cell::Null, |value| Cell::Text(value)),
    }
}

/// Who a provider kind is in FOCUS terms.
#[derive(Debug, Clone, Copy)]
struct ProviderFacts {
    /// ProviderName, PublisherName, InvoiceIssuerName and (1.3) ServiceProviderName: each upstream
    /// sells, publishes and invoices its own service.
    name: &'static str,
    billing_account_type: &'static str,
}

fn provider_facts(kind: ProviderKind) -> ProviderFacts {
    match kind {
        ProviderKind::Atlas => ProviderFacts {
            name: "MongoDB",
            billing_account_type: "Organization",
        },
        ProviderKind::Elastic => ProviderFacts {
            name: "Elastic",
            billing_account_type: "Organization",
        },
        ProviderKind::TeamBilling => ProviderFacts {
            name: "Catalyzed",
            billing_account_type: "Team",
        },
    }
}

/// ServiceCategory and ServiceSubcategory of a provider's service (FOCUS 1.2's allowed values):
/// chosen per upstream service name for what the service is bought for; a name not listed here is
/// "Other".
fn service_category(kind: ProviderKind, service: &str) -> (&'static str, &'static str) {
    const OTHER: (&str, &str) = ("Other", "Other (Other)");
    match (kind, service) {
        (ProviderKind::Atlas, "Clusters" | "Serverless Instances") => {
            ("Databases", "NoSQL Databases")
        }
        (ProviderKind::Atlas, "Premium Features") => ("Databases", "Other (Databases)"),
        (ProviderKind::Atlas, "Storage") => ("Storage", "Block Storage"),
        (ProviderKind::Atlas, "Backup" | "Legacy Backup") => ("Storage", "Backup Storage"),
        (ProviderKind::Atlas, "Data Transfer") => ("Networking", "Other (Networking)"),
        (ProviderKind::Atlas, "BI Connector" | "Charts") => ("Analytics", "Business Intelligence"),
        (ProviderKind::Atlas, "Atlas Data Federation") => ("Analytics", "Data Processing"),
        (ProviderKind::Atlas, "Atlas Stream Processing") => ("Analytics", "Streaming Analytics"),
        (ProviderKind::Atlas, "App Services") => ("Web", "Application Platforms"),
        (ProviderKind::Atlas, "Cloud Manager" | "Cloud Manager Standard/Premium") => (
            "Management and Governance",
            "Other (Management and Governance)",
        ),
        (ProviderKind::Atlas, "Support" | "Flex Consulting") => {
            ("Management and Governance", "Support")
        }
        // Elastic's service is the instance type: a hosted deployment or a serverless project.
        (ProviderKind::Elastic, "deployment" | "elasticsearch") => ("Analytics", "Search"),
        (ProviderKind::Elastic, "observability") => ("Management and Governance", "Observability"),
        (ProviderKind::Elastic, "security") => ("Security", "Threat Detection and Response"),
        // Catalyzed is an AI data platform: its operation types.
        (ProviderKind::TeamBilling, "inference" | "embedding") => {
            ("AI and Machine Learning", "Generative AI")
        }
        (ProviderKind::TeamBilling, "fine_tuning") => {
            ("AI and Machine Learning", "Machine Learning")
        }
        (ProviderKind::TeamBilling, "storage") => ("Storage", "Storage Platforms"),
        (ProviderKind::TeamBilling, _) => {
            ("AI and Machine Learning", "Other (AI and Machine Learning)")
        }
        _ => OTHER,
    }
}

fn charge_category(category: ChargeCategory) -> &'static str {
    match category {
        ChargeCategory::Usage => "Usage",
        ChargeCategory::Purchase => "Purchase",
        ChargeCategory::Tax => "Tax",
        ChargeCategory::Credit => "Credit",
        ChargeCategory::Adjustment => "Adjustment",
    }
}

/// A unit in FOCUS Unit Format: words separated by spaces, so an upstream's `input_tokens` is
/// `input tokens`; other units are kept as sent.
fn focus_unit(unit: &str) -> Cow<'_, str> {
    if unit.contains('_') {
        Cow::Owned(unit.replace('_', " "))
    } else {
        Cow::Borrowed(unit)
    }
}

/// How a charge was priced.
#[derive(Debug, Clone)]
pub struct Pricing {
    pub quantity: Decimal,
    pub unit: Cow<'static, str>,
    /// In the billing currency.
    pub list_unit_price: Decimal,
    /// In the pricing currency.
    pub pricing_currency_list_unit_price: Decimal,
}

/// One record with everything FOCUS derives from it.
#[derive(Debug, Clone)]
pub struct FocusRow {
    pub record: CostRecord,
    pub estimated: bool,
    provider: ProviderFacts,
    billing_currency: Currency,
    billed: Decimal,
    list_cost: Decimal,
    billing_period: Period,
    description: String,
    frequency: &'static str,
    consumed: Option<(Decimal, Cow<'static, str>)>,
    pricing: Option<Pricing>,
    pricing_currency: Cow<'static, str>,
    pricing_currency_effective_cost: Decimal,
    service: (&'static str, &'static str),
    sku: Option<Cow<'static, str>>,
    sub_account_type: Option<&'static str>,
}

impl FocusRow {
    pub fn new(record: CostRecord, estimated: bool) -> Result<FocusRow, ExportError> {
        let inexact = |what: &'static str| ExportError::Inexact {
            column: what,
            account: record.provider_account.to_string(),
        };
        let billed = record
            .billed_cost
            .to_decimal()
            .map_err(|_| inexact("BilledCost"))?;
        let usage = matches!(
            record.charge_category,
            ChargeCategory::Usage | ChargeCategory::Purchase
        );
        // ECU is the pricing currency of a record that states its ECU rate; USD otherwise.
        let ecu_rate = record
            .extensions
            .get(USD_PER_ECU)
            .filter(|_| record.original_amount.unit.as_ref() == "ECU")
            .and_then(|rate| parse_decimal(rate).ok())
            .filter(|rate| !rate.is_zero());
        let (pricing_currency, pricing_currency_effective_cost) = match ecu_rate {
            Some(_) => (Cow::Borrowed("ECU"), record.original_amount.value),
            None => (currency_text(record.billed_cost.currency()), billed),
        };
        let pricing = if !usage {
            // A credit, tax or adjustment is not priced per unit; FOCUS leaves those null.
            None
        } else {
            let unit_priced = match (&record.consumed_quantity, &record.list_unit_price) {
                (Some(quantity), Some(price)) => Some(Pricing {
                    quantity: quantity.value,
                    unit: Cow::Owned(focus_unit(&quantity.unit).into_owned()),
                    list_unit_price: price.amount,
                    pricing_currency_list_unit_price: match ecu_rate {
                        Some(rate) => price
                            .amount
                            .checked_div(rate)
                            .ok_or_else(|| inexact("PricingCurrencyListUnitPrice"))?
                            .normalize(),
                        None => price.amount,
                    },
                }),
                _ => None,
            };
            // Known only by its amount: priced in its own currency, one unit of it at a time.
            Some(unit_priced.unwrap_or_else(|| match ecu_rate {
                Some(rate) => Pricing {
                    quantity: record.original_amount.value,
                    unit: Cow::Borrowed("ECU"),
                    list_unit_price: rate,
                    pricing_currency_list_unit_price: Decimal::ONE,
                },
                None => Pricing {
                    quantity: billed,
                    unit: currency_text(record.billed_cost.currency()),
                    list_unit_price: Decimal::ONE,
                    pricing_currency_list_unit_price: Decimal::ONE,
                },
            }))
        };
        let list_cost = match &pricing {
            Some(pricing) => pricing
                .list_unit_price
                .checked_mul(pricing.quantity)
                .ok_or_else(|| inexact("ListCost"))?
                .normalize(),
            None => billed,
        };
        let consumed = record
            .consumed_quantity
            .as_ref()
            .filter(|_| record.charge_category == ChargeCategory::Usage)
            .map(|q| (q.value, Cow::Owned(focus_unit(&q.unit).into_owned())));
        let sku: Option<Cow<'static, str>> = match (&record.sku_id, &record.charge_dimension) {
            _ if !usage => None,
            (Some(sku), _) => Some(Cow::Owned(sku.to_string())),
            // No upstream SKU: the priced item is the service (and its billing dimension).
            (None, Some(dimension)) => {
                Some(Cow::Owned(format!("{}/{dimension}", record.service_name)))
            }
            (None, None) => Some(Cow::Owned(record.service_name.to_string())),
        };
        let description = match (
            record.extensions.get("x_line_item_name"),
            &record.charge_dimension,
        ) {
            (Some(line_item), _) => line_item.to_string(),
            (None, Some(dimension)) => format!("{} {}", record.service_name, focus_unit(dimension)),
            (None, None) => record.service_name.to_string(),
        };
        let sub_account_type = record.sub_account.as_ref().map(|_| match record.provider {
            ProviderKind::Atlas => "Project",
            ProviderKind::Elastic
                if record
                    .resource
                    .as_ref()
                    .is_some_and(|r| r.kind.as_ref() == "deployment") =>
            {
                "Deployment"
            }
            ProviderKind::Elastic => "Serverless Project",
            ProviderKind::TeamBilling => "Team",
        });
        Ok(FocusRow {
            provider: provider_facts(record.provider),
            billing_currency: record.billed_cost.currency(),
            billed,
            list_cost,
            billing_period: Period::month_of(record.charge_period.start()),
            description,
            frequency: if usage { "Usage-Based" } else { "One-Time" },
            consumed,
            pricing,
            pricing_currency,
            pricing_currency_effective_cost,
            service: service_category(record.provider, &record.service_name),
            sku,
            sub_account_type,
            record,
            estimated,
        })
    }
}

fn currency_text(currency: Currency) -> Cow<'static, str> {
    Cow::Owned(currency.as_str().to_string())
}
