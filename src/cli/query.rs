//! `costd query`: one GetCosts call, printed as a table, JSON or CSV.

use super::{Connection, OutputFormat, output, parse_instant};
use crate::{
    api::convert,
    domain::{GroupBy, ProviderKind},
    proto as pb,
};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// Arguments of `costd query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Start of the range, inclusive: 2026-01-01 or an RFC 3339 date-time (UTC).
    #[arg(long, value_parser = parse_instant)]
    pub from: DateTime<Utc>,
    /// End of the range, exclusive.
    #[arg(long, value_parser = parse_instant)]
    pub to: DateTime<Utc>,
    /// Ordered grouping: provider, billing_account, sub_account, resource, service, sku,
    /// charge_dimension, charge_category (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = parse_group_by)]
    pub group_by: Vec<GroupBy>,
    /// none, daily or monthly.
    #[arg(long, default_value = "none", value_parser = ["none", "daily", "monthly"])]
    pub granularity: String,
    /// Only these provider kinds: atlas, elastic, team_billing (comma-separated or repeated).
    #[arg(long = "provider", value_parser = parse_provider, value_delimiter = ',')]
    pub providers: Vec<ProviderKind>,
    /// Only these configured provider accounts (comma-separated or repeated).
    #[arg(long = "account", value_delimiter = ',')]
    pub accounts: Vec<String>,
    /// Only these sub-accounts, projects or deployments (comma-separated or repeated).
    #[arg(long = "sub-account", value_delimiter = ',')]
    pub sub_accounts: Vec<String>,
    /// Only these resources (comma-separated or repeated).
    #[arg(long = "resource", value_delimiter = ',')]
    pub resources: Vec<String>,
    /// Only these services (comma-separated or repeated).
    #[arg(long = "service", value_delimiter = ',')]
    pub services: Vec<String>,
    /// table, json or csv.
    #[arg(long, default_value = "table")]
    pub output: OutputFormat,
    /// How long to wait for the answer, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

fn parse_group_by(text: &str) -> Result<GroupBy, String> {
    let normalized = text.trim().replace('-', "_");
    let alias = match normalized.as_str() {
        "account" => "billing_account",
        "project" => "sub_account",
        other => other,
    };
    GroupBy::ALL
        .into_iter()
        .find(|g| g.as_str() == alias)
        .ok_or_else(|| {
            format!(
                "`{text}` is not a dimension; use one of: {}",
                GroupBy::ALL.map(|g| g.as_str()).join(", ")
            )
        })
}

fn parse_provider(text: &str) -> Result<ProviderKind, String> {
    text.replace('-', "_")
        .parse()
        .map_err(|e: crate::domain::IdError| e.to_string())
}

/// Runs the query and prints the answer on stdout; errors are returned for the caller to print.
/// The wire query the arguments describe.
pub fn query_of(args: &QueryArgs) -> pb::CostQuery {
    let granularity = match args.granularity.as_str() {
        "daily" => pb::Granularity::Daily,
        "monthly" => pb::Granularity::Monthly,
        _ => pb::Granularity::None,
    };
    pb::CostQuery {
        start_time: Some(convert::time_to_proto(args.from)),
        end_time: Some(convert::time_to_proto(args.to)),
        filter: Some(pb::CostFilter {
            providers: args
                .providers
                .iter()
                .map(|k| convert::provider_kind_to_proto(*k) as i32)
                .collect(),
            provider_accounts: args.accounts.clone(),
            sub_accounts: args.sub_accounts.clone(),
            resources: args.resources.clone(),
            services: args.services.clone(),
        }),
        group_by: args
            .group_by
            .iter()
            .map(|g| convert::group_by_to_proto(*g) as i32)
            .collect(),
        granularity: granularity as i32,
        max_staleness: None,
    }
}

/// Runs the query and prints the answer on stdout; errors are returned for the caller to print.
pub async fn run_query(args: QueryArgs) -> Result<(), String> {
    let query = query_of(&args);
    let mut client =
        pb::cost_service_client::CostServiceClient::new(args.connection.connect().await?);
    let mut request = tonic::Request::new(pb::GetCostsRequest { query: Some(query) });
    request.set_timeout(Duration::from_secs(args.timeout));
    let response = client.get_costs(request).await.map_err(describe_status)?;
    let report = response
        .into_inner()
        .report
        .ok_or("the server sent no report")?;
    let mut stdout = std::io::stdout().lock();
    output::print_report(&mut stdout, &report, args.output)
        .map_err(|e| format!("cannot write the output: {e}"))
}

/// A status as one readable line, with every field violation.
pub fn describe_status(status: tonic::Status) -> String {
    use tonic_types::StatusExt;
    match status.get_details_bad_request() {
        Some(bad_request) => {
            let mut text = format!(
                "{:?}: the query has {} problem(s):",
                status.code(),
                bad_request.field_violations.len()
            );
            for violation in bad_request.field_violations {
                text.push_str(&format!(
                    "\n  {}: {}",
                    violation.field, violation.description
                ));
            }
            text
        }
        None => format!("{:?}: {}", status.code(), status.message()),
    }
}
