//! The team billing client: bearer-token auth, one GET per period, error bodies read as documented.

use super::{normalize::normalize, wire};
use crate::providers::{fetch_normalized, http::credential_headers};
use crate::{
    config::TeamBillingSettings,
    deadline::Deadline,
    domain::{AccountRef, Period, UpstreamError},
    providers::{
        ChunkFailure, FetchedChunk,
        http::{UpstreamHttp, UpstreamRequest, UpstreamResponse},
    },
};
use chrono::SecondsFormat;
use http::{HeaderMap, Method};
use std::sync::Arc;

const COST_ROUTE: &str = "/teams/{teamId}/billing/cost";

/// Reads one team's costs.
pub struct TeamBillingClient {
    pub(crate) account: AccountRef,
    pub(crate) http: Arc<UpstreamHttp>,
    base_url: reqwest::Url,
    settings: TeamBillingSettings,
}

impl TeamBillingClient {
    pub fn new(
        account: AccountRef,
        http: Arc<UpstreamHttp>,
        base_url: reqwest::Url,
        settings: TeamBillingSettings,
    ) -> Self {
        TeamBillingClient {
            account,
            http,
            base_url,
            settings,
        }
    }

    /// The team's costs over `period`, normalized.
    pub async fn fetch(
        &self,
        period: Period,
        deadline: Deadline,
    ) -> Result<FetchedChunk, ChunkFailure> {
        let request = UpstreamRequest {
            provider: self.account.kind,
            account: &self.account.id,
            method: Method::GET,
            url_template: COST_ROUTE,
            url: self.cost_url(period),
            headers: self.auth_headers(),
            body: None,
        };
        fetch_normalized(&self.http, request, deadline, |response| {
            self.read(period, response)
        })
        .await
    }

    fn cost_url(&self, period: Period) -> reqwest::Url {
        let mut url = self.base_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend([
                "teams",
                self.settings.team_id.as_str(),
                "billing",
                "cost",
            ]);
        }
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair(
                    "startDate",
                    &period.start().to_rfc3339_opts(SecondsFormat::AutoSi, true),
                )
                .append_pair(
                    "endDate",
                    &period.end().to_rfc3339_opts(SecondsFormat::AutoSi, true),
                );
            if let Some(sheet) = &self.settings.pricing_sheet_id {
                query.append_pair("pricingSheetId", sheet);
            }
        }
        url
    }

    fn auth_headers(&self) -> HeaderMap {
        credential_headers("Bearer", &self.settings.token)
    }

    fn read(
        &self,
        period: Period,
        response: UpstreamResponse,
    ) -> Result<crate::providers::ChunkData, UpstreamError> {
        let status = response.status.as_u16();
        if response.status.is_success() {
            let body: wire::CostResponse = serde_json::from_slice(&response.body)
                .map_err(|e| UpstreamError::malformed(status, e))?;
            return normalize(&self.account, self.settings.team_id.as_str(), period, &body)
                .map_err(|problem| UpstreamError::malformed(status, problem));
        }
        let retry_after = response.retry_after();
        Err(
            match serde_json::from_slice::<wire::ErrorBody>(&response.body) {
                Ok(body) => {
                    let message = body.message.clone().unwrap_or_else(|| body.error.clone());
                    UpstreamError {
                        upstream_retryable: body.retryable,
                        ..UpstreamError::from_http(
                            status,
                            Some(body.code.unwrap_or(body.error)),
                            message,
                            retry_after,
                        )
                    }
                }
                Err(_) => UpstreamError::from_http(
                    status,
                    None,
                    format!("HTTP {status} without the documented error body"),
                    retry_after,
                ),
            },
        )
    }
}
