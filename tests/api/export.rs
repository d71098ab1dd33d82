//! ExportCosts through the real server and sandbox: every file is checked by the FinOps Foundation's
//! focus-validator (installed by scripts/install-tools into .tools/focus-venv), its BilledCost sums
//! to GetCosts' total to the nano, and its rows are ListCostRecords' records.

use crate::helpers::*;
use costd::{domain::ProviderKind, proto as pb, sandbox::Fault};
use http::StatusCode;
use rust_decimal::Decimal;
use std::{path::PathBuf, process::Command, str::FromStr, sync::Arc};

const FROM: &str = "2025-12-01";
const TO: &str = "2026-01-01";

/// What an export sent: its header, the file, and the progress each data message reported.
struct Exported {
    header: pb::ExportHeader,
    file: Vec<u8>,
    progress: Vec<i64>,
}

async fn export(
    app: &TestApp,
    query: pb::CostQuery,
    format: pb::ExportFormat,
    rows_per_group: i32,
) -> Result<Exported, tonic::Status> {
    let mut stream = app
        .costs
        .clone()
        .export_costs(pb::ExportCostsRequest {
            query: Some(query),
            format: format as i32,
            rows_per_group,
        })
        .await?
        .into_inner();
    let mut header = None;
    let mut file = Vec::new();
    let mut progress = Vec::new();
    while let Some(message) = within(stream.message()).await? {
        match message.part.expect("a part") {
            pb::export_costs_response::Part::Header(h) => {
                assert!(header.is_none(), "one header");
                assert!(file.is_empty(), "the header comes first");
                header = Some(h);
            }
            pb::export_costs_response::Part::Data(data) => {
                file.extend_from_slice(&data.content);
                progress.push(data.rows_written);
            }
        }
    }
    Ok(Exported {
        header: header.expect("a header"),
        file,
        progress,
    })
}

/// Each row's BilledCost in nanos and its x_provider_account, read back from the file.
fn rows(exported: &Exported) -> Vec<(i128, String)> {
    let nanos = |d: Decimal| {
        let scaled = d * Decimal::from(1_000_000_000);
        assert_eq!(scaled.fract(), Decimal::ZERO, "whole nanos: {d}");
        scaled.mantissa() / 10i128.pow(scaled.scale())
    };
    if exported.header.format == pb::ExportFormat::FocusCsv as i32 {
        let mut reader = csv::Reader::from_reader(exported.file.as_slice());
        let header = reader.headers().expect("a header row").clone();
        let at = |name: &str| header.iter().position(|h| h == name).expect(name);
        let (billed, account) = (at("BilledCost"), at("x_provider_account"));
        reader
            .records()
            .map(|row| {
                let row = row.expect("a row");
                let amount = Decimal::from_str(&row[billed]).expect("a plain decimal");
                (nanos(amount), row[account].to_string())
            })
            .collect()
    } else {
        use arrow_array::{Array, Decimal128Array, StringArray};
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let file = bytes::Bytes::from(exported.file.clone());
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("a parquet file")
            .build()
            .expect("a reader");
        let mut rows = Vec::new();
        for batch in reader {
            let batch = batch.expect("a batch");
            let billed = batch
                .column_by_name("BilledCost")
                .and_then(|c| c.as_any().downcast_ref::<Decimal128Array>().cloned())
                .expect("BilledCost is a decimal");
            let accounts = batch
                .column_by_name("x_provider_account")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
                .expect("x_provider_account is text");
            for i in 0..billed.len() {
                let amount = Decimal::from_i128_with_scale(billed.value(i), billed.scale() as u32);
                rows.push((nanos(amount), accounts.value(i).to_string()));
            }
        }
        rows
    }
}

/// The validator's verdict on a file: how many rules it ran, and those that failed or errored,
/// less the alternatives not taken. The validator reports each alternative of an OR rule as a rule
/// of its own (InvoiceId "MUST be null when the charge has no invoice" and "MUST NOT be null when
/// it has one", each over the whole file), so one of the two always fails; it is excused when the
/// OR rule above it passed. Which rules are alternatives is read from the validator's own model.
struct Verdict {
    tests: usize,
    failed: Vec<String>,
    excused: Vec<String>,
}

/// Runs focus-validator 2.2 (FOCUS 1.2 rules, offline) on `file` and reads its JUnit XML. The
/// validator opens its rule files relative to the working directory and writes a log there, so it
/// runs in a directory of its own holding a link to its package.
fn validate(file: &[u8], format: pb::ExportFormat) -> Verdict {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/focus-venv");
    let package = std::fs::read_dir(venv.join("lib"))
        .expect("scripts/install-tools made .tools/focus-venv")
        .map(|e| {
            e.expect("an entry")
                .path()
                .join("site-packages/focus_validator")
        })
        .find(|p| p.is_dir())
        .expect("focus_validator is installed");
    let dir = tempfile::tempdir().expect("a temp dir");
    std::os::unix::fs::symlink(&package, dir.path().join("focus_validator"))
        .expect("links the package");
    let extension = if format == pb::ExportFormat::FocusCsv {
        "csv"
    } else {
        "parquet"
    };
    let data = dir.path().join(format!("export.{extension}"));
    std::fs::write(&data, file).expect("writes the file");
    let report = dir.path().join("report.xml");
    let output = Command::new(venv.join("bin/python"))
        .current_dir(dir.path())
        .args(["-m", "focus_validator.main", "--validate-version", "1.2"])
        .args(["--block-download", "--output-type", "unittest"])
        .arg("--data-file")
        .arg(&data)
        .arg("--output-destination")
        .arg(&report)
        .output()
        .expect("the validator runs");
    let xml = std::fs::read_to_string(&report).unwrap_or_else(|_| {
        panic!(
            "the validator wrote no report: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let mut tests = 0;
    let mut failures = Vec::new();
    for case in xml.split("<testcase ").skip(1) {
        tests += 1;
        let body = case.split("</testcase>").next().unwrap_or(case);
        let attribute = |name: &str| {
            body.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        if body.contains("<failure") || body.contains("<error") {
            let name = attribute("name");
            let rule = name.split(" :: ").next().unwrap_or(&name).to_string();
            failures.push((rule, attribute("message")));
        }
    }
    let model: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(package.join("rules/model-1.2.0.1.json")).expect("its model"),
    )
    .expect("json");
    let failed_rules: Vec<&str> = failures.iter().map(|(rule, _)| rule.as_str()).collect();
    let taken_elsewhere = |rule: &str| {
        model["ModelRules"]
            .as_object()
            .expect("rules")
            .iter()
            .any(|(parent, definition)| {
                let requirement = &definition["ValidationCriteria"]["Requirement"];
                requirement["CheckFunction"] == "OR"
                    && !failed_rules.contains(&parent.as_str())
                    && requirement["Items"]
                        .as_array()
                        .is_some_and(|items| items.iter().any(|i| i["ModelRuleId"] == rule))
            })
    };
    let mut verdict = Verdict {
        tests,
        failed: Vec::new(),
        excused: Vec::new(),
    };
    for (rule, message) in &failures {
        let line = format!("{rule}: {message}");
        if taken_elsewhere(rule) {
            verdict.excused.push(line);
        } else {
            verdict.failed.push(line);
        }
    }
    verdict
}

async fn every_provider() -> TestApp {
    spawn_app_full(
        Arc::new(costd::clock::SystemClock),
        &[
            ProviderKind::TeamBilling,
            ProviderKind::Elastic,
            ProviderKind::Atlas,
        ],
        |_, sandbox| sandbox.atlas().set_processing_polls(0),
    )
    .await
}

/// Exports `providers`' records in both formats and checks each file: the validator passes it, its
/// BilledCost sums to GetCosts' total, its rows are ListCostRecords' and the header's count.
/// `csv_failures` and `parquet_failures` are the rules (ids) the validator is expected to fail.
async fn exports_pass_the_validator(
    providers: &[pb::ProviderKind],
    csv_failures: &[&str],
    parquet_failures: &[&str],
) {
    let app = every_provider().await;
    let mut query = query(FROM, TO, &[], pb::Granularity::Monthly);
    query.filter = Some(pb::CostFilter {
        providers: providers.iter().map(|p| *p as i32).collect(),
        ..Default::default()
    });
    let report = within(app.get_costs(query.clone())).await.expect("answers");
    let totals = report.totals.expect("totals");
    assert!(totals.complete, "{:?}", report.provider_results);
    let total = nanos(totals.billed_cost.as_ref());
    let listed = listed_records(&app, &query).await;
    assert!(listed > 0);

    let mut verdicts = Vec::new();
    for format in [pb::ExportFormat::FocusCsv, pb::ExportFormat::FocusParquet] {
        let exported = export(&app, query.clone(), format, 7)
            .await
            .expect("exports");
        let header = &exported.header;
        assert_eq!(header.focus_version, "1.2");
        assert_eq!(header.row_count, Some(listed as i64), "{format:?}");
        assert!(
            header
                .provider_results
                .iter()
                .all(|r| r.state == pb::ResultState::Ok as i32),
            "{:?}",
            header.provider_results
        );
        let rows = rows(&exported);
        assert_eq!(rows.len(), listed, "{format:?}: ListCostRecords' records");
        assert_eq!(exported.progress.last(), Some(&(listed as i64)));
        assert!(
            exported.progress.windows(2).all(|w| w[0] <= w[1]),
            "progress only grows"
        );
        let summed: i128 = rows.iter().map(|(nanos, _)| nanos).sum();
        assert_eq!(summed, total, "{format:?}: GetCosts' total to the nano");

        let verdict = validate(&exported.file, format);
        assert!(
            verdict.tests > 400,
            "the validator ran its rules: {}",
            verdict.tests
        );
        verdicts.push((format, verdict));
    }
    for (format, verdict) in &verdicts {
        eprintln!(
            "{format:?}: excused {:?}, failed {:?}",
            verdict.excused, verdict.failed
        );
    }
    for (format, verdict) in verdicts {
        let expected = if format == pb::ExportFormat::FocusCsv {
            csv_failures
        } else {
            parquet_failures
        };
        let failed: Vec<&str> = verdict
            .failed
            .iter()
            .map(|line| line.split(':').next().unwrap_or(line))
            .collect();
        assert_eq!(failed, expected, "{format:?}: {:?}", verdict.failed);
    }
}

#[tokio::test]
async fn a_team_billing_export_passes_the_focus_validator_in_both_formats() {
    exports_pass_the_validator(&[pb::ProviderKind::TeamBilling], &[], &[]).await;
}

/// Elastic organization ids are numbers written as text. CSV carries no types, and the validator's
/// CSV reader (polars) reads a column of digits as integers, so BillingAccountId fails its String
/// type check there; the Parquet file, whose column is typed, passes it.
#[tokio::test]
async fn an_elastic_export_passes_the_focus_validator_in_parquet_and_in_csv_but_for_numeric_ids() {
    exports_pass_the_validator(
        &[pb::ProviderKind::Elastic],
        &["BillingAccountId-C-000-M", "BillingAccountId-C-002-M"],
        &[],
    )
    .await;
}

#[tokio::test]
async fn an_atlas_export_passes_the_focus_validator_in_both_formats() {
    exports_pass_the_validator(&[pb::ProviderKind::Atlas], &[], &[]).await;
}

/// Atlas rows carry their invoice's id and Elastic's and Catalyzed's have none (their APIs give
/// none): FOCUS wants exactly that (null only without an invoice), but the validator checks
/// InvoiceId's nullability over the whole file, as "all null" or "none null", so a file mixing the
/// two fails those rules and nothing else.
#[tokio::test]
async fn an_export_of_every_provider_together_passes_the_focus_validator_but_for_mixed_invoice_ids()
{
    const INVOICE_ID_NULLABILITY: &[&str] = &[
        "InvoiceId-C-000-O",
        "InvoiceId-C-003-C",
        "InvoiceId-C-004-C",
        "InvoiceId-C-005-C",
    ];
    exports_pass_the_validator(&[], INVOICE_ID_NULLABILITY, INVOICE_ID_NULLABILITY).await;
}

#[tokio::test]
async fn a_failed_account_is_named_in_the_header_and_has_no_rows() {
    let app = spawn_app_with(|s| s.upstream.max_attempts = 1).await;
    app.sandbox.set_persistent_fault(
        &team_scope("team_acme"),
        Fault::Status {
            code: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
        },
    );
    let query = query(FROM, TO, &[], pb::Granularity::Monthly);

    let exported = export(&app, query.clone(), pb::ExportFormat::FocusCsv, 0)
        .await
        .expect("exports the others");

    let failed = exported
        .header
        .provider_results
        .iter()
        .find(|r| r.provider_account == "team-acme")
        .expect("named");
    assert_eq!(failed.state, pb::ResultState::Failed as i32);
    assert_eq!(
        failed.error.as_ref().map(|e| e.code),
        Some(tonic::Code::Unavailable as i32)
    );
    assert_eq!(failed.record_count, 0);
    let rows = rows(&exported);
    assert!(rows.iter().all(|(_, account)| account != "team-acme"));
    let others: Vec<&pb::ProviderResult> = exported
        .header
        .provider_results
        .iter()
        .filter(|r| r.provider_account != "team-acme")
        .collect();
    assert!(!others.is_empty());
    for other in &others {
        assert_eq!(other.state, pb::ResultState::Ok as i32, "{other:?}");
        let own = rows
            .iter()
            .filter(|(_, account)| *account == other.provider_account)
            .count();
        assert_eq!(own as i64, other.record_count, "{}", other.provider_account);
        assert!(own > 0);
    }
    assert_eq!(exported.header.row_count, Some(rows.len() as i64));
    assert_eq!(rows.len(), listed_records(&app, &query).await);
}

#[tokio::test]
async fn an_export_without_a_format_or_with_too_large_groups_names_both_fields() {
    let app = spawn_app().await;
    let status = app
        .costs
        .clone()
        .export_costs(pb::ExportCostsRequest {
            query: Some(query(FROM, TO, &[], pb::Granularity::Monthly)),
            format: pb::ExportFormat::Unspecified as i32,
            rows_per_group: 1 << 20,
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let details = tonic_types::StatusExt::get_error_details(&status);
    let fields: Vec<&str> = details
        .bad_request()
        .expect("a BadRequest")
        .field_violations
        .iter()
        .map(|v| v.field.as_str())
        .collect();
    assert_eq!(fields, ["format", "rows_per_group"]);
    assert_eq!(app.sandbox.request_count(&team_scope("team_acme")), 0);
}

#[tokio::test]
async fn a_big_account_is_written_a_row_group_at_a_time_in_messages_a_client_accepts() {
    use costd::sandbox::{ElasticScale, Sandbox, SandboxOptions};
    captured();
    let sandbox = Sandbox::start(SandboxOptions {
        elastic_scale: Some(ElasticScale { instances: 1_000 }),
        ..SandboxOptions::default()
    })
    .expect("sandbox starts");
    let mut settings =
        costd::demo::settings(&sandbox, std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("demo settings");
    settings.telemetry = Default::default();
    settings
        .accounts
        .retain(|a| a.id.as_str() == "elastic-zenith");
    let app = costd::App::build(settings).await.expect("app builds");
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("connects");
    // The client's default 4 MiB message limit: every message must fit it.
    let mut client = pb::cost_service_client::CostServiceClient::new(channel);
    let query = query("2026-01-31", "2026-02-02", &[], pb::Granularity::Monthly);
    let total = within(client.get_costs(pb::GetCostsRequest {
        query: Some(query.clone()),
    }))
    .await
    .expect("answers")
    .into_inner()
    .report
    .and_then(|r| r.totals)
    .expect("totals");

    let mut stream = within(client.export_costs(pb::ExportCostsRequest {
        query: Some(query),
        format: pb::ExportFormat::FocusParquet as i32,
        rows_per_group: 4_096,
    }))
    .await
    .expect("exports")
    .into_inner();
    let mut file = Vec::new();
    let mut largest = 0;
    let mut header = None;
    while let Some(message) = within(stream.message()).await.expect("a message") {
        match message.part.expect("a part") {
            pb::export_costs_response::Part::Header(h) => header = Some(h),
            pb::export_costs_response::Part::Data(data) => {
                largest = largest.max(data.content.len());
                file.extend_from_slice(&data.content);
            }
        }
    }
    let header = header.expect("a header");
    assert_eq!(header.row_count, Some(20_000));
    assert!(largest <= costd::export::MAX_PIECE_BYTES);
    let exported = Exported {
        header,
        file,
        progress: Vec::new(),
    };
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(exported.file.clone()),
    )
    .expect("a parquet file");
    assert_eq!(
        builder.metadata().num_row_groups(),
        5,
        "20,000 rows by 4,096"
    );
    let rows = rows(&exported);
    assert_eq!(rows.len(), 20_000);
    let summed: i128 = rows.iter().map(|(nanos, _)| nanos).sum();
    assert_eq!(summed, nanos(total.billed_cost.as_ref()));

    let _ = stop.send(());
    within(server).await.expect("joins").expect("stops cleanly");
}
