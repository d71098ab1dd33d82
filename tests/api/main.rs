//! Integration tests through the real server: each test spawns costd on 127.0.0.1:0 with its own
//! sandbox upstreams and calls it with the generated tonic client.

mod answers_remembered;
mod architecture;
mod atlas;
mod auth;
mod bad_input;
mod binary;
mod bounded_jobs;
mod chart;
mod config;
mod connections;
mod consistency;
mod drain;
mod elastic;
mod end_to_end;
mod engine;
mod export;
mod failures;
mod get_costs;
mod helpers;
mod honest_counts;
mod jobs;
mod metrics;
mod overload;
mod politeness;
mod redis_kit;
mod replicas;
mod retries;
mod scale;
mod server;
mod telemetry;
mod trace_context;
mod unlabeled_rows;
mod untrusted;
mod validation;
mod weigher;
