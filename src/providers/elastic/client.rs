//! The Elastic Cloud billing client: `ApiKey` auth, every documented endpoint, errors read from the v1
//! JSON body, the `x-cloud-error-codes` header, or v2's plain text.

use super::{
    Endpoint,
    normalize::{self, Organization},
    wire,
};
use crate::providers::{fetch_normalized, http::credential_headers};
use crate::{
    config::{ElasticApiVersion, ElasticSettings},
    deadline::Deadline,
    domain::{AccountRef, Period, UpstreamError},
    providers::{
        ChunkData, ChunkFailure, FetchedChunk,
        http::{UpstreamHttp, UpstreamRequest, UpstreamResponse},
    },
};
use chrono::SecondsFormat;
use http::{HeaderMap, Method};
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Reads one Elastic organization's costs.
pub struct ElasticClient {
    pub(crate) account: AccountRef,
    pub(crate) http: Arc<UpstreamHttp>,
    base_url: reqwest::Url,
    settings: ElasticSettings,
}

impl ElasticClient {
    pub fn new(
        account: AccountRef,
        http: Arc<UpstreamHttp>,
        base_url: reqwest::Url,
        settings: ElasticSettings,
    ) -> Self {
        ElasticClient {
            account,
            http,
            base_url,
            settings,
        }
    }

    pub fn version(&self) -> ElasticApiVersion {
        self.settings.api_version
    }

    /// One endpoint over one period, normalized.
    pub async fn fetch(
        &self,
        period: Period,
        endpoint: &Endpoint,
        deadline: Deadline,
    ) -> Result<FetchedChunk, ChunkFailure> {
        let (template, url) = self.url(period, endpoint);
        let request = UpstreamRequest {
            provider: self.account.kind,
            account: &self.account.id,
            method: Method::GET,
            url_template: template,
            url,
            headers: self.auth_headers(),
            body: None,
        };
        fetch_normalized(&self.http, request, deadline, |response| {
            self.read(period, endpoint, response)
        })
        .await
    }

    fn url(&self, period: Period, endpoint: &Endpoint) -> (&'static str, reqwest::Url) {
        let org = self.settings.organization_id.as_str();
        // The template is the span's `url.template` and the path itself, placeholders filled in.
        let template: &'static str = match endpoint {
            Endpoint::V1Deployments => "/api/v1/billing/costs/{organization_id}/deployments",
            Endpoint::V2Instances => {
                "/api/v2/billing/organizations/{organization_id}/costs/instances"
            }
            Endpoint::V2Charts { .. } => "/api/v2/billing/organizations/{organization_id}/charts",
        };
        let segments = template
            .trim_start_matches('/')
            .split('/')
            .map(|segment| match segment {
                "{organization_id}" => org,
                literal => literal,
            });
        let mut url = self.base_url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair(
                    "from",
                    &period.start().to_rfc3339_opts(SecondsFormat::AutoSi, true),
                )
                .append_pair(
                    "to",
                    &period.end().to_rfc3339_opts(SecondsFormat::AutoSi, true),
                );
            match endpoint {
                Endpoint::V2Instances => {
                    query.append_pair("include_names", "true");
                }
                Endpoint::V2Charts { bucketing } => {
                    query.append_pair("bucketing_strategy", bucketing.as_str());
                }
                _ => {}
            }
        }
        (template, url)
    }

    fn auth_headers(&self) -> HeaderMap {
        credential_headers("ApiKey", &self.settings.api_key)
    }

    fn read(
        &self,
        period: Period,
        endpoint: &Endpoint,
        response: UpstreamResponse,
    ) -> Result<ChunkData, UpstreamError> {
        let status = response.status.as_u16();
        if !response.status.is_success() {
            return Err(error_of(&response));
        }
        let org = Organization {
            account: &self.account,
            organization_id: self.settings.organization_id.as_str(),
            usd_per_ecu: self.settings.usd_per_ecu,
        };
        let normalized = match endpoint {
            Endpoint::V1Deployments => {
                normalize::deployments(&org, period, &parse::<wire::DeploymentCosts>(&response)?)
            }
            Endpoint::V2Instances => {
                normalize::instances(&org, period, &parse::<wire::Instances>(&response)?)
            }
            Endpoint::V2Charts { bucketing } => {
                normalize::charts(&org, period, *bucketing, &parse::<wire::Charts>(&response)?)
            }
        };
        normalized.map_err(|problem| UpstreamError::malformed(status, problem))
    }
}

fn parse<T: DeserializeOwned>(response: &UpstreamResponse) -> Result<T, UpstreamError> {
    serde_json::from_slice(&response.body)
        .map_err(|e| UpstreamError::malformed(response.status.as_u16(), e))
}

/// An Elastic error answer: the v1 JSON body, the `x-cloud-error-codes` header, or v2's plain text.
fn error_of(response: &UpstreamResponse) -> UpstreamError {
    let status = response.status.as_u16();
    let header_code = response
        .headers
        .get("x-cloud-error-codes")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(',').next().unwrap_or(v).trim().to_string())
        .filter(|v| !v.is_empty());
    let (code, message) = match serde_json::from_slice::<wire::ErrorBody>(&response.body) {
        Ok(body) => {
            let first = body.errors.into_iter().next();
            let code = header_code.or_else(|| first.as_ref().map(|e| e.code.clone()));
            let message = first
                .and_then(|e| e.message)
                .unwrap_or_else(|| format!("HTTP {status}"));
            (code, message)
        }
        Err(_) => {
            let text = String::from_utf8_lossy(&response.body);
            let text = text.trim();
            (
                header_code,
                if text.is_empty() {
                    format!("HTTP {status}")
                } else {
                    text.to_string()
                },
            )
        }
    };
    UpstreamError::from_http(status, code, message, response.retry_after())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CostFilter, CostQuery, Granularity, GroupBy};
    use crate::{
        config::ElasticApiVersion,
        providers::elastic::{Bucketing, plan},
    };

    fn query(granularity: Granularity, group_by: Vec<GroupBy>, resources: &[&str]) -> CostQuery {
        let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        CostQuery {
            period: Period::new(start, start + chrono::Duration::days(45)).unwrap(),
            filter: CostFilter {
                resources: resources.iter().map(|r| r.to_string()).collect(),
                ..CostFilter::default()
            },
            group_by,
            granularity,
            max_staleness: None,
        }
    }

    fn endpoints(version: ElasticApiVersion, query: &CostQuery) -> Vec<Endpoint> {
        plan(version, query).into_iter().map(|(_, e)| e).collect()
    }

    #[test]
    fn each_query_shape_has_one_endpoint() {
        let monthly_by_resource = query(
            Granularity::Monthly,
            vec![GroupBy::Resource, GroupBy::Sku],
            &[],
        );
        assert_eq!(
            endpoints(ElasticApiVersion::V2, &monthly_by_resource),
            [Endpoint::V2Instances, Endpoint::V2Instances]
        );
        assert_eq!(
            endpoints(ElasticApiVersion::V1, &monthly_by_resource),
            [Endpoint::V1Deployments, Endpoint::V1Deployments]
        );
        let by_service = query(Granularity::None, vec![GroupBy::Service], &[]);
        assert_eq!(
            endpoints(ElasticApiVersion::V2, &by_service),
            [Endpoint::V2Instances, Endpoint::V2Instances],
            "instances say each instance's type, the service"
        );
        let daily = query(Granularity::Daily, vec![GroupBy::Resource], &[]);
        assert_eq!(
            endpoints(ElasticApiVersion::V2, &daily),
            vec![
                Endpoint::V2Charts {
                    bucketing: Bucketing::Daily
                };
                2
            ]
        );
        let daily_by_sku = query(Granularity::Daily, vec![GroupBy::Sku], &[]);
        assert_eq!(
            endpoints(ElasticApiVersion::V2, &daily_by_sku).len(),
            45,
            "one instances call per day"
        );
        let daily_by_category = query(Granularity::Daily, vec![GroupBy::ChargeCategory], &[]);
        assert_eq!(
            endpoints(ElasticApiVersion::V2, &daily_by_category).len(),
            45,
            "a chart value sums credits into usage; line items tell them apart"
        );
        let daily_for_one = query(Granularity::Daily, vec![GroupBy::Resource], &["abc123"]);
        assert_eq!(
            endpoints(ElasticApiVersion::V2, &daily_for_one),
            endpoints(ElasticApiVersion::V2, &daily),
            "a filter never changes the endpoint"
        );
        let one_instance = query(Granularity::None, vec![], &["abc123"]);
        assert_eq!(
            endpoints(ElasticApiVersion::V2, &one_instance),
            [Endpoint::V2Instances, Endpoint::V2Instances]
        );
    }
}
