//! Emulator of the Elastic Cloud billing APIs: v1 deployment costs and the v2 billing API (costs by instance and item, charts).
//!
//! Choices where the documents are silent:
//! - Auth is `Authorization: ApiKey <key>` (scheme case-insensitive), one key per org. Checks run
//!   in this order: method (405), key (401), org (403 for an existing org of another key, else
//!   404), query (400), instance (404).
//! - v1 401 uses code `root.unauthorized` (the Elastic Cloud API's code for a bad or missing
//!   key); other 4xx from faults use `root.invalid_request`, every 5xx `billing_service.failed_request`.
//! - Dates are RFC 3339 date-times only (a literal `+` in a query must be sent as `%2B`).
//!   v1 `from`/`to` are optional (start of the current UTC month, now); v2 requires both.
//!   A record counts when its start (the hour, or midnight UTC for daily SKUs) is in `[from, to)`.
//! - v2 errors other than 429 are `text/plain` `"<status>: <message>"`, as upstream's 401/403 are.
//!   429 (Assumption 6) is JSON `{errors:[{code:"rate_limited",message}]}` on both APIs, v1 also
//!   with `x-cloud-error-codes`; `Retry-After` is sent when the fault sets `retry_after`.
//! - Unknown query parameters are ignored; a bad enum or boolean value is a 400. The spec's
//!   `instance_type` filter exists only on the instance chart: a mismatch gives `{"data":[]}`.
//! - Charts list every day (or month) bucket the range touches within 2025–2026; `timestamp`
//!   is the bucket start in Unix seconds. Org chart values are per instance, instance chart
//!   values per SKU (`id` = SKU, `type` = line item type); `value` is the cost in ECU.
//! - v1 lists deployments only (serverless projects are v2 only), all six dimensions each;
//!   `hourly_rate` is the sum of the capacity rates in force at the period's last hour.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, State};
use axum::response::Response;
use axum::routing::any;
use chrono::{DateTime, Datelike, Timelike, Utc};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use serde::Deserialize;

use crate::sandbox::authorization::credential;
use crate::sandbox::elastic::data::{ElasticDataset, ElasticOrg, Window};
use crate::sandbox::elastic::sums::{Bucketing, Grouping, products};
use crate::sandbox::elastic::wire::{InstancesBody, Json};
use crate::sandbox::fault::{Variant, json_response};
use crate::sandbox::recorder::Incoming;
use crate::sandbox::{Scope, Shared};

pub(super) mod catalog;
pub(super) mod data;
pub(super) mod seed;
mod sums;
#[cfg(test)]
mod tests;
mod wire;

/// Upstream name in scopes and recorded requests; the scope key is the path's organization id.
pub const UPSTREAM: &str = "elastic";

const V1_ROUTE: &str = "/api/v1/billing/costs/{organization_id}/deployments";
const V2_ROUTES: [(&str, Endpoint); 5] = [
    (
        "/api/v2/billing/organizations/{organization_id}/costs/instances",
        Endpoint::Instances,
    ),
    (
        "/api/v2/billing/organizations/{organization_id}/costs/instances/{instance_id}/items",
        Endpoint::InstanceItems,
    ),
    (
        "/api/v2/billing/organizations/{organization_id}/costs/items",
        Endpoint::Items,
    ),
    (
        "/api/v2/billing/organizations/{organization_id}/charts",
        Endpoint::Charts,
    ),
    (
        "/api/v2/billing/organizations/{organization_id}/instances/{instance_id}/charts",
        Endpoint::InstanceCharts,
    ),
];
const ERROR_CODES: HeaderName = HeaderName::from_static("x-cloud-error-codes");
const INVALID_RANGE: &str = "costs.invalid_date_range";
const UNAUTHORIZED: &str = "root.unauthorized";
const INVALID_ACCESS: &str = "organization.invalid_access";
const ORG_NOT_FOUND: &str = "organization.not_found";
const FAILED_REQUEST: &str = "billing_service.failed_request";
const RATE_LIMITED: &str = "rate_limited";
const INVALID_REQUEST: &str = "root.invalid_request";

#[derive(Deserialize)]
struct V1Query {
    from: Option<String>,
    to: Option<String>,
}

/// Every v2 parameter; each endpoint reads the ones its operation defines.
#[derive(Deserialize)]
struct V2Query {
    from: Option<String>,
    to: Option<String>,
    include_names: Option<String>,
    serverless_group_by: Option<String>,
    bucketing_strategy: Option<String>,
    instance_type: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Instances,
    InstanceItems,
    Items,
    Charts,
    InstanceCharts,
}

enum Denied {
    Unauthenticated,
    Forbidden,
    NotFound,
}

type PathParams = Result<Path<HashMap<String, String>>, PathRejection>;

impl Scope {
    /// The scope of one organization on the Elastic billing APIs (v1 and v2 alike).
    pub fn elastic(organization_id: impl Into<String>) -> Self {
        Scope::new(UPSTREAM, organization_id)
    }
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    // `any`, so that a wrong method is still recorded and answered in the API's own error shape.
    let v1 = Router::new().route(V1_ROUTE, any(v1_deployments));
    V2_ROUTES
        .iter()
        .fold(v1, |router, (path, _)| router.route(path, any(v2)))
}

async fn v1_deployments(
    State(shared): State<Arc<Shared>>,
    incoming: Incoming,
    path: PathParams,
    query: Result<Query<V1Query>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let (org_id, _) = path_ids(path);
    let method = incoming.method.clone();
    let data = shared.dataset.elastic_shared();
    let scope = Scope::elastic(org_id.clone());
    shared
        .exchange(scope, incoming, v1_status, move |variant| async move {
            let query = query.ok().map(|Query(q)| q);
            v1_answer(&data, &method, &org_id, &headers, query, variant)
        })
        .await
}

fn v1_answer(
    data: &ElasticDataset,
    method: &Method,
    org_id: &str,
    headers: &HeaderMap,
    query: Option<V1Query>,
    variant: Variant,
) -> Response {
    if method != Method::GET {
        let message = "Method not allowed";
        return allow_get(v1_error(
            StatusCode::METHOD_NOT_ALLOWED,
            INVALID_REQUEST,
            message,
            &[],
        ));
    }
    let org = match authorize(data, headers, org_id) {
        Ok(org) => org,
        Err(denied) => return v1_status(denied.status()),
    };
    let invalid = |fields: &[&str]| {
        let message = "Invalid date range specified.";
        v1_error(StatusCode::BAD_REQUEST, INVALID_RANGE, message, fields)
    };
    let Some(query) = query else {
        return invalid(&[]);
    };
    let now = Utc::now().with_nanosecond(0).unwrap_or_else(Utc::now);
    let month_start = now
        .date_naive()
        .with_day(1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(now, |t| t.and_utc());
    let from = query.from.as_deref().map_or(Some(month_start), parse_time);
    let to = query.to.as_deref().map_or(Some(now), parse_time);
    let (from, to) = match (from, to) {
        (Some(from), Some(to)) if from < to => (from, to),
        (Some(_), Some(_)) => return invalid(&["from", "to"]),
        (None, Some(_)) => return invalid(&["from"]),
        (Some(_), None) => return invalid(&["to"]),
        (None, None) => return invalid(&["from", "to"]),
    };
    let window = Window::new(from, to);
    ok_json(wire::v1_costs(&org.deployment_costs(&window), variant))
}

async fn v2(
    State(shared): State<Arc<Shared>>,
    incoming: Incoming,
    matched: Option<MatchedPath>,
    path: PathParams,
    query: Result<Query<V2Query>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let route = matched.as_ref().map(MatchedPath::as_str);
    let endpoint = V2_ROUTES.iter().find(|(p, _)| Some(*p) == route);
    // Every v2 route is in the table, so this default is never taken.
    let endpoint = endpoint.map_or(Endpoint::Instances, |(_, e)| *e);
    let (org_id, instance_id) = path_ids(path);
    let method = incoming.method.clone();
    let data = shared.dataset.elastic_shared();
    let scope = Scope::elastic(org_id.clone());
    let fault_org = org_id.clone();
    shared
        .exchange(
            scope,
            incoming,
            move |status| v2_status(status, &fault_org),
            move |variant| async move {
                let query = query.ok().map(|Query(q)| q);
                let ids = (org_id.as_str(), instance_id.as_str());
                v2_answer(&data, endpoint, &method, ids, &headers, query, variant)
            },
        )
        .await
}

fn v2_answer(
    data: &Arc<ElasticDataset>,
    endpoint: Endpoint,
    method: &Method,
    (org_id, instance_id): (&str, &str),
    headers: &HeaderMap,
    query: Option<V2Query>,
    variant: Variant,
) -> Response {
    if method != Method::GET {
        let message = "Method not allowed.";
        return allow_get(v2_text(StatusCode::METHOD_NOT_ALLOWED, message));
    }
    let org = match authorize(data, headers, org_id) {
        Ok(org) => org,
        Err(denied) => return v2_status(denied.status(), org_id),
    };
    match v2_body(data, org, endpoint, instance_id, query, variant) {
        Ok(body) => json_response(StatusCode::OK, body),
        Err((status, message)) => v2_text(status, &message),
    }
}

/// The 200 body of an authorized v2 request, or the status and message of its 400/404.
fn v2_body(
    data: &Arc<ElasticDataset>,
    org: &ElasticOrg,
    endpoint: Endpoint,
    instance_id: &str,
    query: Option<V2Query>,
    variant: Variant,
) -> Result<Body, (StatusCode, String)> {
    let bad_request = |message: &str| (StatusCode::BAD_REQUEST, message.to_owned());
    let query = query.ok_or_else(|| bad_request("Malformed query string."))?;
    let from = query.from.as_deref().and_then(parse_time);
    let to = query.to.as_deref().and_then(parse_time);
    let window = match (from, to) {
        (Some(from), Some(to)) if from < to => Window::new(from, to),
        _ => return Err(bad_request("The specified date range is invalid.")),
    };
    let invalid = |name: &str| bad_request(&format!("Invalid value for {name}."));
    let bucketing = [("daily", Bucketing::Daily), ("monthly", Bucketing::Monthly)];
    let bucketing = pick(query.bucketing_strategy.as_deref(), &bucketing)
        .ok_or_else(|| invalid("bucketing_strategy"))?;
    let instance = || {
        org.instance(instance_id)
            .ok_or_else(|| (StatusCode::NOT_FOUND, "Instance not found.".to_owned()))
    };
    let json = match endpoint {
        Endpoint::Instances => {
            let include_names = pick(
                query.include_names.as_deref(),
                &[("false", false), ("true", true)],
            )
            .ok_or_else(|| invalid("include_names"))?;
            let body = InstancesBody::new(data.clone(), org, &window, include_names, variant);
            return Ok(Body::from_stream(futures::stream::iter(body)));
        }
        Endpoint::Items => {
            let groupings = [
                ("product", Grouping::Product),
                ("product_family", Grouping::ProductFamily),
            ];
            let grouping = pick(query.serverless_group_by.as_deref(), &groupings)
                .ok_or_else(|| invalid("serverless_group_by"))?;
            let costs = org.instance_costs(&window);
            wire::items(&products(&costs, grouping), &window, variant)
        }
        Endpoint::InstanceItems => {
            let instance = instance()?;
            let active = instance.active_period(&window);
            let costs: Vec<_> = active.map(|_| instance.cost(&window)).into_iter().collect();
            wire::items(&products(&costs, Grouping::Product), &window, variant)
        }
        Endpoint::Charts => {
            let buckets = org.chart(&window, bucketing);
            wire::org_chart(org, buckets, variant)
        }
        Endpoint::InstanceCharts => {
            let types = [
                ("all", None),
                ("deployments", Some(true)),
                ("projects", Some(false)),
            ];
            let wanted = pick(query.instance_type.as_deref(), &types)
                .ok_or_else(|| invalid("instance_type"))?;
            let instance = instance()?;
            if wanted.is_some_and(|deployment| deployment != instance.kind.is_deployment()) {
                return Ok(Body::from(
                    wire::instance_chart(instance, Vec::new(), variant).render(),
                ));
            }
            let buckets = instance.chart(&window, bucketing);
            wire::instance_chart(instance, buckets, variant)
        }
    };
    Ok(Body::from(json.render()))
}

/// Parses an enum-like parameter; absent means the first option, the documented default.
fn pick<T: Copy>(raw: Option<&str>, options: &[(&str, T)]) -> Option<T> {
    match raw {
        None => options.first().map(|(_, value)| *value),
        Some(raw) => options
            .iter()
            .find(|(name, _)| *name == raw)
            .map(|(_, value)| *value),
    }
}

/// The caller's org if its key may read `org_id`.
fn authorize<'a>(
    data: &'a ElasticDataset,
    headers: &HeaderMap,
    org_id: &str,
) -> Result<&'a ElasticOrg, Denied> {
    let caller = credential(headers, "ApiKey")
        .and_then(|key| data.organization_by_key(key))
        .ok_or(Denied::Unauthenticated)?;
    if caller.id == org_id {
        return Ok(caller);
    }
    match data.organization(org_id) {
        Some(_) => Err(Denied::Forbidden),
        None => Err(Denied::NotFound),
    }
}

impl Denied {
    fn status(&self) -> StatusCode {
        match self {
            Denied::Unauthenticated => StatusCode::UNAUTHORIZED,
            Denied::Forbidden => StatusCode::FORBIDDEN,
            Denied::NotFound => StatusCode::NOT_FOUND,
        }
    }
}

fn path_ids(path: PathParams) -> (String, String) {
    // An undecodable id names nothing; it still gets a (never matching) scope.
    let mut params = path.map(|Path(p)| p).unwrap_or_default();
    let org = params.remove("organization_id").unwrap_or_default();
    (org, params.remove("instance_id").unwrap_or_default())
}

fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// v1's documented error for each status (also the answer to a `Fault::Status`).
fn v1_status(status: StatusCode) -> Response {
    let (code, message) = match status.as_u16() {
        400 => (INVALID_RANGE, "Invalid date range specified."),
        401 => (
            UNAUTHORIZED,
            "The authentication token is invalid or expired.",
        ),
        403 => (
            INVALID_ACCESS,
            "The current user does not have access to the requested organization.",
        ),
        404 => (ORG_NOT_FOUND, "Organization not found."),
        429 => (RATE_LIMITED, "Too many requests. Try again later."),
        500..=599 => (
            FAILED_REQUEST,
            "An error occurred when fetching the costs associated with all deployments for the organization.",
        ),
        _ => (
            INVALID_REQUEST,
            status.canonical_reason().unwrap_or("Error"),
        ),
    };
    v1_error(status, code, message, &[])
}

/// v2's answer for each status: the throttling JSON for 429, else text/plain.
fn v2_status(status: StatusCode, org_id: &str) -> Response {
    let message = match status.as_u16() {
        401 => "Unauthorized",
        403 => {
            let message = format!("User does not have 'billing-costs:get:{org_id}' permissions");
            return v2_text(status, &message);
        }
        429 => {
            let body = wire::errors(RATE_LIMITED, "Too many requests. Try again later.", &[]);
            return json_response(status, Body::from(body.render()));
        }
        400 => "The specified date range is invalid.",
        404 => "Organization not found.",
        424 => "Failed dependency.",
        500 => "Internal server error.",
        _ => status.canonical_reason().unwrap_or("Error"),
    };
    v2_text(status, message)
}

/// `{errors:[{code, message, fields?}]}` plus the `x-cloud-error-codes` header.
fn v1_error(status: StatusCode, code: &'static str, message: &str, fields: &[&str]) -> Response {
    let body = wire::errors(code, message, fields);
    let mut response = json_response(status, Body::from(body.render()));
    response
        .headers_mut()
        .insert(ERROR_CODES, HeaderValue::from_static(code));
    response
}

fn v2_text(status: StatusCode, message: &str) -> Response {
    let mut response = Response::new(Body::from(format!("{}: {message}", status.as_u16())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn allow_get(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET"));
    response
}

fn ok_json(body: Json) -> Response {
    json_response(StatusCode::OK, Body::from(body.render()))
}
