//! Provider accounts: one module per upstream, the shared HTTP layer, and the one enum the engine calls.

pub mod atlas;
pub mod budget;
pub mod elastic;
pub mod exact_json;
#[cfg(test)]
mod fuzz_tests;
pub mod gate;
pub mod http;
pub mod team;

use crate::{
    config::{AccountKind, AccountSettings, AtlasConfig, ElasticApiVersion},
    deadline::Deadline,
    domain::{
        AccountRef, CostQuery, DataQualityWarning, FetchProgress, Granularity, GroupBy, Period,
        RecordColumns, Text, UpstreamError, UpstreamErrorKind,
    },
};
use std::sync::Arc;

/// What a provider account can answer.
#[derive(Debug, Clone)]
pub struct Capabilities {
    pub granularities: Vec<Granularity>,
    pub group_by: Vec<GroupBy>,
    /// Of `group_by`, those answered only when the query also filters on them.
    pub group_by_requires_filter: Vec<GroupBy>,
    pub asynchronous: bool,
    pub native_unit: &'static str,
}

/// A chunk's records and the checks that failed: what normalizing an upstream answer gives, and what
/// the cache holds. Providers push records straight into the columns the cache keeps.
#[derive(Debug)]
pub struct ChunkData {
    pub records: RecordColumns,
    pub warnings: Vec<DataQualityWarning>,
}

/// One upstream request's worth of a query: a period and what to ask for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chunk {
    pub period: Period,
    pub request: ChunkRequest,
}

/// What a chunk asks, per upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChunkRequest {
    TeamCost,
    Elastic(elastic::Endpoint),
    /// One Atlas query body: identical bodies share one chunk, so one POST and one token.
    Atlas(atlas::wire::CreateUsageQuery),
}

/// Where a fetch publishes its progress; the latest value is all that is kept.
pub type ProgressSender = tokio::sync::watch::Sender<FetchProgress>;

/// The normalized answer for one chunk of a query.
#[derive(Debug)]
pub struct FetchedChunk {
    pub data: ChunkData,
    /// HTTP requests sent for it, retries included.
    pub requests: u32,
    /// What the upstream's last answer said of its rate-limit window, when it said.
    pub rate_limit_remaining: Option<RateLimitReading>,
}

/// Sends one request and normalizes its answer with `read`: the one way synchronous providers turn an
/// upstream call into chunk data, counting every request sent.
pub async fn fetch_normalized(
    http: &http::UpstreamHttp,
    request: http::UpstreamRequest<'_>,
    deadline: Deadline,
    read: impl FnOnce(http::UpstreamResponse) -> Result<ChunkData, UpstreamError>,
) -> Result<FetchedChunk, ChunkFailure> {
    let response = http
        .send(request, deadline)
        .await
        .map_err(|failed| ChunkFailure {
            error: failed.error,
            requests: failed.attempts,
            rate_limit_remaining: None,
        })?;
    let requests = response.attempts;
    let rate_limit_remaining = RateLimitReading::of(&response);
    chunk_outcome(read(response), requests, rate_limit_remaining)
}

/// A fetch's outcome, with the requests it sent and the last rate-limit reading, whichever way it went.
pub(crate) fn chunk_outcome(
    result: Result<ChunkData, UpstreamError>,
    requests: u32,
    rate_limit_remaining: Option<RateLimitReading>,
) -> Result<FetchedChunk, ChunkFailure> {
    result
        .map(|data| FetchedChunk {
            data,
            requests,
            rate_limit_remaining,
        })
        .map_err(|error| ChunkFailure {
            error,
            requests,
            rate_limit_remaining,
        })
}

/// Requests left in an upstream's rate-limit window, as one answer said, and when it came: of answers
/// to concurrent requests, the latest says what is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitReading {
    pub remaining: i64,
    pub at: std::time::Instant,
}

impl RateLimitReading {
    /// What `response` says, read as it arrives.
    pub fn of(response: &http::UpstreamResponse) -> Option<Self> {
        response
            .rate_limit_remaining()
            .map(|remaining| RateLimitReading {
                remaining,
                at: std::time::Instant::now(),
            })
    }
}

/// A chunk that could not be fetched.
#[derive(Debug, Clone)]
pub struct ChunkFailure {
    pub error: UpstreamError,
    pub requests: u32,
    /// What the upstream's last answer said of its rate-limit window, when it said.
    pub rate_limit_remaining: Option<RateLimitReading>,
}

/// A configured provider account, ready to fetch.
pub enum Provider {
    TeamBilling(team::TeamBillingClient),
    Elastic(elastic::ElasticClient),
    /// Boxed: its auth and rate-limit state make it much larger than the others.
    Atlas(Box<atlas::AtlasClient>),
}

impl Provider {
    pub fn new(
        settings: &AccountSettings,
        atlas: &AtlasConfig,
        http: Arc<http::UpstreamHttp>,
        shared_budgets: Option<&Arc<budget::SharedBudgets>>,
    ) -> Provider {
        let account = AccountRef {
            id: settings.id.clone(),
            kind: settings.provider(),
            display_name: Text::from(settings.display_name.as_str()),
        };
        let base_url = settings.base_url.clone();
        match &settings.kind {
            AccountKind::TeamBilling(team) => Provider::TeamBilling(team::TeamBillingClient::new(
                account,
                http,
                base_url,
                team.clone(),
            )),
            AccountKind::Elastic(elastic) => Provider::Elastic(elastic::ElasticClient::new(
                account,
                http,
                base_url,
                elastic.clone(),
            )),
            AccountKind::Atlas(settings) => Provider::Atlas(Box::new(atlas::AtlasClient::new(
                account,
                http,
                base_url,
                settings.clone(),
                atlas.clone(),
                shared_budgets,
            ))),
        }
    }

    pub fn account(&self) -> &AccountRef {
        match self {
            Provider::TeamBilling(client) => &client.account,
            Provider::Elastic(client) => &client.account,
            Provider::Atlas(client) => &client.account,
        }
    }

    pub fn capabilities(&self) -> Capabilities {
        match self {
            Provider::TeamBilling(_) => Capabilities {
                granularities: vec![Granularity::None, Granularity::Daily, Granularity::Monthly],
                group_by: vec![
                    GroupBy::Provider,
                    GroupBy::BillingAccount,
                    GroupBy::Service,
                    GroupBy::ChargeDimension,
                    GroupBy::ChargeCategory,
                ],
                group_by_requires_filter: Vec::new(),
                asynchronous: false,
                native_unit: "nanodollar",
            },
            Provider::Elastic(client) => Capabilities {
                granularities: vec![Granularity::None, Granularity::Daily, Granularity::Monthly],
                group_by: GroupBy::ALL
                    .into_iter()
                    // v1 reports deployments × billing dimensions: no SKUs.
                    .filter(|g| client.version() == ElasticApiVersion::V2 || *g != GroupBy::Sku)
                    .collect(),
                group_by_requires_filter: Vec::new(),
                asynchronous: false,
                native_unit: "ECU",
            },
            Provider::Atlas(_) => Capabilities {
                granularities: vec![Granularity::None, Granularity::Monthly],
                group_by: vec![
                    GroupBy::Provider,
                    GroupBy::BillingAccount,
                    GroupBy::SubAccount,
                    GroupBy::Resource,
                    GroupBy::Service,
                    GroupBy::ChargeCategory,
                ],
                group_by_requires_filter: vec![GroupBy::SubAccount, GroupBy::Resource],
                asynchronous: true,
                native_unit: "USD",
            },
        }
    }

    /// Why this account cannot answer `query` at all, before any request: the result is then FAILED
    /// with that error and no rows, rather than rows whose key would be silently empty.
    pub fn unanswerable(&self, query: &CostQuery) -> Option<UpstreamError> {
        let unanswerable =
            |message: String| UpstreamError::new(UpstreamErrorKind::Unanswerable, message);
        let capabilities = self.capabilities();
        if let Some(missing) = query
            .group_by
            .iter()
            .find(|g| !capabilities.group_by.contains(g))
        {
            return Some(unanswerable(format!(
                "{} costs have no {} dimension, so they cannot be grouped by it",
                self.account().kind.as_str(),
                missing.as_str()
            )));
        }
        match self {
            Provider::TeamBilling(_) | Provider::Elastic(_) => None,
            Provider::Atlas(_) => atlas::missing_filter(query).map(|n| unanswerable(n.to_string())),
        }
    }

    /// The upstream requests a query needs. Team billing sums any range, so it is asked one period per
    /// UTC day for daily rows and one per calendar month otherwise; Elastic decides in `elastic::plan`.
    pub fn plan(&self, query: &CostQuery) -> Vec<Chunk> {
        match self {
            Provider::TeamBilling(_) => {
                let periods = match query.granularity {
                    Granularity::Daily => query.period.days(),
                    Granularity::None | Granularity::Monthly => query.period.months(),
                };
                periods
                    .into_iter()
                    .map(|period| Chunk {
                        period,
                        request: ChunkRequest::TeamCost,
                    })
                    .collect()
            }
            Provider::Elastic(client) => elastic::plan(client.version(), query)
                .into_iter()
                .map(|(period, endpoint)| Chunk {
                    period,
                    request: ChunkRequest::Elastic(endpoint),
                })
                .collect(),
            Provider::Atlas(client) => atlas::plan(client.org_id(), query)
                .into_iter()
                .map(|(period, body)| Chunk {
                    period,
                    request: ChunkRequest::Atlas(body),
                })
                .collect(),
        }
    }

    pub async fn fetch(
        &self,
        chunk: &Chunk,
        deadline: Deadline,
        progress: &ProgressSender,
    ) -> Result<FetchedChunk, ChunkFailure> {
        let fetched = match (self, &chunk.request) {
            (Provider::TeamBilling(client), ChunkRequest::TeamCost) => {
                client.fetch(chunk.period, deadline).await
            }
            (Provider::Elastic(client), ChunkRequest::Elastic(endpoint)) => {
                client.fetch(chunk.period, endpoint, deadline).await
            }
            (Provider::Atlas(client), ChunkRequest::Atlas(body)) => {
                client.fetch(chunk.period, body, deadline, progress).await
            }
            // Chunks come from this provider's own plan; another's would be a bug, reported, not a panic.
            _ => Err(ChunkFailure {
                error: UpstreamError::new(
                    UpstreamErrorKind::Rejected,
                    "a chunk planned for another provider",
                ),
                requests: 0,
                rate_limit_remaining: None,
            }),
        };
        // The one way out of a provider: no upstream words leave it with a credential in them.
        fetched.map_err(|failure| ChunkFailure {
            error: failure.error.redacted(self.http().redactor()),
            ..failure
        })
    }

    /// Goes on with an asynchronous upstream query another replica made (a job taken over): the next
    /// fetch of the same body polls its token instead of asking anew. Synchronous upstreams have none.
    pub fn resume(&self, progress: &FetchProgress) {
        match self {
            Provider::Atlas(client) => client.resume(progress),
            Provider::TeamBilling(_) | Provider::Elastic(_) => {}
        }
    }

    /// The account's circuit breaker, as `ListProviders` shows it.
    pub fn circuit(&self) -> crate::domain::CircuitReading {
        self.http().gates().of(&self.account().id).circuit()
    }

    fn http(&self) -> &http::UpstreamHttp {
        match self {
            Provider::TeamBilling(client) => &client.http,
            Provider::Elastic(client) => &client.http,
            Provider::Atlas(client) => &client.http,
        }
    }
}
