//! The scrape endpoint: `GET /metrics` on its own listener, so the gRPC port carries only gRPC and a
//! NetworkPolicy can open one without the other.

use super::{CONTENT_TYPE, Metrics};
use crate::{engine::Engine, jobs::JobManager};
use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use std::{future::Future, sync::Arc};
use tokio::net::TcpListener;

#[derive(Clone)]
struct Scrape {
    metrics: Arc<Metrics>,
    engine: Arc<Engine>,
    jobs: Arc<JobManager>,
}

/// Serves `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    engine: Arc<Engine>,
    jobs: Arc<JobManager>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scrape {
            metrics,
            engine,
            jobs,
        });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn scrape(State(state): State<Scrape>) -> impl IntoResponse {
    // Gauges of held state are read now rather than kept up to date on every change.
    let (bytes, entries) = state.engine.cache().size().await;
    state.metrics.set_cache_size(bytes, entries);
    state.metrics.set_jobs(&state.jobs.count_by_state());
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics.encode(),
    )
}
