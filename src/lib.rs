//! costd: what we spend on SaaS infrastructure, by provider, account, project, resource, service and
//! day — one exact, FOCUS-aligned answer over gRPC.

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod deadline;
pub mod demo;
pub mod domain;
pub mod engine;
pub mod export;
pub mod jobs;
pub mod metrics;
pub mod proto;
pub mod providers;
pub mod redis_link;
pub mod sandbox;
pub mod server;
pub mod sync;
pub mod telemetry;

pub use app::{App, AppError};
