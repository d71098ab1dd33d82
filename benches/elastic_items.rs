//! Parse + normalize a large generated v2 `costs/instances` body (≥ 50 MB; costd reads line items
//! from instances, whose type is the service) against
//! `serde_json::from_slice` into `serde_json::Value` of the same bytes. Criterion measures both; an
//! interleaved A/B run (median of rounds) prints MB/s and the ratio quoted in closing notes.

use costd::{
    domain::{AccountRef, Period, ProviderAccountId, ProviderKind, Text},
    providers::elastic::{Organization, normalize, wire},
};
use criterion::{Criterion, Throughput};
use rust_decimal::Decimal;
use std::{fmt::Write, hint::black_box, time::Instant};

const TARGET_BYTES: usize = 50 * 1024 * 1024;

/// Instances of line items whose amounts have four decimal places, as Elastic's do.
fn body() -> Vec<u8> {
    let mut text = String::with_capacity(TARGET_BYTES + 1_000_000);
    let mut products = Vec::new();
    let mut grand = 0i64;
    let mut product = 0;
    while text.len() < TARGET_BYTES {
        let mut items = String::new();
        let mut total = 0i64;
        for i in 0..1_000 {
            let quantity = (product * 7 + i * 13) % 5_000 + 1;
            let rate = (product * 31 + i * 17) % 9_999 + 1; // ten-thousandths of an ECU
            let line_total = quantity * rate;
            total += line_total;
            if !items.is_empty() {
                items.push(',');
            }
            let _ = write!(
                items,
                r#"{{"name":"Product {product} SKU {i}","sku":"sku-{product}-{i}","type":"capacity","unit":"hour","kind":"compute","total_ecu":{},"quantity":{{"value":{quantity},"formatted_value":"{quantity} hours"}},"display_quantity":{{"value":{quantity},"formatted_value":"{quantity}","type":"default"}},"rate":{{"value":{},"formatted_value":"{} per hour"}},"quantities":[]}}"#,
                Decimal::new(line_total, 4),
                Decimal::new(rate, 4),
                Decimal::new(rate, 4)
            );
        }
        grand += total;
        products.push(format!(
            r#"{{"id":"instance-{product}","name":"Instance {product}","type":"deployment","total_ecu":{},"product_line_items":[{items}]}}"#,
            Decimal::new(total, 4)
        ));
        text.push_str(products.last().map(String::as_str).unwrap_or_default());
        product += 1;
    }
    format!(
        r#"{{"total_ecu":{},"instances":[{}]}}"#,
        Decimal::new(grand, 4),
        products.join(",")
    )
    .into_bytes()
}

fn parse_and_normalize(bytes: &[u8], org: &Organization<'_>, period: Period) -> usize {
    let instances: wire::Instances = serde_json::from_slice(bytes).expect("parses");
    let normalized = normalize::instances(org, period, &instances).expect("normalizes");
    assert!(normalized.warnings.is_empty());
    normalized.records.len()
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let bytes = body();
    let megabytes = bytes.len() as f64 / (1024.0 * 1024.0);
    let account = AccountRef {
        id: ProviderAccountId::parse("elastic-bench").expect("valid"),
        kind: ProviderKind::Elastic,
        display_name: Text::from("Bench"),
    };
    let org = Organization {
        account: &account,
        organization_id: "org-bench",
        usd_per_ecu: Decimal::ONE,
    };
    let start = chrono::DateTime::from_timestamp(1_767_225_600, 0).expect("valid");
    let period = Period::new(start, start + chrono::Duration::days(31)).expect("non-empty");

    let mut criterion = Criterion::default().sample_size(10).configure_from_args();
    let mut group = criterion.benchmark_group("elastic_items_body");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("parse_and_normalize", |b| {
        b.iter(|| parse_and_normalize(black_box(&bytes), &org, period))
    });
    group.bench_function("serde_json_value", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&bytes)).expect("parses"))
    });
    group.finish();
    criterion.final_summary();

    let rounds = 5;
    let (mut ours, mut value) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let started = Instant::now();
        black_box(parse_and_normalize(&bytes, &org, period));
        ours.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        black_box(serde_json::from_slice::<serde_json::Value>(&bytes).expect("parses"));
        value.push(started.elapsed().as_secs_f64());
    }
    let (ours, value) = (median(ours), median(value));
    println!(
        "interleaved, median of {rounds}, {megabytes:.0} MB body: parse+normalize {:.0} MB/s, serde_json::Value {:.0} MB/s; throughput ratio {:.2}x",
        megabytes / ours,
        megabytes / value,
        value / ours
    );
}
