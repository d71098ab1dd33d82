//! Wire types of the Atlas Cost Explorer (API version 2023-01-01). Rows keep only `usageAmount` and
//! `usageDate` required (upstream-facts Assumption 1); every other field is optional and unknown fields
//! are ignored.

use crate::providers::exact_json::ExactNumber;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The versioned media type of every request and answer.
pub const MEDIA_TYPE: &str = "application/vnd.atlas.2023-01-01+json";

/// The services the document lists.
pub const SERVICES: [&str; 18] = [
    "Atlas",
    "Clusters",
    "Storage",
    "Serverless Instances",
    "Backup",
    "Data Transfer",
    "BI Connector",
    "Premium Features",
    "Atlas Data Federation",
    "Atlas Stream Processing",
    "App Services",
    "Charts",
    "Cloud Manager",
    "Cloud Manager Standard/Premium",
    "Legacy Backup",
    "Flex Consulting",
    "Support",
    "Credits",
];

/// The body of `POST .../costExplorer/usage`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateUsageQuery {
    /// First of a month, inclusive.
    pub start_date: String,
    /// First of a month, exclusive.
    pub end_date: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub organizations: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// organizations | projects | clusters | services; only with a filter value for that dimension.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_partial_matches: Option<bool>,
}

/// The 202 answer.
#[derive(Debug, Deserialize)]
pub struct CreatedToken {
    pub token: String,
}

/// A poll answer with `envelope=true`: the real status travels in the body.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    pub status: u16,
    #[serde(borrow, default)]
    pub content: Option<&'a RawValue>,
}

/// The finished result.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageResult {
    pub usage_details: Vec<UsageRow>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageRow {
    pub invoice_id: Option<String>,
    pub organization_id: Option<String>,
    pub organization_name: Option<String>,
    pub project_id: Option<String>,
    pub project_name: Option<String>,
    pub cluster_id: Option<String>,
    pub cluster_name: Option<String>,
    pub service: Option<String>,
    /// USD.
    pub usage_amount: ExactNumber,
    /// `YYYY-MM-DD`, the first of the month the usage belongs to.
    pub usage_date: String,
}

/// The Atlas error body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub error_code: Option<String>,
    pub reason: Option<String>,
    pub detail: Option<String>,
}
