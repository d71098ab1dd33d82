//! Wire types of the Elastic Cloud billing APIs: v1 deployment costs and the v2 billing API. Every
//! amount is read from its text (`ExactNumber`) whatever the spec says about integer vs double.
//! Fields costd uses are required; the rest of what the spec lists may be absent, and unknown fields
//! are ignored, so a small upstream change does not fail a whole account.

use crate::providers::exact_json::ExactNumber;
use serde::Deserialize;

/// v1 `GET /api/v1/billing/costs/{organization_id}/deployments`.
#[derive(Debug, Deserialize)]
pub struct DeploymentCosts {
    pub total_cost: ExactNumber,
    pub deployments: Vec<Deployment>,
}

#[derive(Debug, Deserialize)]
pub struct Deployment {
    pub deployment_id: String,
    pub deployment_name: String,
    pub costs: DeploymentCostBreakdown,
    pub hourly_rate: ExactNumber,
}

#[derive(Debug, Deserialize)]
pub struct DeploymentCostBreakdown {
    pub total: ExactNumber,
    pub dimensions: Vec<DimensionCost>,
}

/// A v1 billing dimension: capacity, data_in, data_internode, data_out, storage_api, storage_bytes.
#[derive(Debug, Deserialize)]
pub struct DimensionCost {
    #[serde(rename = "type")]
    pub kind: String,
    pub cost: ExactNumber,
}

/// v2 `costs/instances`.
#[derive(Debug, Deserialize)]
pub struct Instances {
    pub total_ecu: ExactNumber,
    pub instances: Vec<Instance>,
}

#[derive(Debug, Deserialize)]
pub struct Instance {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub total_ecu: ExactNumber,
    #[serde(rename = "type")]
    pub kind: String,
    pub product_line_items: Vec<LineItem>,
}

/// v2 `costs/items` and `costs/instances/{instance_id}/items`.
#[derive(Debug, Deserialize)]
pub struct Items {
    pub total_ecu: ExactNumber,
    pub products: Vec<Product>,
}

#[derive(Debug, Deserialize)]
pub struct Product {
    pub total_ecu: ExactNumber,
    #[serde(rename = "type")]
    pub kind: String,
    pub product_line_items: Vec<LineItem>,
}

/// One SKU's charge over the period.
#[derive(Debug, Deserialize)]
pub struct LineItem {
    pub name: String,
    pub sku: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub unit: String,
    #[serde(default, rename = "kind")]
    pub category: Option<String>,
    pub total_ecu: ExactNumber,
    pub quantity: ValueWithText,
    pub rate: ValueWithText,
}

/// `Quantity` and `Rate`: a value and how the upstream formats it.
#[derive(Debug, Deserialize)]
pub struct ValueWithText {
    pub value: ExactNumber,
    #[serde(default)]
    pub formatted_value: Option<String>,
}

/// v2 `charts` and `instances/{instance_id}/charts`.
#[derive(Debug, Deserialize)]
pub struct Charts {
    pub data: Vec<ChartBucket>,
}

#[derive(Debug, Deserialize)]
pub struct ChartBucket {
    /// Start of the bucket; seconds or milliseconds since the epoch (the spec says only int64).
    pub timestamp: i64,
    pub values: Vec<ChartValue>,
}

#[derive(Debug, Deserialize)]
pub struct ChartValue {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    pub value: ExactNumber,
}

/// The v1 error body, also used by v2 where it sends JSON (e.g. throttling).
#[derive(Debug, Deserialize)]
pub struct ErrorBody {
    pub errors: Vec<ErrorEntry>,
}

#[derive(Debug, Deserialize)]
pub struct ErrorEntry {
    pub code: String,
    #[serde(default)]
    pub message: Option<String>,
}
