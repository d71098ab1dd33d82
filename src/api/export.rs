//! CostService.ExportCosts: the records of a query as a FOCUS file, streamed. The engine gathers the
//! chunks as for ListCostRecords; a blocking task writes them a group at a time into a bounded
//! channel, so the file is never whole in memory and a slow reader holds the writer back.

use super::{QueryRules, convert, guard, status};
use crate::{
    auth::Access,
    deadline::Deadline,
    engine::{Engine, EngineError, Jobs},
    export::{self, ExportError, ExportPlan, FileFormat},
    metrics::Metrics,
    proto as pb,
};
use futures::stream::{BoxStream, StreamExt};
use std::sync::Arc;
use tokio::sync::mpsc::{self, error::TrySendError};
use tonic::{Response, Status};
use tonic_types::FieldViolation;

pub type ExportStream = BoxStream<'static, Result<pb::ExportCostsResponse, Status>>;

/// What an export request asks for, parsed.
struct ExportRequest {
    query: crate::domain::CostQuery,
    format: FileFormat,
    rows_per_group: usize,
}

/// As `QueryRules::parse` for the query (the caller's grant first), with the export's own fields.
fn parse(
    asked: pb::ExportCostsRequest,
    rules: &QueryRules,
    access: &Access,
) -> Result<ExportRequest, Status> {
    rules.refuse_ungranted(asked.query.as_ref(), access)?;
    let (query, mut violations) = match convert::parse_query(asked.query, rules) {
        Ok(query) => (Some(query), Vec::new()),
        Err(violations) => (None, violations),
    };
    let format = match pb::ExportFormat::try_from(asked.format) {
        Ok(pb::ExportFormat::FocusCsv) => Some(FileFormat::FocusCsv),
        Ok(pb::ExportFormat::FocusParquet) => Some(FileFormat::FocusParquet),
        _ => {
            violations.push(FieldViolation::new(
                "format",
                "required: EXPORT_FORMAT_FOCUS_CSV or EXPORT_FORMAT_FOCUS_PARQUET",
            ));
            None
        }
    };
    let rows_per_group = match usize::try_from(asked.rows_per_group) {
        Ok(0) => export::DEFAULT_ROWS_PER_GROUP,
        Ok(rows) if rows <= export::MAX_ROWS_PER_GROUP => rows,
        _ => {
            violations.push(FieldViolation::new(
                "rows_per_group",
                format!(
                    "must be between 0 (the default) and {}",
                    export::MAX_ROWS_PER_GROUP
                ),
            ));
            0
        }
    };
    match (query, format) {
        (Some(mut query), Some(format)) if violations.is_empty() => {
            rules.scope(&mut query, access)?;
            Ok(ExportRequest {
                query,
                format,
                rows_per_group,
            })
        }
        _ => Err(status::invalid_argument(violations)),
    }
}

/// What ExportCosts uses of the service.
pub struct Exporter<'a> {
    pub engine: &'a Engine,
    pub jobs: &'a Arc<Jobs>,
    pub rules: &'a QueryRules,
    pub metrics: &'a Arc<Metrics>,
}

/// ExportCosts: the header at once, then the file from a blocking writer task.
pub async fn export_costs(
    Exporter {
        engine,
        jobs,
        rules,
        metrics,
    }: Exporter<'_>,
    deadline: Deadline,
    asked: pb::ExportCostsRequest,
    access: &Access,
    note: &guard::Note,
) -> Result<Response<ExportStream>, Status> {
    let request = parse(asked, rules, access)?;
    note.accounts(guard::touched(&request.query));
    let mut set = engine
        .records(&request.query, deadline)
        .await
        .map_err(|e| status::engine(&e))?;
    let accounts = set
        .accounts_with_totals()
        .map_err(|e| status::engine(&EngineError::from(e)))?;
    let mut provider_results = accounts
        .iter()
        .map(convert::account_result_to_proto)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| status::engine(&EngineError::from(e)))?;
    if !set.holds.is_empty() {
        // As in GetCosts: a PENDING account's upstream work goes on in a job the header names.
        let job = super::cost_service::job_for_pending(
            jobs,
            &request.query,
            std::mem::take(&mut set.holds),
            access.owner(),
        )
        .await?;
        convert::name_pending_job(&mut provider_results, &job);
    }
    let row_count: u64 = accounts.iter().map(|a| a.record_count).sum();
    let plan = ExportPlan {
        format: request.format,
        rows_per_group: request.rows_per_group,
    };
    let header = pb::ExportCostsResponse {
        part: Some(pb::export_costs_response::Part::Header(pb::ExportHeader {
            content_type: plan.format.content_type().to_string(),
            focus_version: export::FOCUS_VERSION.to_string(),
            row_count: Some(i64::try_from(row_count).unwrap_or(i64::MAX)),
            provider_results,
            format: match plan.format {
                FileFormat::FocusCsv => pb::ExportFormat::FocusCsv,
                FileFormat::FocusParquet => pb::ExportFormat::FocusParquet,
            } as i32,
        })),
    };
    let (sender, receiver) = mpsc::channel(export::MESSAGES_AHEAD);
    // An empty channel whose receiver is held here always takes its first message.
    let _ = sender.try_send(Ok(header));
    let metrics = metrics.clone();
    tokio::task::spawn_blocking(move || {
        let mut sink = |content: Vec<u8>, rows_written: u64| {
            let data = pb::ExportData {
                content,
                rows_written: i64::try_from(rows_written).unwrap_or(i64::MAX),
            };
            let message = Ok(pb::ExportCostsResponse {
                part: Some(pb::export_costs_response::Part::Data(data)),
            });
            match sender.try_send(message) {
                Ok(()) => {}
                // A full channel: the reader is behind, and the writer waits for it, counted
                // as blocked meanwhile.
                Err(TrySendError::Full(message)) => {
                    let _blocked = metrics.export_writer_blocked();
                    sender
                        .blocking_send(message)
                        .map_err(|_| ExportError::Stopped)?;
                }
                Err(TrySendError::Closed(_)) => return Err(ExportError::Stopped),
            }
            metrics.export_message();
            Ok(())
        };
        match export::write_file(set.records(), &plan, &mut sink) {
            Ok(_) | Err(ExportError::Stopped) => {}
            Err(error) => {
                tracing::warn!(error = %error, "export failed");
                let _ = sender.blocking_send(Err(status::export(&error)));
            }
        }
    });
    let stream = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|message| (message, receiver))
    });
    Ok(Response::new(stream.boxed()))
}
