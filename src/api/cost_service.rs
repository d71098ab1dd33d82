//! CostService: thin handlers that parse, call the engine, and convert.

use super::{
    QueryRules, convert,
    page_token::{self, PageRequest, PageSizes},
    status,
};
use crate::{
    deadline::Deadline,
    domain::CostQuery,
    engine::{Engine, EngineError, Jobs},
    proto as pb,
};
use chrono::{DateTime, Utc};
use std::{sync::Arc, time::Duration};
use tonic::{Request, Response, Status};

/// Memory for remembered answers, in bytes (by estimate).
const ANSWER_MEMO_BYTES: u64 = 32 * 1024 * 1024;

/// Records per page (AIP-158).
const RECORD_PAGES: PageSizes = PageSizes {
    default: 1_000,
    max: 10_000,
};

pub struct CostApi {
    engine: Arc<Engine>,
    jobs: Arc<Jobs>,
    rules: Arc<QueryRules>,
    /// Answers built wholly from fresh cached chunks, until they could change: identical queries skip
    /// planning, aggregation and conversion (the load harness showed that work dominating cached calls).
    answers: moka::sync::Cache<CostQuery, Arc<(pb::GetCostsResponse, DateTime<Utc>)>>,
    deadline_margin: Duration,
}

impl CostApi {
    pub fn new(
        engine: Arc<Engine>,
        jobs: Arc<Jobs>,
        rules: Arc<QueryRules>,
        deadline_margin: Duration,
    ) -> Self {
        CostApi {
            engine,
            jobs,
            rules,
            answers: moka::sync::Cache::builder()
                .max_capacity(ANSWER_MEMO_BYTES)
                .weigher(|_, answer: &Arc<(pb::GetCostsResponse, DateTime<Utc>)>| {
                    u32::try_from(prost::Message::encoded_len(&answer.0) * 2).unwrap_or(u32::MAX)
                })
                .build(),
            deadline_margin,
        }
    }
}

#[tonic::async_trait]
impl pb::cost_service_server::CostService for CostApi {
    async fn get_costs(
        &self,
        request: Request<pb::GetCostsRequest>,
    ) -> Result<Response<pb::GetCostsResponse>, Status> {
        let deadline = Deadline::from_grpc_metadata(request.metadata(), self.deadline_margin);
        let query = self.rules.parse(request.into_inner().query)?;
        if let Some(answer) = self.answers.get(&query) {
            if self.engine.cache().now() < answer.1 {
                return Ok(Response::new(answer.0.clone()));
            }
        }
        let mut report = self
            .engine
            .report(&query, deadline)
            .await
            .map_err(|e| status::engine(&e))?;
        let mut wire =
            convert::report_to_proto(&report).map_err(|e| status::engine(&EngineError::from(e)))?;
        if report.is_pending() {
            // The upstream work goes on in a job, which takes over this call's holds on it.
            let job = self
                .jobs
                .join_or_start(query.clone(), std::mem::take(&mut report.holds))
                .name();
            for result in &mut wire.provider_results {
                if result.state == pb::ResultState::Pending as i32 {
                    result.job = job.clone();
                }
            }
            wire.job = job;
        }
        let answer = pb::GetCostsResponse { report: Some(wire) };
        if let Some(until) = report.unchanged_until {
            self.answers
                .insert(query, Arc::new((answer.clone(), until)));
        }
        Ok(Response::new(answer))
    }

    async fn list_cost_records(
        &self,
        request: Request<pb::ListCostRecordsRequest>,
    ) -> Result<Response<pb::ListCostRecordsResponse>, Status> {
        let deadline = Deadline::from_grpc_metadata(request.metadata(), self.deadline_margin);
        let asked = request.into_inner();
        let (query, mut violations) = match convert::parse_query(asked.query, &self.rules) {
            Ok(query) => (Some(query), Vec::new()),
            Err(violations) => (None, violations),
        };
        let page = PageRequest::parse(
            asked.page_size,
            &asked.page_token,
            RECORD_PAGES,
            query.as_ref().map(page_token::fingerprint),
            &mut violations,
        );
        let Some(query) = query.filter(|_| violations.is_empty()) else {
            return Err(status::invalid_argument(violations));
        };
        let set = self
            .engine
            .records(&query, deadline)
            .await
            .map_err(|e| status::engine(&e))?;
        let records = set.sorted_records();
        let (records, next_page_token) = page.slice(&records);
        let page = records
            .iter()
            .map(|(record, estimated)| {
                convert::record_to_proto(record).map(|mut wire| {
                    wire.estimated = *estimated;
                    wire
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| status::engine(&EngineError::from(e)))?;
        let provider_results = set
            .accounts_with_totals()
            .map_err(|e| status::engine(&EngineError::from(e)))?
            .iter()
            .map(convert::account_result_to_proto)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| status::engine(&EngineError::from(e)))?;
        Ok(Response::new(pb::ListCostRecordsResponse {
            records: page,
            next_page_token,
            provider_results,
        }))
    }

    async fn list_providers(
        &self,
        _request: Request<pb::ListProvidersRequest>,
    ) -> Result<Response<pb::ListProvidersResponse>, Status> {
        let provider_accounts = self
            .engine
            .providers()
            .iter()
            .map(|provider| {
                let account = provider.account();
                let capabilities = provider.capabilities();
                let health = self.engine.health().snapshot(&account.id);
                let state = match (health.last_success, health.last_failure) {
                    (None, None) => pb::HealthState::Unspecified,
                    (_, None) => pb::HealthState::Healthy,
                    (Some(ok), Some(failed)) if ok > failed => pb::HealthState::Healthy,
                    _ => pb::HealthState::Failing,
                };
                pb::ProviderAccount {
                    id: account.id.to_string(),
                    provider: convert::provider_kind_to_proto(account.kind) as i32,
                    display_name: account.display_name.to_string(),
                    capabilities: Some(pb::ProviderCapabilities {
                        granularities: capabilities
                            .granularities
                            .iter()
                            .map(|g| convert::granularity_to_proto(*g) as i32)
                            .collect(),
                        group_by: capabilities
                            .group_by
                            .iter()
                            .map(|g| convert::group_by_to_proto(*g) as i32)
                            .collect(),
                        group_by_requires_filter: capabilities
                            .group_by_requires_filter
                            .iter()
                            .map(|g| convert::group_by_to_proto(*g) as i32)
                            .collect(),
                        asynchronous: capabilities.asynchronous,
                        native_unit: capabilities.native_unit.to_string(),
                    }),
                    health: Some(pb::ProviderHealth {
                        state: state as i32,
                        last_success_time: health.last_success.map(convert::time_to_proto),
                        last_failure_time: health.last_failure.map(convert::time_to_proto),
                        last_error: health
                            .last_error
                            .as_ref()
                            .map(|e| status::upstream_failure(account, e)),
                        consecutive_failures: health.consecutive_failures.min(i32::MAX as u32)
                            as i32,
                        rate_limit_remaining: health.rate_limit_remaining,
                    }),
                }
            })
            .collect();
        Ok(Response::new(pb::ListProvidersResponse {
            provider_accounts,
        }))
    }
}
