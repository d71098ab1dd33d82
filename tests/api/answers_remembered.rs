//! Remembered GetCosts answers, through the real server: an answer built wholly from fresh cached
//! chunks is stored encoded and sent again as those bytes (no upstream request, no chunk lookup),
//! until it could change; stale, pending, failed and just-fetched answers are never remembered.
//!
//! Whether an answer was computed or remembered shows in the scrape: computing one looks up each of
//! its chunks in the chunk cache (`costd_cache_hits_total` / `costd_cache_misses_total`), a
//! remembered one looks up none.

use crate::helpers::*;
use crate::metrics::scrape;
use bytes::Bytes;
use costd::{clock::ManualClock, proto as pb, sandbox::Fault};
use http::StatusCode;
use prost::Message;
use std::{sync::Arc, time::Duration};
use tonic_types::StatusExt;

const GET_COSTS_PATH: &str = "/costd.v1.CostService/GetCosts";

/// Chunk-cache lookups so far (hits and misses, every provider kind the app serves).
async fn chunk_lookups(app: &TestApp) -> f64 {
    let scraped = scrape(app).await;
    ["hits", "misses"]
        .iter()
        .map(|kind| {
            scraped
                .get(&format!(
                    "costd_cache_{kind}_total{{provider=\"team_billing\"}}"
                ))
                .copied()
                .unwrap_or(0.0)
        })
        .sum()
}

/// GetCosts with the answer's bytes as the server wrote them.
async fn raw_get_costs(app: &TestApp, query: &pb::CostQuery) -> Bytes {
    raw_get_costs_of(app, request_bytes(query)).await
}

fn request_bytes(query: &pb::CostQuery) -> Bytes {
    let request = pb::GetCostsRequest {
        query: Some(query.clone()),
    };
    Bytes::from(request.encode_to_vec())
}

/// GetCosts of a request's bytes as given, with the answer's bytes as the server wrote them.
async fn raw_get_costs_of(app: &TestApp, request: Bytes) -> Bytes {
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    within(grpc.ready()).await.expect("ready");
    within(grpc.unary(
        tonic::Request::new(request),
        http::uri::PathAndQuery::from_static(GET_COSTS_PATH),
        RawCodec,
    ))
    .await
    .expect("answer")
    .into_inner()
}

/// `costd_answers_remembered_total` by what found the answer: (request bytes, query).
async fn remembered_found(app: &TestApp) -> (f64, f64) {
    let scraped = scrape(app).await;
    let by = |found: &str| {
        scraped
            .get(&format!("costd_answers_remembered_total{{by=\"{found}\"}}"))
            .copied()
            .unwrap_or(0.0)
    };
    (by("request_bytes"), by("query"))
}

fn report_of(bytes: &Bytes) -> pb::CostReport {
    pb::GetCostsResponse::decode(bytes.clone())
        .expect("a GetCostsResponse")
        .report
        .expect("a report")
}

/// September 2026 by team and service, seen from 20 November: settled, so fresh for hours.
fn settled_month() -> pb::CostQuery {
    query(
        "2026-09-01",
        "2026-10-01",
        &[pb::GroupBy::BillingAccount, pb::GroupBy::Service],
        pb::Granularity::Monthly,
    )
}

fn november_20() -> ManualClock {
    ManualClock::new(at("2026-11-20T00:00:00Z"))
}

#[tokio::test]
async fn a_repeated_query_is_answered_from_the_stored_bytes_until_it_could_change() {
    let clock = november_20();
    let app = spawn_app_on(Arc::new(clock.clone()), |_| {}).await;
    let asked = settled_month();

    // Just fetched: not remembered.
    let fetched = within(app.get_costs(asked.clone())).await.expect("answer");
    let fetches = app.sandbox.total_requests();
    assert!(fetches >= 3, "each team asked upstream: {fetches}");
    assert!(!fetched.rows.is_empty());

    // From fresh cached chunks: computed (each chunk looked up), then remembered.
    let lookups = chunk_lookups(&app).await;
    let stored = raw_get_costs(&app, &asked).await;
    assert_eq!(app.sandbox.total_requests(), fetches, "no upstream request");
    let computed_lookups = chunk_lookups(&app).await;
    assert!(
        computed_lookups > lookups,
        "the second answer was computed from the chunk cache"
    );
    let first_remembered = report_of(&stored);
    assert!(
        first_remembered
            .provider_results
            .iter()
            .all(|r| r.state == pb::ResultState::Ok as i32 && r.from_cache)
    );
    // The fetched answer differs from it only in saying it was fetched.
    let mut as_cached = fetched.clone();
    for result in &mut as_cached.provider_results {
        result.from_cache = true;
        result.upstream_requests = 0;
    }
    assert_eq!(as_cached, first_remembered);

    // Asked again, with either client: the stored bytes, no lookup, no upstream request.
    let again = raw_get_costs(&app, &asked).await;
    let decoded = within(app.get_costs(asked.clone())).await.expect("answer");
    assert_eq!(again, stored, "the same bytes");
    assert_eq!(decoded, first_remembered, "field for field");
    assert_eq!(app.sandbox.total_requests(), fetches, "no upstream request");
    assert_eq!(
        chunk_lookups(&app).await,
        computed_lookups,
        "answered without looking up a chunk"
    );

    // Once its chunks' freshness ends (6 h for a settled month) the answer could change: not served.
    clock.advance(chrono::Duration::hours(7));
    let refreshed = within(app.get_costs(asked)).await.expect("answer");
    assert!(
        app.sandbox.total_requests() > fetches,
        "the chunks were fetched again"
    );
    assert!(refreshed.provider_results.iter().all(|r| !r.from_cache));
}

#[tokio::test]
async fn a_remembered_answer_is_found_by_the_request_bytes_before_decoding_and_else_by_the_query() {
    let app = spawn_app_on(Arc::new(november_20()), |_| {}).await;
    let asked = settled_month();
    within(app.get_costs(asked.clone())).await.expect("answer");
    let computed = raw_get_costs(&app, &asked).await;
    assert_eq!(
        remembered_found(&app).await,
        (0.0, 0.0),
        "fetched, then computed"
    );
    let fetches = app.sandbox.total_requests();

    // The same bytes: the stored frame, found before the request is decoded.
    assert_eq!(raw_get_costs(&app, &asked).await, computed);
    assert_eq!(remembered_found(&app).await, (1.0, 0.0));

    // Other bytes for the same question (a field this build does not know, which decoding skips):
    // found by the parsed query, then remembered by these bytes too.
    let mut other_bytes = request_bytes(&asked).to_vec();
    other_bytes.extend_from_slice(&[0xC0, 0x3E, 0x01]); // field 1000, varint 1
    let other_bytes = Bytes::from(other_bytes);
    assert_eq!(raw_get_costs_of(&app, other_bytes.clone()).await, computed);
    assert_eq!(remembered_found(&app).await, (1.0, 1.0));
    assert_eq!(raw_get_costs_of(&app, other_bytes).await, computed);
    assert_eq!(remembered_found(&app).await, (2.0, 1.0));

    // The generated client sends the first bytes.
    within(app.get_costs(asked)).await.expect("answer");
    assert_eq!(remembered_found(&app).await, (3.0, 1.0));
    assert_eq!(app.sandbox.total_requests(), fetches, "no upstream request");
}

#[tokio::test]
async fn a_stale_answer_is_not_remembered() {
    let clock = november_20();
    let app = spawn_app_on(Arc::new(clock.clone()), |settings| {
        settings.upstream.max_attempts = 1;
        settings.accounts.retain(|a| a.id.as_str() == "team-acme");
    })
    .await;
    let acme = team_scope("team_acme");
    // The open month: fresh for five minutes.
    let november = query("2026-11-01", "2026-12-01", &[], pb::Granularity::None);
    within(app.get_costs(november.clone()))
        .await
        .expect("answer");
    within(app.get_costs(november.clone()))
        .await
        .expect("answer");
    assert_eq!(app.sandbox.request_count(&acme), 1);

    clock.advance(chrono::Duration::minutes(10));
    app.sandbox.set_persistent_fault(
        &acme,
        Fault::Status {
            code: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
        },
    );
    for refresh in 1..=2 {
        let stale = within(app.get_costs(november.clone()))
            .await
            .expect("answer");
        assert_eq!(
            result_of(&stale, "team-acme").state,
            pb::ResultState::Stale as i32
        );
        assert_eq!(
            app.sandbox.request_count(&acme),
            1 + refresh,
            "each stale answer tried a refresh: none was remembered"
        );
    }
}

#[tokio::test]
async fn a_failed_answer_is_not_remembered() {
    let app = spawn_app_on(Arc::new(november_20()), |settings| {
        settings.upstream.max_attempts = 1;
    })
    .await;
    let acme = team_scope("team_acme");
    app.sandbox.set_persistent_fault(
        &acme,
        Fault::Status {
            code: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
        },
    );
    let asked = settled_month();
    for attempt in 1..=2 {
        let report = within(app.get_costs(asked.clone())).await.expect("answer");
        assert_eq!(
            result_of(&report, "team-acme").state,
            pb::ResultState::Failed as i32
        );
        assert_eq!(
            result_of(&report, "team-borealis").state,
            pb::ResultState::Ok as i32
        );
        assert_eq!(
            app.sandbox.request_count(&acme),
            attempt,
            "each answer asked the failing account again: none was remembered"
        );
    }
}

#[tokio::test]
async fn a_pending_answer_is_not_remembered() {
    let app = spawn_app_on(Arc::new(november_20()), |settings| {
        settings.accounts.retain(|a| a.id.as_str() == "team-acme");
    })
    .await;
    app.sandbox
        .set_persistent_fault(&team_scope("team_acme"), Fault::Hang);
    let asked = settled_month();
    let mut lookups = chunk_lookups(&app).await;
    for _ in 0..2 {
        let mut hurried = tonic::Request::new(pb::GetCostsRequest {
            query: Some(asked.clone()),
        });
        // Less the server's 200 ms margin, the caller waits 300 ms for its chunk.
        hurried.set_timeout(Duration::from_millis(500));
        let report = within(app.costs.clone().get_costs(hurried))
            .await
            .expect("an answer within the deadline")
            .into_inner()
            .report
            .expect("a report");
        let acme = result_of(&report, "team-acme");
        assert_eq!(acme.state, pb::ResultState::Pending as i32);
        assert!(!acme.job.is_empty(), "the work goes on in a job");
        let now = chunk_lookups(&app).await;
        assert!(now > lookups, "computed, not remembered");
        lookups = now;
    }
}

#[tokio::test]
async fn bytes_that_are_no_get_costs_request_are_an_invalid_argument() {
    let app = spawn_app().await;
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    // A truncated varint, then a field of wire type 7, which does not exist.
    for garbage in [&[0x0a, 0xff][..], &[0x0f, 0x01][..]] {
        within(grpc.ready()).await.expect("ready");
        let answer = within(grpc.unary(
            tonic::Request::new(Bytes::copy_from_slice(garbage)),
            http::uri::PathAndQuery::from_static(GET_COSTS_PATH),
            RawCodec,
        ))
        .await;
        let status = answer.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        let violations = status.get_details_bad_request().expect("BadRequest");
        assert_eq!(violations.field_violations[0].field, "request");
    }
    assert!(app.sandbox.requests().is_empty(), "nothing went upstream");
}

/// A request body sent as these DATA frames, one by one.
struct Pieces(std::collections::VecDeque<Bytes>);

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(
            self.0
                .pop_front()
                .map(|piece| Ok(http_body::Frame::data(piece))),
        )
    }
}

/// What came back for a GetCosts request of `pieces` (with `headers` besides gRPC's own): the data,
/// and the grpc-status of the trailers (or of the headers, for a trailers-only answer).
async fn get_costs_in_pieces(
    app: &TestApp,
    pieces: Vec<Bytes>,
    headers: &[(&'static str, &'static str)],
) -> (Vec<u8>, String) {
    use http_body::Body;
    use tower::{Service, ServiceExt};
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{}{GET_COSTS_PATH}", app.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(tonic::body::Body::new(Pieces(pieces.into())))
        .expect("a request");
    let mut channel = app.channel.clone();
    let response = within(channel.ready()).await.expect("ready").call(request);
    let response = within(response).await.expect("an HTTP answer");
    assert_eq!(response.status(), StatusCode::OK);
    let head_status = response.headers().get("grpc-status").cloned();
    let mut body = response.into_body();
    let (mut data, mut trailer_status) = (Vec::new(), None);
    while let Some(frame) = within(std::future::poll_fn(|cx| {
        std::pin::Pin::new(&mut body).poll_frame(cx)
    }))
    .await
    {
        let frame = frame.expect("a frame");
        if let Some(piece) = frame.data_ref() {
            data.extend_from_slice(piece);
        }
        if let Some(trailers) = frame.trailers_ref() {
            trailer_status = trailers.get("grpc-status").cloned();
        }
    }
    let status = trailer_status.or(head_status).expect("a grpc-status");
    (data, status.to_str().expect("text").to_string())
}

/// `message` as gRPC frames it, `compressed` or not.
fn grpc_frame(message: &[u8], compressed: bool) -> Bytes {
    let mut frame = vec![u8::from(compressed)];
    frame.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(message);
    Bytes::from(frame)
}

#[tokio::test]
async fn a_remembered_answer_goes_out_for_a_request_in_pieces_and_never_for_a_compressed_one() {
    let app = spawn_app_on(Arc::new(november_20()), |_| {}).await;
    let asked = settled_month();
    within(app.get_costs(asked.clone())).await.expect("fetched");
    raw_get_costs(&app, &asked).await;
    let stored = raw_get_costs(&app, &asked).await;
    let lookups = chunk_lookups(&app).await;
    let message = pb::GetCostsRequest { query: Some(asked) }.encode_to_vec();
    let frame = grpc_frame(&message, false);

    // The prefix split, and the message in two pieces after it.
    let pieces = vec![frame.slice(..2), frame.slice(2..7), frame.slice(7..)];
    let (answer, status) = get_costs_in_pieces(&app, pieces, &[]).await;
    assert_eq!(status, "0");
    assert_eq!(
        answer,
        grpc_frame(&stored, false),
        "the stored answer, framed"
    );
    assert_eq!(
        chunk_lookups(&app).await,
        lookups,
        "remembered, not computed"
    );

    // The same message marked compressed: costd accepts no compression, so it is refused as before,
    // not answered from memory because its bytes match.
    let compressed = grpc_frame(&message, true);
    let (answer, status) =
        get_costs_in_pieces(&app, vec![compressed], &[("grpc-encoding", "gzip")]).await;
    assert_eq!(status, (tonic::Code::Unimplemented as i32).to_string());
    assert!(answer.is_empty(), "no answer: {} bytes", answer.len());
}
