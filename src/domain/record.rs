//! The normalized, FOCUS-aligned cost record every provider produces.

use super::{Currency, Money, Period, ProviderAccountId, ProviderKind};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, sync::Arc};

/// Shared text: the same id appears in many records, so it is stored once.
pub type Text = Arc<str>;

/// An identifier with the upstream's display name, when it gives one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Named {
    pub id: Text,
    pub name: Option<Text>,
}

/// FOCUS Resource: id, name and type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resource {
    pub id: Text,
    pub name: Option<Text>,
    pub kind: Text,
}

/// An exact decimal amount of some unit, e.g. 24 "hours" or 19.1808 "ECU".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Quantity {
    pub value: Decimal,
    pub unit: Text,
}

/// The price of one consumed unit, exact.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnitPrice {
    pub amount: Decimal,
    pub currency: Currency,
}

/// FOCUS ChargeCategory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChargeCategory {
    Usage,
    Purchase,
    Tax,
    Credit,
    Adjustment,
}

impl ChargeCategory {
    pub const ALL: [ChargeCategory; 5] = [
        ChargeCategory::Usage,
        ChargeCategory::Purchase,
        ChargeCategory::Tax,
        ChargeCategory::Credit,
        ChargeCategory::Adjustment,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            ChargeCategory::Usage => "usage",
            ChargeCategory::Purchase => "purchase",
            ChargeCategory::Tax => "tax",
            ChargeCategory::Credit => "credit",
            ChargeCategory::Adjustment => "adjustment",
        }
    }
}

/// One normalized cost record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostRecord {
    pub provider: ProviderKind,
    pub provider_account: ProviderAccountId,
    pub billing_account: Named,
    pub sub_account: Option<Named>,
    pub resource: Option<Resource>,
    pub service_name: Text,
    pub sku_id: Option<Text>,
    pub charge_dimension: Option<Text>,
    pub charge_category: ChargeCategory,
    pub charge_period: Period,
    /// Always USD.
    pub billed_cost: Money,
    /// The amount exactly as the upstream stated it, in its own unit.
    pub original_amount: Quantity,
    pub consumed_quantity: Option<Quantity>,
    pub list_unit_price: Option<UnitPrice>,
    pub invoice_id: Option<Text>,
    /// FOCUS `x_` columns, e.g. `x_pricing_rule_id`.
    pub extensions: BTreeMap<&'static str, Text>,
}

/// Every extension a provider gives its records, as the FOCUS `x_` column it becomes: the one list
/// that the stored form and the export read.
pub const EXTENSION_NAMES: &[&str] = &[
    // Elastic: a deployment's hourly rate in ECU, its line item's kind and name, the rate as the
    // console shows it, and the account's configured USD per ECU.
    "x_hourly_rate_ecu",
    "x_line_item_kind",
    "x_line_item_name",
    "x_rate_formatted",
    "x_usd_per_ecu",
    // The team billing API: the pricing sheet and rule a charge was priced by.
    "x_pricing_rule_id",
    "x_pricing_sheet_id",
];

/// An upstream total that did not match its parts. The data is kept as sent; this says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataQualityWarning {
    /// Stable code, e.g. `TOTAL_MISMATCH`.
    pub code: &'static str,
    pub message: String,
}

/// A warning as stored: its code read as text, then matched to the `&'static str` it was written from.
#[derive(Deserialize)]
struct StoredWarning {
    code: String,
    message: String,
}

/// The codes providers give warnings.
const WARNING_CODES: [&str; 4] = [
    "PERIOD_MISMATCH",
    "ACCOUNT_MISMATCH",
    "TOTAL_MISMATCH",
    "USD_MISMATCH",
];

// By hand: a derived impl would borrow the `&'static str` from the input.
impl<'de> Deserialize<'de> for DataQualityWarning {
    /// A code this build does not know (a newer replica's) reads as `OTHER` rather than failing the
    /// whole stored value.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = StoredWarning::deserialize(deserializer)?;
        Ok(DataQualityWarning {
            code: WARNING_CODES
                .into_iter()
                .find(|known| *known == stored.code)
                .unwrap_or("OTHER"),
            message: stored.message,
        })
    }
}
