//! Scale curve: one GetCosts over 10k, 100k and 1M records, through the real server and sandbox on
//! loopback, so it is visible whether the cost of a query grows linearly in its records.
//!
//! The records come from the sandbox's big Elastic organization (`SandboxOptions::elastic_scale`):
//! `records / 200` deployments × 10 SKU line items × 20 monthly `costs/instances` chunks
//! (2025-01-01 to 2026-09-01), grouped by service, so every answer has 20 rows whatever N is: the
//! figures measure records, not answer size.
//!
//! Each N is measured in a child process of its own (this binary again), so its CPU time and RSS are
//! costd's (server and client) alone: the sandbox runs in the parent, and no N inherits another's
//! heap. In the child:
//! - **cold**: a fresh server (empty chunk cache) answers the query: upstream fetch, parse,
//!   normalize, aggregate, answer. `COLD_ROUNDS` rounds, each with its own fresh server; median.
//! - **warm**: on the first round's server, `WARM_ROUNDS` more queries over the same chunks, each
//!   with a grouping not asked before (the service plus constant per-account dimensions, so still
//!   20 rows): every chunk is a cache hit and no answer is remembered, so each one plans,
//!   aggregates and converts all N records. Median. The remembered-answer path (the last query
//!   asked again) is shown beside it for contrast.
//! - CPU is the process's on-CPU time summed over its threads (`/proc/self/task/*/schedstat`, ns);
//!   RSS is `VmRSS` after the warm rounds, less `VmRSS` before the first query (bytes/record), and
//!   `VmHWM` is the peak of that first round.
//!
//! Engine limits set here: `cache.max_bytes` = 16 GiB (the default 256 MiB would evict chunks of the
//! 1M query, so the warm query would not be warm); `upstream.request_timeout_ms` = 120 s. The
//! defaults of `server.max_rows` (200k; answers have 20 rows) and `upstream.max_response_bytes`
//! (256 MiB; the largest chunk, 50k line items, is about 30 MB) are enough.

use costd::{
    proto as pb,
    sandbox::{ElasticScale, SCALE_LINES_PER_INSTANCE, Sandbox, SandboxOptions},
};
use std::{
    process::{Command, Stdio},
    time::Instant,
};
use support::{Server, big_elastic_settings as settings, cpu_ns, start, status_kib};

#[path = "support/mod.rs"]
mod support;

/// The allocator the costd binary ships with, so the harness measures what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];
const MONTHS: usize = 20;
const FROM: &str = "2025-01-01";
const TO: &str = "2026-09-01";
const COLD_ROUNDS: usize = 3;
const WARM_ROUNDS: usize = 5;
/// Set in the child's environment: the sandbox to read, and how many records to expect.
const CHILD: &str = "SCALE_BENCH_CHILD";

/// The cold query's grouping, then one per warm round: each yields the same 20 rows, and none is
/// asked twice, so no warm answer comes from the remembered answers.
const GROUPINGS: [&[pb::GroupBy]; 1 + WARM_ROUNDS] = [
    &[pb::GroupBy::Service],
    &[pb::GroupBy::Provider, pb::GroupBy::Service],
    &[pb::GroupBy::BillingAccount, pb::GroupBy::Service],
    &[pb::GroupBy::Service, pb::GroupBy::Provider],
    &[pb::GroupBy::Service, pb::GroupBy::BillingAccount],
    &[
        pb::GroupBy::Provider,
        pb::GroupBy::BillingAccount,
        pb::GroupBy::Service,
    ],
];

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let figures = runtime.block_on(measure(&spec));
        println!("RESULT {}", figures.to_line());
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let began = Instant::now();
    let mut all = Vec::new();
    for n in SIZES {
        let figures = runtime.block_on(one_size(n));
        eprintln!("N = {n}: done after {:.0?} in all", began.elapsed());
        all.push((n, figures));
    }
    report(&all);
    println!("whole run: {:.1?}", began.elapsed());
}

/// Starts the big sandbox here and measures costd against it in a child process.
async fn one_size(n: usize) -> Figures {
    let per_instance = SCALE_LINES_PER_INSTANCE * MONTHS;
    assert_eq!(n % per_instance, 0, "N is whole instances");
    let sandbox = Sandbox::start(SandboxOptions {
        elastic_scale: Some(ElasticScale {
            instances: n / per_instance,
        }),
        ..SandboxOptions::default()
    })
    .expect("sandbox");
    let org = sandbox
        .dataset()
        .elastic()
        .scale_organization()
        .expect("the big organization");
    let spec = format!("{} {} {} {n}", sandbox.base_url(), org.id, org.api_key);
    let child = Command::new(std::env::current_exe().expect("this binary"))
        .env(CHILD, spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("child starts");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("joins")
        .expect("child runs");
    assert!(output.status.success(), "child failed: {}", output.status);
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .expect("a result line");
    sandbox.shutdown().await;
    Figures::from_line(line)
}

/// What one N measured, in nanoseconds and bytes.
#[derive(Debug, Default)]
struct Figures {
    cold_wall: f64,
    cold_cpu: f64,
    warm_wall: f64,
    warm_cpu: f64,
    remembered_wall: f64,
    rss_before: f64,
    rss_after: f64,
    hwm: f64,
    cold_rounds: Vec<f64>,
}

impl Figures {
    fn to_line(&self) -> String {
        let rounds: Vec<String> = self.cold_rounds.iter().map(|r| format!("{r}")).collect();
        format!(
            "{} {} {} {} {} {} {} {} {}",
            self.cold_wall,
            self.cold_cpu,
            self.warm_wall,
            self.warm_cpu,
            self.remembered_wall,
            self.rss_before,
            self.rss_after,
            self.hwm,
            rounds.join(",")
        )
    }

    fn from_line(line: &str) -> Self {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let f = |i: usize| fields[i].parse::<f64>().expect("a number");
        Figures {
            cold_wall: f(0),
            cold_cpu: f(1),
            warm_wall: f(2),
            warm_cpu: f(3),
            remembered_wall: f(4),
            rss_before: f(5),
            rss_after: f(6),
            hwm: f(7),
            cold_rounds: fields[8]
                .split(',')
                .map(|r| r.parse().expect("a number"))
                .collect(),
        }
    }
}

fn query(group_by: &[pb::GroupBy]) -> pb::CostQuery {
    let at = |text: &str| {
        costd::api::convert::time_to_proto(costd::cli::parse_instant(text).expect("valid"))
    };
    pb::CostQuery {
        start_time: Some(at(FROM)),
        end_time: Some(at(TO)),
        group_by: group_by.iter().map(|g| *g as i32).collect(),
        granularity: pb::Granularity::Monthly as i32,
        ..Default::default()
    }
}

/// One GetCosts: wall and CPU time, in ns; checks the answer covers every record.
async fn timed(server: &Server, group_by: &[pb::GroupBy], records: usize) -> (f64, f64, bool) {
    let mut client = server.client.clone();
    let (cpu, wall) = (cpu_ns(), Instant::now());
    let answer = client
        .get_costs(pb::GetCostsRequest {
            query: Some(query(group_by)),
        })
        .await
        .expect("answers")
        .into_inner();
    let wall = wall.elapsed().as_nanos() as f64;
    let cpu = cpu_ns() - cpu;
    let report = answer.report.expect("a report");
    let result = &report.provider_results[0];
    assert_eq!(result.state, pb::ResultState::Ok as i32, "{result:?}");
    assert_eq!(result.record_count, records as i64, "every record counted");
    assert_eq!(report.rows.len(), MONTHS, "one row per month");
    (wall, cpu, result.from_cache)
}

/// The child: cold and warm rounds against the sandbox `spec` names ("url org key records").
async fn measure(spec: &str) -> Figures {
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let (url, org, key) = (parts[0], parts[1], parts[2]);
    let records: usize = parts[3].parse().expect("a count");
    let settings = settings(url, org, key);

    let server = start(settings.clone()).await;
    let rss_before = status_kib("VmRSS:") * 1024.0;
    let (cold_wall, cold_cpu, from_cache) = timed(&server, GROUPINGS[0], records).await;
    assert!(!from_cache, "the first query fetches");
    let mut warm = Vec::new();
    for grouping in &GROUPINGS[1..] {
        let (wall, cpu, from_cache) = timed(&server, grouping, records).await;
        assert!(from_cache, "warm queries read the cache");
        warm.push((wall, cpu));
    }
    let (remembered_wall, _, _) = timed(&server, GROUPINGS[WARM_ROUNDS], records).await;
    let rss_after = status_kib("VmRSS:") * 1024.0;
    let hwm = status_kib("VmHWM:") * 1024.0;
    server.stop().await;

    let mut cold = vec![(cold_wall, cold_cpu)];
    for _ in 1..COLD_ROUNDS {
        let server = start(settings.clone()).await;
        let (wall, cpu, _) = timed(&server, GROUPINGS[0], records).await;
        cold.push((wall, cpu));
        server.stop().await;
    }
    let cold_rounds = cold.iter().map(|c| c.0).collect();
    let (cold_wall, cold_cpu) = median_pair(cold);
    let (warm_wall, warm_cpu) = median_pair(warm);
    Figures {
        cold_wall,
        cold_cpu,
        warm_wall,
        warm_cpu,
        remembered_wall,
        rss_before,
        rss_after,
        hwm,
        cold_rounds,
    }
}

/// Medians of wall and CPU, each on its own.
fn median_pair(rounds: Vec<(f64, f64)>) -> (f64, f64) {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (
        median(rounds.iter().map(|r| r.0).collect()),
        median(rounds.iter().map(|r| r.1).collect()),
    )
}

fn report(all: &[(usize, Figures)]) {
    let ms = |ns: f64| ns / 1e6;
    let mib = |b: f64| b / (1024.0 * 1024.0);
    println!();
    println!(
        "GetCosts over N records (Elastic v2 costs/instances, {MONTHS} monthly chunks, 20 rows); \
         cold: median of {COLD_ROUNDS} fresh servers; warm: median of {WARM_ROUNDS} (cache hits, \
         no remembered answer)"
    );
    println!(
        "{:>9} | {:>10} {:>10} | {:>10} {:>10} | {:>9} | {:>8} {:>8} {:>8} {:>8} | {:>9} {:>9} | {:>8}",
        "N",
        "cold ms",
        "cold CPU",
        "warm ms",
        "warm CPU",
        "rememb.",
        "cold",
        "cold CPU",
        "warm",
        "warm CPU",
        "RSS held",
        "VmHWM",
        "held"
    );
    println!(
        "{:>9} | {:>10} {:>10} | {:>10} {:>10} | {:>9} | {:>8} {:>8} {:>8} {:>8} | {:>9} {:>9} | {:>8}",
        "records",
        "wall",
        "ms",
        "wall",
        "ms",
        "µs",
        "ns/rec",
        "ns/rec",
        "ns/rec",
        "ns/rec",
        "MiB",
        "MiB",
        "B/rec"
    );
    for (n, f) in all {
        let per = |v: f64| v / *n as f64;
        let held = f.rss_after - f.rss_before;
        println!(
            "{:>9} | {:>10.1} {:>10.1} | {:>10.2} {:>10.2} | {:>9.0} | {:>8.0} {:>8.0} {:>8.0} {:>8.0} | {:>9.1} {:>9.1} | {:>8.0}",
            n,
            ms(f.cold_wall),
            ms(f.cold_cpu),
            ms(f.warm_wall),
            ms(f.warm_cpu),
            f.remembered_wall / 1e3,
            per(f.cold_wall),
            per(f.cold_cpu),
            per(f.warm_wall),
            per(f.warm_cpu),
            mib(held),
            mib(f.hwm),
            per(held),
        );
    }
    println!("cold wall per round, ms:");
    for (n, f) in all {
        let rounds: Vec<String> = f
            .cold_rounds
            .iter()
            .map(|r| format!("{:.1}", ms(*r)))
            .collect();
        println!("  {n:>9}: {}", rounds.join(", "));
    }
    println!("ratios to the previous N (linear growth is ~10x):");
    for pair in all.windows(2) {
        let ((n0, a), (n1, b)) = (&pair[0], &pair[1]);
        let held = |f: &Figures| f.rss_after - f.rss_before;
        println!(
            "  {n1}/{n0}: cold wall {:.1}x, cold CPU {:.1}x, warm wall {:.1}x, warm CPU {:.1}x, RSS held {:.1}x, VmHWM {:.1}x",
            b.cold_wall / a.cold_wall,
            b.cold_cpu / a.cold_cpu,
            b.warm_wall / a.warm_wall,
            b.warm_cpu / a.warm_cpu,
            held(b) / held(a),
            b.hwm / a.hwm,
        );
    }
}
