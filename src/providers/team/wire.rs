//! Wire types of `GET /teams/{teamId}/billing/cost`, as documented. Unknown fields are ignored so the
//! upstream may add some; every documented field is required because the document says so.

use crate::providers::exact_json::ExactNumber;
use serde::Deserialize;

/// The 200 body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CostResponse {
    pub team_id: String,
    pub pricing_sheet_id: String,
    /// RFC 3339 date-time, inclusive.
    pub start_date: String,
    /// RFC 3339 date-time, exclusive.
    pub end_date: String,
    pub operation_costs: Vec<OperationCost>,
    pub total_cost_nanodollars: ExactNumber,
    /// A float rendering of the nanodollar total; only checked against it.
    pub total_cost_usd: ExactNumber,
    pub usage_record_count: ExactNumber,
    pub calculated_at: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationCost {
    pub operation_type: String,
    pub dimensions: Vec<DimensionCost>,
    pub total_cost_nanodollars: ExactNumber,
    pub total_cost_usd: ExactNumber,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DimensionCost {
    pub dimension: String,
    /// Consumed quantity.
    pub units: ExactNumber,
    /// List price of one unit, in nanodollars.
    pub unit_price_nanodollars: ExactNumber,
    /// Billed cost, in nanodollars.
    pub cost_nanodollars: ExactNumber,
    pub cost_usd: ExactNumber,
    pub pricing_rule_id: String,
}

/// The error body of 400/401/403/404 (`{error, code?, details?, retryable?}`), also accepting the
/// authentication page's `{error, message}` form.
#[derive(Debug, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub code: Option<String>,
    pub message: Option<String>,
    pub retryable: Option<bool>,
}
