//! ExportCosts through the real server and sandbox: every file is checked by the FinOps Foundation's
//! focus-validator (installed by scripts/install-tools into .tools/focus-venv), its BilledCost sums
//! to GetCosts' total to the nano, and its rows are ListCostRecords' records.

mod validator;

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

/// What the tests read back of one row of a file.
struct Row {
    nanos: i128,
    account: String,
    billing_account_id: String,
    invoice_id: Option<String>,
}

/// The file's rows, and its columns as (name, type): CSV's header (every type `text`) or the
/// Parquet schema's fields.
fn rows(exported: &Exported) -> (Vec<Row>, Vec<(String, String)>) {
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
        let (billing_account, invoice) = (at("BillingAccountId"), at("InvoiceId"));
        let rows = reader
            .records()
            .map(|row| {
                let row = row.expect("a row");
                let amount = Decimal::from_str(&row[billed]).expect("a plain decimal");
                Row {
                    nanos: nanos(amount),
                    account: row[account].to_string(),
                    billing_account_id: row[billing_account].to_string(),
                    // CSV's null is an empty field.
                    invoice_id: Some(row[invoice].to_string()).filter(|id| !id.is_empty()),
                }
            })
            .collect();
        let columns = header
            .iter()
            .map(|name| (name.to_string(), "text".to_string()))
            .collect();
        (rows, columns)
    } else {
        use arrow_array::{Array, Decimal128Array, StringArray};
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let file = bytes::Bytes::from(exported.file.clone());
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("a parquet file");
        let columns = builder
            .schema()
            .fields()
            .iter()
            .map(|field| (field.name().clone(), field.data_type().to_string()))
            .collect();
        let mut rows = Vec::new();
        for batch in builder.build().expect("a reader") {
            let batch = batch.expect("a batch");
            let text = |name: &str| {
                batch
                    .column_by_name(name)
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
                    .unwrap_or_else(|| panic!("{name} is text"))
            };
            let billed = batch
                .column_by_name("BilledCost")
                .and_then(|c| c.as_any().downcast_ref::<Decimal128Array>().cloned())
                .expect("BilledCost is a decimal");
            let (accounts, billing_accounts, invoices) = (
                text("x_provider_account"),
                text("BillingAccountId"),
                text("InvoiceId"),
            );
            for i in 0..billed.len() {
                let amount = Decimal::from_i128_with_scale(billed.value(i), billed.scale() as u32);
                rows.push(Row {
                    nanos: nanos(amount),
                    account: accounts.value(i).to_string(),
                    billing_account_id: billing_accounts.value(i).to_string(),
                    invoice_id: invoices.is_valid(i).then(|| invoices.value(i).to_string()),
                });
            }
        }
        (rows, columns)
    }
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

/// A warehouse table loads many exports: each has the same columns, in the same order with the
/// same types, whichever providers and rows it holds, and every extension a provider emits is one
/// of them.
#[tokio::test]
async fn every_export_has_the_same_columns_whichever_providers_it_holds() {
    let app = every_provider().await;
    let expected: Vec<&str> = costd::export::columns().map(|(name, _)| name).collect();
    let mut parquet_schemas = Vec::new();
    for providers in [
        vec![pb::ProviderKind::TeamBilling],
        vec![pb::ProviderKind::Elastic],
        vec![pb::ProviderKind::Atlas],
        Vec::new(),
    ] {
        let mut query = query(FROM, TO, &[], pb::Granularity::Monthly);
        query.filter = Some(pb::CostFilter {
            providers: providers.iter().map(|p| *p as i32).collect(),
            ..Default::default()
        });
        for format in [pb::ExportFormat::FocusCsv, pb::ExportFormat::FocusParquet] {
            let exported = export(&app, query.clone(), format, 0)
                .await
                .expect("exports");
            let (rows, columns) = rows(&exported);
            assert!(!rows.is_empty());
            let names: Vec<&str> = columns.iter().map(|(name, _)| name.as_str()).collect();
            assert_eq!(names, expected, "{providers:?} {format:?}");
            if format == pb::ExportFormat::FocusParquet {
                parquet_schemas.push((providers.clone(), columns));
            }
        }
        for record in all_records(&app, &query).await {
            for name in record.extensions.keys() {
                assert!(
                    costd::domain::EXTENSION_NAMES.contains(&name.as_str()),
                    "{name} of {} is not an export column",
                    record.provider_account
                );
            }
        }
    }
    let (first, schema) = &parquet_schemas[0];
    for (providers, other) in &parquet_schemas[1..] {
        assert_eq!(
            other, schema,
            "{providers:?} against {first:?}: names and types"
        );
    }
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
    let (rows, _) = rows(&exported);
    assert!(rows.iter().all(|row| row.account != "team-acme"));
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
            .filter(|row| row.account == other.provider_account)
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

/// costd reading only the sandbox's big Elastic organization of `instances` instances (20 records
/// each over [`BIG_FROM`, `BIG_TO`)), served on loopback with its metrics endpoint.
struct BigApp {
    addr: std::net::SocketAddr,
    metrics_addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), costd::AppError>>,
    _sandbox: costd::sandbox::SandboxHandle,
}

const BIG_FROM: &str = "2026-01-31";
const BIG_TO: &str = "2026-02-02";

async fn big_elastic_app(instances: usize) -> BigApp {
    use costd::sandbox::{ElasticScale, Sandbox, SandboxOptions};
    captured();
    let sandbox = Sandbox::start(SandboxOptions {
        elastic_scale: Some(ElasticScale { instances }),
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
    let metrics_addr = app.metrics_addr().expect("metrics are on");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    BigApp {
        addr,
        metrics_addr,
        stop,
        server,
        _sandbox: sandbox,
    }
}

type CostClient = pb::cost_service_client::CostServiceClient<tonic::transport::Channel>;

impl BigApp {
    /// A client with tonic's defaults (a 4 MiB message limit), and `window` as its HTTP/2
    /// flow-control windows when given.
    async fn client(&self, window: Option<u32>) -> CostClient {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("valid uri")
            .initial_stream_window_size(window)
            .initial_connection_window_size(window);
        CostClient::new(endpoint.connect().await.expect("connects"))
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        within(self.server)
            .await
            .expect("joins")
            .expect("stops cleanly");
    }

    async fn total(&self, client: &mut CostClient) -> i128 {
        let totals = within(client.get_costs(pb::GetCostsRequest {
            query: Some(query(BIG_FROM, BIG_TO, &[], pb::Granularity::Monthly)),
        }))
        .await
        .expect("answers")
        .into_inner()
        .report
        .and_then(|r| r.totals)
        .expect("totals");
        nanos(totals.billed_cost.as_ref())
    }
}

/// The big account's records exported as `format` in groups of `rows_per_group`: the stream.
async fn export_big(
    client: &mut CostClient,
    format: pb::ExportFormat,
    rows_per_group: i32,
) -> tonic::Streaming<pb::ExportCostsResponse> {
    within(client.export_costs(pb::ExportCostsRequest {
        query: Some(query(BIG_FROM, BIG_TO, &[], pb::Granularity::Monthly)),
        format: format as i32,
        rows_per_group,
    }))
    .await
    .expect("exports")
    .into_inner()
}

#[tokio::test]
async fn a_big_account_is_written_a_row_group_at_a_time_in_messages_a_client_accepts() {
    let app = big_elastic_app(1_000).await;
    // The client's default 4 MiB message limit: every message must fit it.
    let mut client = app.client(None).await;
    let total = app.total(&mut client).await;

    let mut stream = export_big(&mut client, pb::ExportFormat::FocusParquet, 4_096).await;
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
    let (rows, _) = rows(&exported);
    assert_eq!(rows.len(), 20_000);
    let summed: i128 = rows.iter().map(|row| row.nanos).sum();
    assert_eq!(summed, total);
    app.stop().await;
}

/// `costd_export_messages` and `costd_export_writers_blocked` from the metrics endpoint.
async fn export_metrics(metrics_addr: std::net::SocketAddr) -> (f64, f64) {
    let scraped = crate::metrics::scrape_at(metrics_addr).await;
    let value = |series: &str| scraped.get(series).copied().expect(series);
    (
        value("costd_export_messages_total"),
        value("costd_export_writers_blocked"),
    )
}

/// A reader that stops reading holds the writer back: the writer blocks on its full channel with
/// only what the channel and the transport hold written, however big the file, and goes on to the
/// exact end when the reader reads again.
#[tokio::test]
async fn a_reader_that_stops_reading_stops_the_writer_until_it_reads_again() {
    // 40,000 CSV rows in groups of 1,024: some 40 messages of about half a MiB.
    let app = big_elastic_app(2_000).await;
    // The transport's share is bounded by the client's flow-control windows, set small here.
    let mut client = app.client(Some(WINDOW_BYTES)).await;
    let total = app.total(&mut client).await;
    let mut stream = export_big(&mut client, pb::ExportFormat::FocusCsv, 1_024).await;
    let first = within(stream.message())
        .await
        .expect("a message")
        .expect("the header");
    let Some(pb::export_costs_response::Part::Header(header)) = first.part else {
        panic!("the header comes first: {first:?}")
    };
    assert_eq!(header.row_count, Some(40_000));
    let groups = 40_000usize.div_ceil(1_024);

    // The reader reads no more. The event awaited is the writer blocking on its full channel.
    let written_when_blocked = within(async {
        loop {
            let (messages, blocked) = export_metrics(app.metrics_addr).await;
            if blocked == 1.0 {
                return messages as usize;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    // Written and not read: the channel's messages, plus at most one each in tonic's encoder, in
    // h2's send buffer, and across the client's window (each message is larger than the window).
    let bound = costd::export::MESSAGES_AHEAD + 3;
    assert!(
        written_when_blocked <= bound,
        "{written_when_blocked} messages written with the reader stopped; at most {bound}"
    );
    assert!(bound < groups / 4, "a file far bigger than the bound");

    // The reader reads again: the writer goes on to the end.
    let mut file = Vec::new();
    let mut data_messages = 0;
    let mut rows_written = 0;
    while let Some(message) = within(stream.message()).await.expect("a message") {
        match message.part.expect("a part") {
            pb::export_costs_response::Part::Header(_) => panic!("one header"),
            pb::export_costs_response::Part::Data(data) => {
                data_messages += 1;
                rows_written = data.rows_written;
                file.extend_from_slice(&data.content);
            }
        }
    }
    assert_eq!(rows_written, 40_000);
    let (rows, _) = rows(&Exported {
        header,
        file,
        progress: Vec::new(),
    });
    assert_eq!(rows.len(), 40_000);
    assert_eq!(rows.iter().map(|row| row.nanos).sum::<i128>(), total);
    let (messages, blocked) = export_metrics(app.metrics_addr).await;
    assert_eq!(
        messages as usize, data_messages,
        "every message written was read"
    );
    assert_eq!(blocked, 0.0, "the writer is done");
    app.stop().await;
}

/// The client's HTTP/2 flow-control windows in the slow-reader test: h2's smallest default.
const WINDOW_BYTES: u32 = 65_535;
