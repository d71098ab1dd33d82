//! ExportCosts of 1M records (the sandbox's big Elastic organization: 5,000 instances × 10 SKU line
//! items × 20 monthly `costs/instances` chunks) as FOCUS CSV and Parquet, against ListCostRecords
//! paging the same query (10,000 a page), through the real server on loopback. Paging all 1M
//! takes minutes a round (every page gathers and orders the whole query's records again), so it
//! walks the first `EXPORT_BENCH_PAGES` pages (default 5: 50,000 records) of the same 1M-record
//! query, and its rate is per record listed.
//!
//! Measured in a child process (this binary again), so CPU time and memory are costd's (server and
//! client) alone; the sandbox runs in the parent. The child warms the cache with one GetCosts, notes
//! `VmRSS` (the warm start), then runs `ROUNDS` interleaved rounds of CSV and Parquet export, and
//! after them the paging rounds: paging materializes the whole query for every page, and the
//! allocator keeps much of that a while, which would be charged to an export run after it. Before
//! each run the peak RSS is reset (`5` into /proc/self/clear_refs), so each run's `VmHWM` is its own
//! peak. Reported: rows/s per core (rows over on-CPU seconds of every thread), rows/s of wall time,
//! and peak RSS during a run / the warm start (the goal for the exports: at most 1.5), with
//! the peak over the RSS just before that run beside it. Medians of the rounds.
//!
//! `EXPORT_BENCH_RECORDS` sets N (default 1,000,000; a multiple of 200). The child's blocking
//! threads are kept alive for the whole run: CPU time is read per live thread, and an export's
//! writer thread ending mid-run would take its past CPU time out of the total.

use costd::{
    proto as pb,
    sandbox::{ElasticScale, SCALE_LINES_PER_INSTANCE, Sandbox, SandboxOptions},
};
use std::{
    process::{Command, Stdio},
    time::Instant,
};
use support::{Server, big_elastic_settings, cpu_ns, median, start, status_kib};

#[path = "support/mod.rs"]
mod support;

/// The allocator the costd binary ships with, so the harness measures what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MONTHS: usize = 20;
const FROM: &str = "2025-01-01";
const TO: &str = "2026-09-01";
const ROUNDS: usize = 3;
const PAGE_SIZE: i32 = 10_000;
/// Set in the child's environment: the sandbox to read, and how many records to expect.
const CHILD: &str = "EXPORT_BENCH_CHILD";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Csv,
    Parquet,
    Paging,
}

const RUNS: [Run; 3] = [Run::Csv, Run::Parquet, Run::Paging];

/// One run: wall and CPU in ns, RSS just before it and its peak in bytes, bytes received.
#[derive(Debug, Clone, Copy, Default)]
struct Measured {
    wall: f64,
    cpu: f64,
    before: f64,
    peak: f64,
    bytes: f64,
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_keep_alive(std::time::Duration::from_secs(24 * 3600))
            .build()
            .expect("runtime");
        runtime.block_on(child(&spec));
        return;
    }
    let records: usize = std::env::var("EXPORT_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let per_instance = SCALE_LINES_PER_INSTANCE * MONTHS;
    assert_eq!(records % per_instance, 0, "N is whole instances");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let sandbox = Sandbox::start(SandboxOptions {
            elastic_scale: Some(ElasticScale {
                instances: records / per_instance,
            }),
            ..SandboxOptions::default()
        })
        .expect("sandbox");
        let org = sandbox
            .dataset()
            .elastic()
            .scale_organization()
            .expect("the big organization");
        let spec = format!(
            "{} {} {} {records}",
            sandbox.base_url(),
            org.id,
            org.api_key
        );
        let child = Command::new(std::env::current_exe().expect("this binary"))
            .env(CHILD, spec)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("child starts");
        let status = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .expect("joins")
            .expect("child runs")
            .status;
        assert!(status.success(), "child failed: {status}");
        sandbox.shutdown().await;
    });
}

fn query() -> pb::CostQuery {
    let at = |text: &str| {
        costd::api::convert::time_to_proto(costd::cli::parse_instant(text).expect("valid"))
    };
    pb::CostQuery {
        start_time: Some(at(FROM)),
        end_time: Some(at(TO)),
        group_by: vec![pb::GroupBy::Service as i32],
        granularity: pb::Granularity::Monthly as i32,
        ..Default::default()
    }
}

/// Resets this process's peak RSS (VmHWM) to its current RSS.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("clear_refs");
}

async fn child(spec: &str) {
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let records: usize = parts[3].parse().expect("a count");
    let pages: usize = std::env::var("EXPORT_BENCH_PAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let server = start(big_elastic_settings(parts[0], parts[1], parts[2])).await;
    let warm = server
        .client
        .clone()
        .get_costs(pb::GetCostsRequest {
            query: Some(query()),
        })
        .await
        .expect("answers")
        .into_inner()
        .report
        .expect("a report");
    assert_eq!(warm.provider_results[0].record_count, records as i64);
    let before = status_kib("VmRSS:") * 1024.0;

    let mut measured: Vec<(Run, Measured)> = Vec::new();
    let exports = (0..ROUNDS).flat_map(|round| [(round, Run::Csv), (round, Run::Parquet)]);
    let pagings = (0..ROUNDS).map(|round| (round, Run::Paging));
    for (round, run) in exports.chain(pagings) {
        reset_peak();
        let run_before = status_kib("VmRSS:") * 1024.0;
        let (cpu, wall) = (cpu_ns(), Instant::now());
        let bytes = match run {
            Run::Csv => export(&server, pb::ExportFormat::FocusCsv, records).await,
            Run::Parquet => export(&server, pb::ExportFormat::FocusParquet, records).await,
            Run::Paging => page(&server, pages).await,
        };
        let m = Measured {
            wall: wall.elapsed().as_nanos() as f64,
            cpu: cpu_ns() - cpu,
            before: run_before,
            peak: status_kib("VmHWM:") * 1024.0,
            bytes: bytes as f64,
        };
        eprintln!(
            "round {round} {run:?}: {:.2} s wall, {:.2} s CPU, peak RSS / warm start {:.2}, / just before {:.2}",
            m.wall / 1e9,
            m.cpu / 1e9,
            m.peak / before,
            m.peak / m.before
        );
        measured.push((run, m));
    }
    server.stop().await;
    let paged = (pages * PAGE_SIZE as usize).min(records);
    report(records, paged, before, &measured);
}

/// One export, its bytes counted and dropped; returns the bytes.
async fn export(server: &Server, format: pb::ExportFormat, records: usize) -> usize {
    let mut stream = server
        .client
        .clone()
        .export_costs(pb::ExportCostsRequest {
            query: Some(query()),
            format: format as i32,
            rows_per_group: 0,
        })
        .await
        .expect("exports")
        .into_inner();
    let (mut bytes, mut rows) = (0, 0);
    while let Some(message) = stream.message().await.expect("a message") {
        match message.part {
            Some(pb::export_costs_response::Part::Header(header)) => {
                assert_eq!(header.row_count, Some(records as i64));
            }
            Some(pb::export_costs_response::Part::Data(data)) => {
                bytes += data.content.len();
                rows = data.rows_written;
            }
            None => {}
        }
    }
    assert_eq!(rows, records as i64, "every row written");
    bytes
}

/// The first `pages` pages of ListCostRecords; returns the encoded bytes received.
async fn page(server: &Server, pages: usize) -> usize {
    use prost::Message;
    let mut client = server.client.clone();
    let (mut token, mut seen, mut bytes) = (String::new(), 0, 0);
    for _ in 0..pages {
        let page = client
            .list_cost_records(pb::ListCostRecordsRequest {
                query: Some(query()),
                page_size: PAGE_SIZE,
                page_token: token,
            })
            .await
            .expect("a page")
            .into_inner();
        assert_eq!(page.records.len(), PAGE_SIZE as usize, "full pages");
        seen += page.records.len();
        bytes += page.encoded_len();
        token = page.next_page_token;
    }
    assert_eq!(seen, pages * PAGE_SIZE as usize);
    bytes
}

fn report(records: usize, paged: usize, before: f64, measured: &[(Run, Measured)]) {
    let of = |run: Run, pick: fn(&Measured) -> f64| {
        median(
            measured
                .iter()
                .filter(|(r, _)| *r == run)
                .map(|(_, m)| pick(m))
                .collect(),
        )
    };
    let rows = |run: Run| match run {
        Run::Paging => paged as f64,
        Run::Csv | Run::Parquet => records as f64,
    };
    println!();
    println!(
        "{records} records exported, the first {paged} of the same query paged; median of {ROUNDS} interleaved rounds; RSS before (cache warm): {:.0} MiB",
        before / (1024.0 * 1024.0)
    );
    println!(
        "{:>9} | {:>12} {:>12} | {:>9} {:>9} | {:>9} {:>12} {:>12}",
        "run",
        "rows/s/core",
        "rows/s wall",
        "CPU s",
        "wall s",
        "MiB out",
        "peak/warm",
        "peak/just-before"
    );
    for run in RUNS {
        let (cpu, wall) = (of(run, |m| m.cpu), of(run, |m| m.wall));
        println!(
            "{:>9} | {:>12.0} {:>12.0} | {:>9.2} {:>9.2} | {:>9.1} {:>12.2} {:>12.2}",
            format!("{run:?}"),
            rows(run) / (cpu / 1e9),
            rows(run) / (wall / 1e9),
            cpu / 1e9,
            wall / 1e9,
            of(run, |m| m.bytes) / (1024.0 * 1024.0),
            of(run, |m| m.peak) / before,
            of(run, |m| m.peak / m.before),
        );
    }
    let per_core = |run: Run| rows(run) / (of(run, |m| m.cpu) / 1e9);
    println!(
        "rows/s per core vs ListCostRecords paging: CSV {:.1}x, Parquet {:.1}x",
        per_core(Run::Csv) / per_core(Run::Paging),
        per_core(Run::Parquet) / per_core(Run::Paging)
    );
    println!("per round, peak RSS / RSS just before the run (/ after warm-up):");
    for (run, m) in measured {
        println!(
            "  {run:?}: {:.2} ({:.2})",
            m.peak / m.before,
            m.peak / before
        );
    }
}
