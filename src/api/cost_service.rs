//! CostService: thin handlers that parse, call the engine, and convert. GetCosts is served by
//! [`CostServer`], so that a remembered answer goes out as the bytes it was stored as.

use super::{
    QueryRules, convert, guard,
    page_token::{self, PageRequest, PageSizes},
    status, unary_frame,
};
use crate::{
    deadline::Deadline,
    domain::{CircuitReading, CostQuery},
    engine::{Engine, EngineError, Jobs, Report},
    jobs::StartError,
    metrics::{AnswerFound, Metrics},
    proto::{self as pb, cost_service_server::CostServiceServer},
};
use bytes::{Buf, BufMut, Bytes};
use chrono::{DateTime, Utc};
use prost::Message;
use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tonic::{
    Request, Response, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::{BoxFuture, StdError},
    server::{Grpc, NamedService, UnaryService},
};

/// Memory for remembered answers, in bytes: each answer's stored bytes, its key and the entry.
const ANSWER_MEMO_BYTES: u64 = 32 * 1024 * 1024;

/// Records per page (AIP-158).
const RECORD_PAGES: PageSizes = PageSizes {
    default: 1_000,
    max: 10_000,
};

/// The path [`CostServer`] answers itself; every other goes to the generated server.
const GET_COSTS_PATH: &str = "/costd.v1.CostService/GetCosts";

/// A remembered answer: the encoded `GetCostsResponse` as one gRPC frame (so it can go out as it is),
/// and until when the same query gets it.
struct Remembered {
    frame: Bytes,
    until: DateTime<Utc>,
    /// The accounts it covers, for the audit line of a call it answers.
    touched: String,
}

/// A GetCosts answer as [`AnswerCodec`] writes it: a message to encode, or bytes already encoded.
enum Answer {
    /// Boxed: a report is large beside `Bytes`.
    Message(Box<pb::GetCostsResponse>),
    Encoded(Bytes),
}

pub struct CostApi {
    engine: Arc<Engine>,
    jobs: Arc<Jobs>,
    rules: Arc<QueryRules>,
    metrics: Arc<Metrics>,
    /// Answers built wholly from fresh cached chunks, until they could change: identical queries skip
    /// planning, aggregation, conversion and encoding (the load harness showed that work dominating
    /// cached calls), and the stored bytes are written to the wire as they are.
    answers: moka::sync::Cache<CostQuery, Arc<Remembered>>,
    /// The same answers by the request's own bytes: a caller repeating a request is answered before its
    /// query is even decoded (most callers send the same bytes for the same question).
    /// Keyed by the caller's grant too: the same bytes from callers of other grants ask for other
    /// accounts.
    answers_by_request: moka::sync::Cache<(Option<usize>, Bytes), Arc<Remembered>>,
    deadline_margin: Duration,
}

impl CostApi {
    pub fn new(
        engine: Arc<Engine>,
        jobs: Arc<Jobs>,
        rules: Arc<QueryRules>,
        metrics: Arc<Metrics>,
        deadline_margin: Duration,
    ) -> Self {
        CostApi {
            engine,
            jobs,
            rules,
            metrics,
            answers: moka::sync::Cache::builder()
                .max_capacity(ANSWER_MEMO_BYTES)
                .weigher(|query: &CostQuery, answer: &Arc<Remembered>| {
                    u32::try_from(remembered_bytes(query, answer)).unwrap_or(u32::MAX)
                })
                .build(),
            answers_by_request: moka::sync::Cache::builder()
                .max_capacity(ANSWER_MEMO_BYTES)
                .weigher(
                    |(_, request): &(Option<usize>, Bytes), answer: &Arc<Remembered>| {
                        u32::try_from(
                            request.len()
                                + answer.frame.len()
                                + answer.touched.len()
                                + size_of::<Remembered>(),
                        )
                        .unwrap_or(u32::MAX)
                    },
                )
                .build(),
            deadline_margin,
        }
    }

    /// The frame of the answer remembered for a request of these very bytes from this caller's grant,
    /// while it is unchanged.
    fn remembered_frame(&self, extensions: &tonic::Extensions, request: Bytes) -> Option<Bytes> {
        // No access attached: the call is refused on the way through tonic (deny by default).
        let scope = guard::attached(extensions)?.scope();
        let answer = self.answers_by_request.get(&(scope, request))?;
        (self.engine.cache().now() < answer.until).then(|| {
            self.metrics.answer_remembered(AnswerFound::ByRequest);
            guard::Note::of(extensions).accounts(answer.touched.clone());
            answer.frame.clone()
        })
    }

    /// GetCosts as [`CostServer`] hands it on (no answer remembered for its bytes), the request
    /// still encoded: decoded and answered as usual, and remembered by its bytes when it may be.
    async fn answer_encoded(&self, request: Request<Bytes>) -> Result<Response<Answer>, Status> {
        let (metadata, extensions, encoded) = request.into_parts();
        let key = (guard::access(&extensions)?.scope(), encoded);
        let message =
            pb::GetCostsRequest::decode(key.1.clone()).map_err(status::undecodable_request)?;
        let (answer, remembered) = self
            .answer_query(Request::from_parts(metadata, extensions, message))
            .await?;
        if let Some(remembered) = remembered {
            self.answers_by_request.insert(key, remembered);
        }
        Ok(Response::new(answer))
    }

    /// GetCosts: a remembered answer's stored bytes while it is unchanged, else the engine's report;
    /// an answer that may be remembered is encoded once, stored, and sent as those bytes.
    /// Returns the answer and, when it may be remembered, what was remembered.
    async fn answer_query(
        &self,
        request: Request<pb::GetCostsRequest>,
    ) -> Result<(Answer, Option<Arc<Remembered>>), Status> {
        let deadline = Deadline::from_grpc_metadata(request.metadata(), self.deadline_margin);
        let access = guard::access(request.extensions())?;
        let note = guard::Note::of(request.extensions());
        let query = self.rules.parse(request.into_inner().query, &access)?;
        let touched = guard::touched(&query);
        note.accounts(touched.clone());
        if let Some(answer) = self.answers.get(&query)
            && self.engine.cache().now() < answer.until
        {
            self.metrics.answer_remembered(AnswerFound::ByQuery);
            return Ok((
                Answer::Encoded(unary_frame::message_of(&answer.frame)),
                Some(answer),
            ));
        }
        // Another replica's job for this very query polls what the engine would ask again: join it
        // for the asynchronous accounts, and answer the others here.
        let elsewhere = match self.engine.asks_asynchronous(&query) {
            true => self.jobs.running_elsewhere(&access.owner(), &query).await,
            false => None,
        };
        if let Some(job) = elsewhere {
            let report = self
                .engine
                .report_beside(&query, deadline, &job)
                .await
                .map_err(|e| status::engine(&e))?;
            let wire = report_naming_job(&report, job.id.name())?;
            let answer = pb::GetCostsResponse { report: Some(wire) };
            return Ok((Answer::Message(Box::new(answer)), None));
        }
        let mut report = self
            .engine
            .report(&query, deadline)
            .await
            .map_err(|e| status::engine(&e))?;
        let job = match report.is_pending() {
            // The upstream work goes on in a job, which takes over this call's holds on it. With the
            // job store unreachable the answer still goes out, naming no job (its work stops).
            true => {
                job_for_pending(
                    &self.jobs,
                    &query,
                    std::mem::take(&mut report.holds),
                    access.owner(),
                )
                .await?
            }
            false => String::new(),
        };
        let wire = report_naming_job(&report, job)?;
        let answer = pb::GetCostsResponse { report: Some(wire) };
        let Some(until) = report.unchanged_until else {
            return Ok((Answer::Message(Box::new(answer)), None));
        };
        let Some(frame) = unary_frame::framed(&answer) else {
            return Ok((Answer::Message(Box::new(answer)), None));
        };
        let remembered = Arc::new(Remembered {
            frame,
            until,
            touched,
        });
        self.answers.insert(query, remembered.clone());
        let encoded = unary_frame::message_of(&remembered.frame);
        Ok((Answer::Encoded(encoded), Some(remembered)))
    }
}

/// A report in its wire form, its PENDING accounts and itself naming `job` (empty: none).
fn report_naming_job(report: &Report, job: String) -> Result<pb::CostReport, Status> {
    let mut wire =
        convert::report_to_proto(report).map_err(|e| status::engine(&EngineError::from(e)))?;
    if !job.is_empty() {
        convert::name_pending_job(&mut wire.provider_results, &job);
    }
    wire.job = job;
    Ok(wire)
}

/// The job that takes over the holds of an answer's PENDING accounts: the running one for `query`,
/// or a new one. With the job store unreachable the answer still goes out, naming no job (its work
/// stops); a full job table refuses the call.
pub(super) async fn job_for_pending(
    jobs: &Arc<Jobs>,
    query: &CostQuery,
    holds: Vec<crate::engine::FetchHold>,
    owner: Option<String>,
) -> Result<String, Status> {
    match jobs.join_or_start(query.clone(), holds, owner).await {
        Ok(job) => Ok(job.id.name()),
        Err(StartError::Full(full)) => Err(status::jobs_full(&full)),
        Err(StartError::Store(error)) => {
            tracing::warn!(%error, "no job for the pending accounts");
            Ok(String::new())
        }
    }
}

/// What a remembered answer holds: its stored bytes exactly, its key (the query's own heap included)
/// and the entry itself.
fn remembered_bytes(query: &CostQuery, answer: &Remembered) -> usize {
    let filter = &query.filter;
    let texts = filter
        .sub_accounts
        .iter()
        .chain(&filter.resources)
        .chain(&filter.services)
        .map(|text| text.len() + size_of::<String>())
        .sum::<usize>();
    let accounts = filter
        .provider_accounts
        .iter()
        .map(|id| id.as_str().len() + size_of::<crate::domain::ProviderAccountId>())
        .sum::<usize>();
    answer.frame.len()
        + answer.touched.len()
        + size_of::<CostQuery>()
        + size_of::<Remembered>()
        + texts
        + accounts
        + filter.providers.len() * size_of::<crate::domain::ProviderKind>()
        + query.group_by.capacity() * size_of::<crate::domain::GroupBy>()
}

/// CostService as served: the generated server for every method but GetCosts, which is answered here.
/// A request whose bytes have an answer remembered gets that answer's stored frame as it is
/// ([`unary_frame`]); any other goes through [`AnswerCodec`], so an answer stored is written without
/// being encoded again. Same name, same decoding, the same `tonic::server::Grpc` (default
/// compression and size limits, as the generated server is configured), so callers, reflection and
/// the RPC layers see no difference.
#[derive(Clone)]
pub struct CostServer {
    api: Arc<CostApi>,
    generated: CostServiceServer<CostApi>,
    max_request_bytes: usize,
}

impl CostServer {
    /// Serves `api`, refusing request messages larger than `max_request_bytes`.
    pub fn new(api: CostApi, max_request_bytes: usize) -> Self {
        let api = Arc::new(api);
        CostServer {
            generated: CostServiceServer::from_arc(api.clone())
                .max_decoding_message_size(max_request_bytes),
            api,
            max_request_bytes,
        }
    }
}

impl NamedService for CostServer {
    const NAME: &'static str = <CostServiceServer<CostApi> as NamedService>::NAME;
}

impl<B> tower::Service<http::Request<B>> for CostServer
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::<http::Request<B>>::poll_ready(&mut self.generated, cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != GET_COSTS_PATH {
            return self.generated.call(request);
        }
        let api = self.api.clone();
        let max_request_bytes = self.max_request_bytes;
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let (message, body) = unary_frame::read_message(body, max_request_bytes).await;
            if let Some(frame) = message.and_then(|m| api.remembered_frame(&parts.extensions, m)) {
                return Ok(stored_answer(frame));
            }
            let request = http::Request::from_parts(parts, body);
            let mut grpc = Grpc::new(AnswerCodec).max_decoding_message_size(max_request_bytes);
            Ok(grpc.unary(GetCosts(api), request).await)
        })
    }
}

/// The response of a remembered answer, as tonic would write it: gRPC's content type, the frame,
/// trailers saying OK.
fn stored_answer(frame: Bytes) -> http::Response<tonic::body::Body> {
    let body = tonic::body::Body::new(unary_frame::StoredAnswer::new(frame));
    let mut response = http::Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// GetCosts as a unary service of [`AnswerCodec`].
struct GetCosts(Arc<CostApi>);

impl UnaryService<Bytes> for GetCosts {
    type Response = Answer;
    type Future = BoxFuture<Response<Answer>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let api = self.0.clone();
        Box::pin(async move { api.answer_encoded(request).await })
    }
}

/// Hands over the request's bytes as they came (a repeated request is answered by them); writes an
/// [`Answer`]: a message is encoded, stored bytes are copied into the frame as they are.
#[derive(Clone, Copy, Default)]
struct AnswerCodec;

impl Codec for AnswerCodec {
    type Encode = Answer;
    type Decode = Bytes;
    type Encoder = AnswerCodec;
    type Decoder = AnswerCodec;

    fn encoder(&mut self) -> Self::Encoder {
        AnswerCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        AnswerCodec
    }
}

impl Decoder for AnswerCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Encoder for AnswerCodec {
    type Item = Answer;
    type Error = Status;

    fn encode(&mut self, answer: Answer, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match answer {
            Answer::Message(message) => message.encode(dst).map_err(status::encoding),
            Answer::Encoded(bytes) => {
                dst.put(bytes);
                Ok(())
            }
        }
    }
}

#[tonic::async_trait]
impl pb::cost_service_server::CostService for CostApi {
    /// Reached only when the generated server is used alone: [`CostServer`] answers GetCosts itself.
    async fn get_costs(
        &self,
        request: Request<pb::GetCostsRequest>,
    ) -> Result<Response<pb::GetCostsResponse>, Status> {
        let (answer, _) = self.answer_query(request).await?;
        let message = match answer {
            Answer::Message(message) => *message,
            Answer::Encoded(bytes) => {
                pb::GetCostsResponse::decode(bytes).map_err(status::own_answer_unreadable)?
            }
        };
        Ok(Response::new(message))
    }

    async fn list_cost_records(
        &self,
        request: Request<pb::ListCostRecordsRequest>,
    ) -> Result<Response<pb::ListCostRecordsResponse>, Status> {
        let deadline = Deadline::from_grpc_metadata(request.metadata(), self.deadline_margin);
        let access = guard::access(request.extensions())?;
        let note = guard::Note::of(request.extensions());
        let asked = request.into_inner();
        self.rules.refuse_ungranted(asked.query.as_ref(), &access)?;
        let (query, mut violations) = match convert::parse_query(asked.query, &self.rules) {
            Ok(mut query) => {
                self.rules.scope(&mut query, &access)?;
                note.accounts(guard::touched(&query));
                (Some(query), Vec::new())
            }
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

    type ExportCostsStream = super::export::ExportStream;

    async fn export_costs(
        &self,
        request: Request<pb::ExportCostsRequest>,
    ) -> Result<Response<Self::ExportCostsStream>, Status> {
        let deadline = Deadline::from_grpc_metadata(request.metadata(), self.deadline_margin);
        let access = guard::access(request.extensions())?;
        let note = guard::Note::of(request.extensions());
        super::export::export_costs(
            super::export::Exporter {
                engine: &self.engine,
                jobs: &self.jobs,
                rules: &self.rules,
                metrics: &self.metrics,
            },
            deadline,
            request.into_inner(),
            &access,
            &note,
        )
        .await
    }

    async fn list_providers(
        &self,
        request: Request<pb::ListProvidersRequest>,
    ) -> Result<Response<pb::ListProvidersResponse>, Status> {
        let access = guard::access(request.extensions())?;
        let provider_accounts = self
            .engine
            .providers()
            .iter()
            .filter(|provider| access.covers_account(provider.account().id.as_str()))
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
                let (circuit, circuit_retry_time) = match provider.circuit() {
                    CircuitReading::Closed => (pb::CircuitState::Closed, None),
                    CircuitReading::HalfOpen => (pb::CircuitState::HalfOpen, None),
                    CircuitReading::Open { until, .. } => {
                        (pb::CircuitState::Open, Some(convert::time_to_proto(until)))
                    }
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
                        circuit: circuit as i32,
                        circuit_retry_time,
                    }),
                }
            })
            .collect::<Vec<_>>();
        guard::Note::of(request.extensions()).accounts(
            provider_accounts
                .iter()
                .map(|account| account.id.as_str())
                .collect::<Vec<_>>()
                .join(","),
        );
        let reached = self.jobs.probe_store().await;
        Ok(Response::new(pb::ListProvidersResponse {
            provider_accounts,
            job_store: Some(pb::JobStoreStatus {
                kind: self.jobs.store_kind().to_string(),
                up: reached.is_ok(),
                error: reached.err().map(|e| e.to_string()).unwrap_or_default(),
            }),
        }))
    }
}
