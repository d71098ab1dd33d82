//! Normalize + hold as the cache does (columns) + aggregate a synthetic 1M-record set grouped by three
//! dimensions, against a bare summing loop over the same records. A second pair measures aggregation
//! alone over cached columns. Criterion measures each; then an interleaved A/B run (median of rounds)
//! prints the ratio and records/s on one core, the figures quoted in closing notes.

use costd::{
    domain::{
        AccountRef, CostFilter, CostQuery, CostRecord, Granularity, GroupBy, Period,
        ProviderAccountId, ProviderKind, RecordColumns, Text,
    },
    engine::aggregate::aggregate,
    providers::team,
};
use criterion::{BenchmarkId, Criterion, Throughput};
use serde_json::json;
use std::{hint::black_box, time::Instant};

/// The allocator the costd binary ships with, so the harness measures what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TEAMS: usize = 10;
const DAYS: usize = 100;
const OPERATIONS: usize = 50;
const DIMENSIONS: usize = 20;
const RECORDS: usize = TEAMS * DAYS * OPERATIONS * DIMENSIONS;

struct Body {
    account: AccountRef,
    team_id: String,
    period: Period,
    response: team::CostResponse,
}

fn day(index: usize) -> Period {
    let start =
        chrono::DateTime::from_timestamp(1_767_225_600 + 86_400 * index as i64, 0).expect("valid");
    Period::new(start, start + chrono::Duration::days(1)).expect("non-empty")
}

/// One upstream answer per team and day, each with every operation × dimension.
fn bodies() -> Vec<Body> {
    let mut bodies = Vec::with_capacity(TEAMS * DAYS);
    for t in 0..TEAMS {
        for d in 0..DAYS {
            let period = day(d);
            let mut grand = 0i64;
            let operations: Vec<_> = (0..OPERATIONS)
                .map(|o| {
                    let costs: Vec<i64> = (0..DIMENSIONS).map(|x| ((t * 7 + d * 13 + o * 31 + x * 17) % 100_000) as i64 * 1_001).collect();
                    let total: i64 = costs.iter().sum();
                    grand += total;
                    json!({
                        "operationType": format!("operation_{o}"),
                        "dimensions": costs.iter().enumerate().map(|(x, cost)| json!({
                            "dimension": format!("dimension_{x}"), "units": 1001, "unitPriceNanodollars": cost / 1001,
                            "costNanodollars": cost, "costUsd": *cost as f64 / 1e9, "pricingRuleId": "rule",
                        })).collect::<Vec<_>>(),
                        "totalCostNanodollars": total, "totalCostUsd": total as f64 / 1e9,
                    })
                })
                .collect();
            let text = serde_json::to_vec(&json!({
                "teamId": format!("team_{t}"), "pricingSheetId": "ps",
                "startDate": period.start().to_rfc3339(), "endDate": period.end().to_rfc3339(),
                "operationCosts": operations, "totalCostNanodollars": grand, "totalCostUsd": grand as f64 / 1e9,
                "usageRecordCount": 1, "calculatedAt": "2026-01-01T00:00:00Z",
            }))
            .expect("serialises");
            bodies.push(Body {
                account: AccountRef {
                    id: ProviderAccountId::parse(&format!("team-{t}")).expect("valid"),
                    kind: ProviderKind::TeamBilling,
                    display_name: Text::from(format!("Team {t}")),
                },
                team_id: format!("team_{t}"),
                period,
                response: serde_json::from_slice(&text).expect("parses"),
            });
        }
    }
    bodies
}

fn query() -> CostQuery {
    CostQuery {
        period: Period::new(day(0).start(), day(DAYS).start()).expect("non-empty"),
        filter: CostFilter::default(),
        group_by: vec![
            GroupBy::BillingAccount,
            GroupBy::Service,
            GroupBy::ChargeDimension,
        ],
        granularity: Granularity::None,
        max_staleness: None,
    }
}

/// What a cold answer costs per upstream body: normalize it, hold it as the cache does (columns), and
/// aggregate every chunk.
fn normalize_and_aggregate(bodies: &[Body], query: &CostQuery) -> usize {
    let chunks: Vec<RecordColumns> = bodies
        .iter()
        .map(|body| {
            team::normalize(&body.account, &body.team_id, body.period, &body.response)
                .expect("normalizes")
                .records
        })
        .collect();
    aggregate(chunks.iter().map(|chunk| (chunk, false)), query)
        .expect("sums")
        .rows
        .len()
}

fn bare_sum(records: &[CostRecord]) -> i128 {
    records.iter().map(|r| r.billed_cost.nanos()).sum()
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let bodies = bodies();
    let query = query();
    let records: Vec<CostRecord> = bodies
        .iter()
        .flat_map(|b| {
            let normalized =
                team::normalize(&b.account, &b.team_id, b.period, &b.response).expect("normalizes");
            normalized.records.records().collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(records.len(), RECORDS);

    let mut criterion = Criterion::default().sample_size(10).configure_from_args();
    let mut group = criterion.benchmark_group("one_million_records");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.bench_function(
        BenchmarkId::new("normalize_and_aggregate", "3 dimensions"),
        |b| b.iter(|| normalize_and_aggregate(black_box(&bodies), &query)),
    );
    group.bench_function(BenchmarkId::new("bare_sum", "billed nanos"), |b| {
        b.iter(|| bare_sum(black_box(&records)))
    });
    group.finish();
    criterion.final_summary();

    // Interleaved rounds on this noisy machine: the ratio of medians is what we quote.
    let chunks: Vec<RecordColumns> = bodies
        .iter()
        .map(|b| {
            team::normalize(&b.account, &b.team_id, b.period, &b.response)
                .expect("normalizes")
                .records
        })
        .collect();
    // More rounds when profiling the measured loop (`AGGREGATE_ROUNDS=100 perf record ...`).
    let rounds = std::env::var("AGGREGATE_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(7);
    let (mut full, mut cached, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let started = Instant::now();
        black_box(normalize_and_aggregate(&bodies, &query));
        full.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        black_box(
            aggregate(chunks.iter().map(|chunk| (chunk, false)), &query)
                .expect("sums")
                .rows
                .len(),
        );
        cached.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        black_box(bare_sum(&records));
        bare.push(started.elapsed().as_secs_f64());
    }
    let (full, cached, bare) = (median(full), median(cached), median(bare));
    let held: usize = chunks.iter().map(RecordColumns::heap_bytes).sum();
    println!(
        "interleaved, median of {rounds}: normalize+hold+aggregate {:.0} records/s on one core; aggregate of cached columns {:.0} records/s; bare sum {:.0} records/s; ratios {:.1}x and {:.1}x; columns hold {:.0} bytes/record",
        RECORDS as f64 / full,
        RECORDS as f64 / cached,
        RECORDS as f64 / bare,
        full / bare,
        cached / bare,
        held as f64 / RECORDS as f64,
    );
}
