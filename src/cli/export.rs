//! `costd export`: ExportCosts into a file or stdout, with a progress bar of rows written while
//! stderr is a terminal; then each account's result (as `--output` says) on stderr.

use super::{QueryArgs, output, query::describe_status, query::query_of};
use crate::proto::{self as pb, cost_service_client::CostServiceClient};
use indicatif::{ProgressBar, ProgressStyle};
use std::{
    io::{IsTerminal, Write},
    path::PathBuf,
    time::Duration,
};

/// Arguments of `costd export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub query: QueryArgs,
    /// focus-csv or focus-parquet.
    #[arg(long, value_parser = ["focus-csv", "focus-parquet"])]
    pub format: String,
    /// The file to write; stdout when absent or `-`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Rows per Parquet row group (and per CSV message); 0: the server's default.
    #[arg(long, default_value_t = 0)]
    pub rows_per_group: i32,
}

/// Runs the export; errors are returned for the caller to print. A file left unfinished by an
/// error is removed.
pub async fn run_export(args: ExportArgs) -> Result<(), String> {
    let format = match args.format.as_str() {
        "focus-parquet" => pb::ExportFormat::FocusParquet,
        _ => pb::ExportFormat::FocusCsv,
    };
    let target = args.out.clone().filter(|path| path.as_os_str() != "-");
    let mut out: Box<dyn Write> = match &target {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let result = export_into(&args, format, &mut out).await;
    let flushed = out
        .flush()
        .map_err(|e| format!("cannot write the file: {e}"));
    drop(out);
    if let Some(path) = target
        .as_ref()
        .filter(|_| result.is_err() || flushed.is_err())
    {
        let _ = std::fs::remove_file(path);
    }
    let header = result?;
    flushed?;
    let summary = pb::CostReport {
        provider_results: header.provider_results,
        ..Default::default()
    };
    output::print_report(&mut std::io::stderr().lock(), &summary, args.query.output)
        .map_err(|e| format!("cannot write the summary: {e}"))
}

async fn export_into(
    args: &ExportArgs,
    format: pb::ExportFormat,
    out: &mut dyn Write,
) -> Result<pb::ExportHeader, String> {
    let mut client = CostServiceClient::new(args.query.connection.connect().await?);
    let mut request = tonic::Request::new(pb::ExportCostsRequest {
        query: Some(query_of(&args.query)),
        format: format as i32,
        rows_per_group: args.rows_per_group,
    });
    request.set_timeout(Duration::from_secs(args.query.timeout));
    let mut stream = client
        .export_costs(request)
        .await
        .map_err(describe_status)?
        .into_inner();
    let mut header = None;
    let mut bar = ProgressBar::hidden();
    while let Some(message) = stream.message().await.map_err(describe_status)? {
        match message.part {
            Some(pb::export_costs_response::Part::Header(first)) => {
                if std::io::stderr().is_terminal() {
                    bar = ProgressBar::new(first.row_count.unwrap_or(0).max(0) as u64);
                    bar.set_style(
                        ProgressStyle::with_template("{bar:40} {pos}/{len} rows written ({eta})")
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                }
                header = Some(first);
            }
            Some(pb::export_costs_response::Part::Data(data)) => {
                out.write_all(&data.content)
                    .map_err(|e| format!("cannot write the file: {e}"))?;
                bar.set_position(data.rows_written.max(0) as u64);
            }
            None => {}
        }
    }
    bar.finish_and_clear();
    header.ok_or_else(|| "the server sent no header".to_string())
}
