//! Printing a cost report as a table, JSON or CSV. Amounts are printed exactly, never through floats.

use crate::{
    domain::{Currency, Money, format_decimal},
    proto as pb,
};
use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::Serialize;
use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

/// An exact decimal amount of a wire `Money`, e.g. "12.5".
pub fn money_text(money: Option<&pb::Money>) -> String {
    let Some(money) = money else {
        return String::new();
    };
    let currency = Currency::parse(&money.currency_code).unwrap_or(Currency::USD);
    Money::from_units_and_nanos(currency, money.units, money.nanos)
        .to_decimal()
        .map(format_decimal)
        .unwrap_or_else(|_| format!("{}.{:09}", money.units, money.nanos.unsigned_abs()))
}

pub fn print_report(
    out: &mut impl Write,
    report: &pb::CostReport,
    format: OutputFormat,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Table => print_table(out, report),
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &JsonReport::from(report))
                .map_err(std::io::Error::other)?;
            writeln!(out)
        }
        OutputFormat::Csv => print_csv(out, report),
    }
}

fn group_names(report: &pb::CostReport) -> Vec<String> {
    report
        .query
        .as_ref()
        .map(|q| {
            q.group_by
                .iter()
                .map(|g| {
                    pb::GroupBy::try_from(*g)
                        .map(|g| {
                            g.as_str_name()
                                .trim_start_matches("GROUP_BY_")
                                .to_lowercase()
                        })
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn date(time: Option<&prost_types::Timestamp>) -> String {
    time.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| {
            t.format("%Y-%m-%d %H:%M")
                .to_string()
                .trim_end_matches(" 00:00")
                .to_string()
        })
        .unwrap_or_default()
}

fn group_cell(value: &pb::GroupValue) -> String {
    match (value.id.as_str(), value.display_name.as_str()) {
        ("", _) => "(none)".to_string(),
        (id, "") => id.to_string(),
        (id, name) => format!("{id} ({name})"),
    }
}

fn quantity_cell(quantity: Option<&pb::Quantity>) -> String {
    quantity
        .map(|q| format!("{} {}", q.value, q.unit))
        .unwrap_or_default()
}

fn state_name(state: i32) -> String {
    pb::ResultState::try_from(state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("RESULT_STATE_")
                .to_lowercase()
        })
        .unwrap_or_default()
}

fn print_table(out: &mut impl Write, report: &pb::CostReport) -> std::io::Result<()> {
    let mut rows = Table::new();
    rows.load_preset(UTF8_FULL_CONDENSED);
    let mut header = vec!["from".to_string(), "to".to_string()];
    header.extend(group_names(report));
    header.extend(["cost (USD)", "quantity", "records"].map(String::from));
    rows.set_header(header);
    for row in &report.rows {
        let mut cells = vec![
            date(row.period_start.as_ref()),
            date(row.period_end.as_ref()),
        ];
        cells.extend(row.group_values.iter().map(group_cell));
        cells.push(money_text(row.billed_cost.as_ref()));
        cells.push(quantity_cell(row.consumed_quantity.as_ref()));
        cells.push(row.record_count.to_string());
        rows.add_row(cells);
    }
    writeln!(out, "{rows}")?;
    let mut accounts = Table::new();
    accounts.load_preset(UTF8_FULL_CONDENSED);
    accounts.set_header([
        "account",
        "state",
        "cost (USD)",
        "records",
        "requests",
        "detail",
    ]);
    for result in &report.provider_results {
        let mut detail: Vec<String> = Vec::new();
        if let Some(error) = &result.error {
            detail.push(error.message.clone());
        }
        detail.extend(
            result
                .warnings
                .iter()
                .map(|w| format!("{}: {}", w.code, w.message)),
        );
        detail.extend(result.notes.iter().cloned());
        if !result.job.is_empty() {
            detail.push(format!("watch {}", result.job));
        }
        accounts.add_row([
            result.provider_account.clone(),
            state_name(result.state),
            money_text(result.billed_cost.as_ref()),
            result.record_count.to_string(),
            result.upstream_requests.to_string(),
            detail.join("\n"),
        ]);
    }
    writeln!(out, "{accounts}")?;
    if let Some(totals) = &report.totals {
        let coverage = if totals.complete {
            "complete"
        } else {
            "INCOMPLETE: see the accounts above"
        };
        writeln!(
            out,
            "total: {} USD over {} records ({coverage})",
            money_text(totals.billed_cost.as_ref()),
            totals.record_count
        )?;
    }
    Ok(())
}

fn print_csv(out: &mut impl Write, report: &pb::CostReport) -> std::io::Result<()> {
    let mut writer = csv::Writer::from_writer(out);
    let mut header = vec!["period_start".to_string(), "period_end".to_string()];
    header.extend(group_names(report));
    header.extend(
        [
            "billed_cost_usd",
            "consumed_quantity",
            "consumed_unit",
            "record_count",
        ]
        .map(String::from),
    );
    writer
        .write_record(&header)
        .map_err(std::io::Error::other)?;
    for row in &report.rows {
        let mut cells = vec![
            date(row.period_start.as_ref()),
            date(row.period_end.as_ref()),
        ];
        cells.extend(row.group_values.iter().map(|v| v.id.clone()));
        cells.push(money_text(row.billed_cost.as_ref()));
        cells.push(
            row.consumed_quantity
                .as_ref()
                .map(|q| q.value.clone())
                .unwrap_or_default(),
        );
        cells.push(
            row.consumed_quantity
                .as_ref()
                .map(|q| q.unit.clone())
                .unwrap_or_default(),
        );
        cells.push(row.record_count.to_string());
        writer.write_record(&cells).map_err(std::io::Error::other)?;
    }
    writer.flush()
}

#[derive(Serialize)]
pub(super) struct JsonReport {
    rows: Vec<JsonRow>,
    total_usd: String,
    record_count: i64,
    complete: bool,
    covered_provider_accounts: Vec<String>,
    provider_results: Vec<JsonProviderResult>,
}

#[derive(Serialize)]
struct JsonRow {
    period_start: String,
    period_end: String,
    group: Vec<JsonGroupValue>,
    billed_cost_usd: String,
    consumed_quantity: Option<String>,
    consumed_unit: Option<String>,
    record_count: i64,
}

#[derive(Serialize)]
struct JsonGroupValue {
    dimension: String,
    id: String,
    display_name: String,
}

#[derive(Serialize)]
struct JsonProviderResult {
    provider_account: String,
    state: String,
    billed_cost_usd: String,
    record_count: i64,
    upstream_requests: i32,
    error: Option<String>,
    warnings: Vec<String>,
    notes: Vec<String>,
    job: String,
}

impl From<&pb::CostReport> for JsonReport {
    fn from(report: &pb::CostReport) -> Self {
        let names = group_names(report);
        let totals = report.totals.clone().unwrap_or_default();
        let rfc3339 = |t: Option<&prost_types::Timestamp>| {
            t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                .unwrap_or_default()
        };
        JsonReport {
            rows: report
                .rows
                .iter()
                .map(|row| JsonRow {
                    period_start: rfc3339(row.period_start.as_ref()),
                    period_end: rfc3339(row.period_end.as_ref()),
                    group: row
                        .group_values
                        .iter()
                        .zip(&names)
                        .map(|(value, name)| JsonGroupValue {
                            dimension: name.clone(),
                            id: value.id.clone(),
                            display_name: value.display_name.clone(),
                        })
                        .collect(),
                    billed_cost_usd: money_text(row.billed_cost.as_ref()),
                    consumed_quantity: row.consumed_quantity.as_ref().map(|q| q.value.clone()),
                    consumed_unit: row.consumed_quantity.as_ref().map(|q| q.unit.clone()),
                    record_count: row.record_count,
                })
                .collect(),
            total_usd: money_text(totals.billed_cost.as_ref()),
            record_count: totals.record_count,
            complete: totals.complete,
            covered_provider_accounts: totals.covered_provider_accounts,
            provider_results: report
                .provider_results
                .iter()
                .map(|result| JsonProviderResult {
                    provider_account: result.provider_account.clone(),
                    state: state_name(result.state),
                    billed_cost_usd: money_text(result.billed_cost.as_ref()),
                    record_count: result.record_count,
                    upstream_requests: result.upstream_requests,
                    error: result.error.as_ref().map(|e| e.message.clone()),
                    warnings: result
                        .warnings
                        .iter()
                        .map(|w| format!("{}: {}", w.code, w.message))
                        .collect(),
                    notes: result.notes.clone(),
                    job: result.job.clone(),
                })
                .collect(),
        }
    }
}
