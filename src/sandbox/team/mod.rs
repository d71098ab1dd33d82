//! Emulator of the team billing API (Catalyzed): `GET /teams/{teamId}/billing/cost`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::any;
use chrono::{DateTime, SecondsFormat, Utc};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::Serialize;
use serde_json::{Value, json};

use crate::sandbox::authorization::credential;
use crate::sandbox::fault::{Variant, json_response};
use crate::sandbox::recorder::Incoming;
use crate::sandbox::team::data::{CostBreakdown, Dataset};
use crate::sandbox::{Scope, Shared};

pub(super) mod data;
#[cfg(test)]
mod tests;

/// Upstream name in scopes and recorded requests; the scope key is the path's team id.
pub const UPSTREAM: &str = "catalyzed";

/// The documented error body: `{error, code?, details?, retryable?}`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    // Documented as nullable, so it is always present, null when there is nothing to add.
    details: Option<Value>,
    retryable: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CostResponse<'a> {
    team_id: &'a str,
    pricing_sheet_id: &'a str,
    start_date: String,
    end_date: String,
    operation_costs: Vec<OperationCostWire<'a>>,
    total_cost_nanodollars: u64,
    total_cost_usd: f64,
    usage_record_count: u64,
    calculated_at: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OperationCostWire<'a> {
    operation_type: &'a str,
    dimensions: Vec<DimensionCostWire<'a>>,
    total_cost_nanodollars: u64,
    total_cost_usd: f64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DimensionCostWire<'a> {
    dimension: &'a str,
    units: u64,
    unit_price_nanodollars: u64,
    cost_nanodollars: u64,
    cost_usd: f64,
    pricing_rule_id: &'a str,
}

impl Scope {
    /// The scope of one team on the team billing API.
    pub fn team_billing(team_id: impl Into<String>) -> Self {
        Scope::new(UPSTREAM, team_id)
    }
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    // `any`, so that a wrong method is still recorded and answered in the API's own error shape.
    Router::new().route("/teams/{team_id}/billing/cost", any(cost))
}

async fn cost(
    State(shared): State<Arc<Shared>>,
    incoming: Incoming,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    // An undecodable team id cannot name a team; it still gets a (never matching) scope.
    let team_id = path.map(|Path(id)| id).unwrap_or_default();
    let method = incoming.method.clone();
    let state = shared.clone();
    let scope = Scope::team_billing(team_id.clone());
    shared
        .exchange(scope, incoming, status_error, move |variant| async move {
            let query = query.map(|Query(q)| q).ok();
            answer(&state.dataset, &method, &team_id, &headers, query, variant)
        })
        .await
}

/// The whole API behaviour after faults: auth, validation, then the cost breakdown.
fn answer(
    dataset: &Dataset,
    method: &Method,
    team_id: &str,
    headers: &HeaderMap,
    query: Option<HashMap<String, String>>,
    variant: Variant,
) -> Response {
    if method != Method::GET {
        let mut response = error(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed", None);
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    let Some(caller) = credential(headers, "Bearer").and_then(|t| dataset.team_by_token(t)) else {
        return unauthorized("Missing or invalid API token");
    };
    if caller.id != team_id {
        return match dataset.team(team_id) {
            Some(_) => error(
                StatusCode::FORBIDDEN,
                "Insufficient permissions: team admin role required",
                None,
            ),
            None => not_found("Team not found", json!({ "teamId": team_id })),
        };
    }
    let Some(query) = query else {
        let details = json!([{ "field": "query", "message": "malformed query string" }]);
        return error(StatusCode::BAD_REQUEST, "Validation failed", Some(details));
    };
    let (start, end) = match parse_period(&query) {
        Ok(period) => period,
        Err(details) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Validation failed",
                Some(Value::Array(details)),
            );
        }
    };
    let sheet = match query.get("pricingSheetId") {
        Some(id) => match dataset.pricing_sheet(id) {
            Some(sheet) => sheet,
            None => {
                return not_found("Pricing sheet not found", json!({ "pricingSheetId": id }));
            }
        },
        None => dataset.default_pricing_sheet(),
    };
    let breakdown = dataset.cost(caller, sheet, start, end);
    let body = cost_body(caller.id, sheet.id, start, end, &breakdown, variant);
    json_response(StatusCode::OK, Body::from(to_json(&body)))
}

/// Both dates must be RFC 3339 date-times with start < end; every bad field is reported.
fn parse_period(
    query: &HashMap<String, String>,
) -> Result<(DateTime<Utc>, DateTime<Utc>), Vec<Value>> {
    let mut details = Vec::new();
    let mut field = |name: &str| match query.get(name) {
        None => {
            details.push(json!({ "field": name, "message": "is required" }));
            None
        }
        Some(raw) => match DateTime::parse_from_rfc3339(raw) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                let message = "must be an RFC 3339 date-time";
                details.push(json!({ "field": name, "message": message }));
                None
            }
        },
    };
    let (start, end) = (field("startDate"), field("endDate"));
    match (start, end) {
        (Some(start), Some(end)) if start < end => return Ok((start, end)),
        (Some(_), Some(_)) => {
            let message = "must be after startDate";
            details.push(json!({ "field": "endDate", "message": message }));
        }
        _ => {}
    }
    Err(details)
}

fn cost_body<'a>(
    team_id: &'a str,
    sheet_id: &'a str,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    breakdown: &'a CostBreakdown,
    variant: Variant,
) -> CostResponse<'a> {
    let mut operation_costs: Vec<OperationCostWire> = breakdown
        .operations
        .iter()
        .map(|op| {
            let dimensions: Vec<DimensionCostWire> = op
                .dimensions
                .iter()
                .map(|d| DimensionCostWire {
                    dimension: d.price.dimension,
                    units: d.units,
                    unit_price_nanodollars: d.price.unit_price_nanodollars,
                    cost_nanodollars: d.cost_nanodollars(),
                    cost_usd: usd(d.cost_nanodollars()),
                    pricing_rule_id: &d.price.pricing_rule_id,
                })
                .collect();
            let total = dimensions.iter().map(|d| d.cost_nanodollars).sum();
            OperationCostWire {
                operation_type: op.operation,
                dimensions,
                total_cost_nanodollars: total,
                total_cost_usd: usd(total),
            }
        })
        .collect();
    if variant == Variant::InconsistentTotals {
        // One operation claims a nanodollar its dimensions do not account for.
        if let Some(op) = operation_costs.first_mut() {
            op.total_cost_nanodollars += 1;
            op.total_cost_usd = usd(op.total_cost_nanodollars);
        }
    }
    // Summed from the operation totals as sent, so only the per-operation check can fail.
    let total = operation_costs
        .iter()
        .map(|op| op.total_cost_nanodollars)
        .sum();
    CostResponse {
        team_id,
        pricing_sheet_id: sheet_id,
        start_date: start.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        end_date: end.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        operation_costs,
        total_cost_nanodollars: total,
        total_cost_usd: usd(total),
        usage_record_count: breakdown.usage_record_count,
        calculated_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    }
}

fn usd(nanodollars: u64) -> f64 {
    nanodollars as f64 / 1e9
}

/// The answer to a `Fault::Status`: the documented body, retryable for 429 and 5xx.
fn status_error(status: StatusCode) -> Response {
    if status == StatusCode::UNAUTHORIZED {
        return unauthorized("Missing or invalid API token");
    }
    let message = status.canonical_reason().unwrap_or("Error");
    error(status, message, None)
}

fn not_found(message: &str, details: Value) -> Response {
    error(StatusCode::NOT_FOUND, message, Some(details))
}

/// 401 in the authentication page's `{error, message}` form, which clients must also accept.
fn unauthorized(message: &str) -> Response {
    let body = json!({ "error": "UNAUTHORIZED", "message": message });
    let mut response = json_response(StatusCode::UNAUTHORIZED, Body::from(to_json(&body)));
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn error(status: StatusCode, message: &str, details: Option<Value>) -> Response {
    let code = match status.as_u16() {
        400 => "VALIDATION_ERROR",
        401 => "UNAUTHORIZED",
        403 => "FORBIDDEN",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        429 => "RATE_LIMITED",
        500 => "INTERNAL_ERROR",
        502 => "BAD_GATEWAY",
        503 => "SERVICE_UNAVAILABLE",
        504 => "GATEWAY_TIMEOUT",
        _ => "ERROR",
    };
    let body = ErrorBody {
        error: message,
        code: Some(code),
        details,
        retryable: status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error(),
    };
    json_response(status, Body::from(to_json(&body)))
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // These bodies hold only strings, integers and finite floats, which always serialise.
    serde_json::to_vec(value).unwrap_or_default()
}
