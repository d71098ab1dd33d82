//! Emulator of the MongoDB Atlas Cost Explorer API: create a query (202 + token), poll it (102 … 200 rows), and the OAuth token endpoint.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::any;
use http::{HeaderMap, Method, StatusCode, Version};

use crate::sandbox::atlas::data::AtlasOrg;
use crate::sandbox::atlas::query::{CostQuery, usage_json};
use crate::sandbox::atlas::reply::{
    Accept, Answer, accept, bare_processing, invalid_fields, json_content_type, method_not_allowed,
    rate_headers, rate_limited, render, settle, status_answer, unauthorized, validation_error,
    with_headers,
};
use crate::sandbox::atlas::state::{AtlasState, PollState, Taken};
use crate::sandbox::fault::Variant;
use crate::sandbox::recorder::Incoming;
use crate::sandbox::{Scope, Shared};

pub(super) mod auth;
pub(super) mod data;
mod query;
mod reply;
mod seed;
pub(super) mod state;
#[cfg(test)]
mod tests;

/// Upstream name in scopes and recorded requests; the key is the path's org id, or [`OAUTH_KEY`].
pub const UPSTREAM: &str = "atlas";
/// Scope key of the OAuth token endpoint (no org in its path).
pub const OAUTH_KEY: &str = "oauth";
/// The one documented version; 202 and 200 bodies carry it as their content type.
pub const MEDIA_TYPE: &str = "application/vnd.atlas.2023-01-01+json";
/// What a bare (un-enveloped) "processing" poll puts on the wire before closing the connection.
pub const BARE_PROCESSING: &[u8] = b"HTTP/1.1 102 Processing\r\n\r\n";

const USAGE_PATH: &str = "/api/atlas/v2/orgs/{org_id}/billing/costExplorer/usage";
const POLL_PATH: &str = "/api/atlas/v2/orgs/{org_id}/billing/costExplorer/usage/{token}";

impl Scope {
    /// The scope of one org on the Atlas Cost Explorer API (both of its calls).
    pub fn atlas(org_id: impl Into<String>) -> Self {
        Scope::new(UPSTREAM, org_id)
    }

    /// The scope of the Atlas OAuth token endpoint.
    pub fn atlas_oauth() -> Self {
        Scope::new(UPSTREAM, OAUTH_KEY)
    }
}

pub(crate) fn routes() -> Router<Arc<Shared>> {
    // `any`, so that a wrong method is still recorded and answered in Atlas's error shape.
    Router::new()
        .route(USAGE_PATH, any(create))
        .route(POLL_PATH, any(poll))
        .route("/api/oauth/token", any(auth::oauth_token))
}

async fn create(
    State(shared): State<Arc<Shared>>,
    incoming: Incoming,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let org_id = path.map(|Path(id)| id).unwrap_or_default();
    let envelope = wants_envelope(query);
    let (method, uri) = (incoming.method.clone(), request_target(&incoming));
    let (state, fault_state) = (shared.clone(), shared.clone());
    let scope = Scope::atlas(org_id.clone());
    let error = move |code| render(status_answer(&fault_state.atlas, code), envelope);
    let normal = move |_| async move {
        let atlas = &state.atlas;
        let now = atlas.now();
        let answer = match gate(atlas, Method::POST, &method, &uri, &org_id, &headers, now) {
            Ok((org, rate)) => with_headers(create_answer(atlas, org, &headers, body), rate),
            Err(answer) => *answer,
        };
        render(answer, envelope)
    };
    settle(shared.exchange(scope, incoming, error, normal).await)
}

async fn poll(
    State(shared): State<Arc<Shared>>,
    incoming: Incoming,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    version: Version,
) -> Response {
    let (org_id, token) = path.map(|Path(p)| p).unwrap_or_default();
    let envelope = wants_envelope(query);
    let (method, uri) = (incoming.method.clone(), request_target(&incoming));
    // Raw bytes can only stand in for a response on an HTTP/1 connection.
    let conn = incoming
        .conn
        .clone()
        .filter(|_| matches!(version, Version::HTTP_10 | Version::HTTP_11));
    let (state, fault_state) = (shared.clone(), shared.clone());
    let scope = Scope::atlas(org_id.clone());
    let error = move |code| render(status_answer(&fault_state.atlas, code), envelope);
    let normal = move |variant| async move {
        let atlas = &state.atlas;
        let now = atlas.now();
        let answer = match gate(atlas, Method::GET, &method, &uri, &org_id, &headers, now) {
            Ok((org, rate)) => with_headers(poll_answer(atlas, org, &token, now, variant), rate),
            Err(answer) => *answer,
        };
        if answer.status == StatusCode::PROCESSING && !envelope {
            return bare_processing(conn.as_ref());
        }
        render(answer, envelope)
    };
    settle(shared.exchange(scope, incoming, error, normal).await)
}

/// Method, credentials, org, token bucket and media type: what both calls check first.
/// On success, also the rate-limit headers every later answer carries.
fn gate<'a>(
    atlas: &'a AtlasState,
    allowed: Method,
    method: &Method,
    uri: &str,
    org_id: &str,
    headers: &HeaderMap,
    now: Instant,
) -> Result<(&'a AtlasOrg, HeaderMap), Box<Answer>> {
    if *method != allowed {
        let allow = if allowed == Method::POST {
            "POST"
        } else {
            "GET"
        };
        return Err(Box::new(method_not_allowed(allow)));
    }
    let caller = atlas
        .auth
        .authenticate(&atlas.data, headers, method, uri, now)
        .map_err(|failure| Box::new(unauthorized(atlas, now, failure)))?;
    if !is_org_id(org_id) {
        return Err(Box::new(invalid_fields(&[(
            "orgId",
            "must be a 24-hexadecimal-digit id",
        )])));
    }
    let Some(org) = atlas.data.org(org_id) else {
        let detail = "No organization with this ID exists.";
        return Err(Box::new(Answer::error(StatusCode::NOT_FOUND, detail)));
    };
    if org.id != caller.id {
        let detail = "The credentials used do not grant access to this organization.";
        return Err(Box::new(Answer::error(StatusCode::FORBIDDEN, detail)));
    }
    let rate = match atlas.take_token(org.id, now) {
        Taken::Allowed { limit, remaining } => rate_headers(limit, remaining),
        Taken::Refused {
            limit,
            retry_after_secs,
        } => {
            atlas.count(org.id, |c| c.rate_limited += 1);
            return Err(Box::new(rate_limited(limit, retry_after_secs)));
        }
    };
    match accept(headers) {
        Accept::Versioned => {}
        Accept::Generic => atlas.count(org.id, |c| c.unversioned_accepts += 1),
        Accept::Refused => {
            atlas.count(org.id, |c| c.unversioned_accepts += 1);
            let detail = "Only application/vnd.atlas.2023-01-01+json can be produced.";
            let answer = Answer::error(StatusCode::NOT_ACCEPTABLE, detail);
            return Err(Box::new(with_headers(answer, rate)));
        }
    }
    Ok((org, rate))
}

fn create_answer(
    atlas: &AtlasState,
    org: &AtlasOrg,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    if !json_content_type(headers) {
        let detail = "The request body must be application/vnd.atlas.2023-01-01+json.";
        return Answer::error(StatusCode::UNSUPPORTED_MEDIA_TYPE, detail);
    }
    let Ok(body) = body else {
        return invalid_fields(&[("body", "could not be read")]);
    };
    match CostQuery::parse(&body) {
        Err(fields) => validation_error(fields),
        Ok(query) => {
            let token = atlas.create_query(org.id, query);
            atlas.count(org.id, |c| c.queries_created += 1);
            let body = serde_json::json!({ "token": token });
            Answer::json(StatusCode::ACCEPTED, body.to_string())
        }
    }
}

fn poll_answer(
    atlas: &AtlasState,
    org: &AtlasOrg,
    token: &str,
    now: Instant,
    variant: Variant,
) -> Answer {
    if token.chars().count() != 64 {
        return invalid_fields(&[("token", "must be 64 characters")]);
    }
    match atlas.poll(org.id, token, now) {
        PollState::Unknown => {
            let detail = "No Cost Explorer query exists for this token, or its result has expired.";
            Answer::error(StatusCode::NOT_FOUND, detail)
        }
        PollState::Processing => {
            atlas.count(org.id, |c| c.processing_answers += 1);
            Answer::json(StatusCode::PROCESSING, String::new())
        }
        PollState::Done(query) => {
            atlas.count(org.id, |c| c.result_answers += 1);
            let mut rows = query.rows(org);
            if variant == Variant::InconsistentTotals {
                // One row sent twice: the rows no longer add up to the org's usage.
                if let Some(first) = rows.first().cloned() {
                    rows.insert(1, first);
                }
            }
            Answer::json(StatusCode::OK, usage_json(&rows))
        }
    }
}

fn wants_envelope(query: Result<Query<HashMap<String, String>>, QueryRejection>) -> bool {
    let query = query.ok().map(|Query(q)| q).unwrap_or_default();
    query
        .get("envelope")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The request target as the client sent it, which a Digest `uri` must repeat.
fn request_target(incoming: &Incoming) -> String {
    match &incoming.query {
        Some(query) => format!("{}?{query}", incoming.path),
        None => incoming.path.clone(),
    }
}

fn is_org_id(id: &str) -> bool {
    id.len() == 24 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
