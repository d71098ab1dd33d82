//! The scrape endpoint: `GET /metrics` on its own listener, so the gRPC port carries only gRPC and a
//! NetworkPolicy can open one without the other.

use super::{CONTENT_TYPE, Metrics};
use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use futures::future::BoxFuture;
use std::{future::Future, sync::Arc};
use tokio::net::TcpListener;

/// The size of held state (the chunk cache, the job table), read at scrape time rather than kept up
/// to date on every change. The app implements it over what it built, so metrics import neither.
pub trait HeldState: Send + Sync + 'static {
    fn read(&self) -> BoxFuture<'_, HeldGauges>;
}

/// What [`HeldState`] reports.
#[derive(Debug, Clone, Default)]
pub struct HeldGauges {
    pub cache_bytes: u64,
    pub cache_entries: u64,
    /// Live jobs per state, every state listed.
    pub jobs_by_state: Vec<(&'static str, usize)>,
    /// The job store's kind, and whether it answered the read of those jobs.
    pub job_store_up: (&'static str, bool),
}

#[derive(Clone)]
struct Scrape {
    metrics: Arc<Metrics>,
    held: Arc<dyn HeldState>,
}

/// Serves `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    held: Arc<dyn HeldState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scrape { metrics, held });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn scrape(State(state): State<Scrape>) -> impl IntoResponse {
    let held = state.held.read().await;
    state
        .metrics
        .set_cache_size(held.cache_bytes, held.cache_entries);
    state.metrics.set_jobs(&held.jobs_by_state);
    let (store, up) = held.job_store_up;
    state.metrics.set_job_store_up(store, up);
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.encode(),
    )
}
