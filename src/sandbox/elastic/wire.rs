//! JSON bodies of the Elastic emulator, written by hand so every amount keeps its exact decimal text.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::sandbox::elastic::catalog::{Decimal4, Sku};
use crate::sandbox::elastic::data::{
    ElasticDataset, ElasticInstance, ElasticOrg, UsageKey, Window, day_start,
};
use crate::sandbox::elastic::sums::{Buckets, DeploymentCost, LineSum, ProductCost, V1_DIMENSIONS};
use crate::sandbox::fault::Variant;

/// A JSON value whose numbers are exact: serde_json without `arbitrary_precision` would
/// go through f64, and a float is not guaranteed to print back as the same short decimal.
pub(crate) enum Json {
    Null,
    Int(i64),
    Dec(Decimal4),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
    /// Text rendered before, written as it is.
    Raw(Arc<str>),
}

/// What InconsistentTotals adds to one stated total: a single ten-thousandth of an ECU.
const SKEW: Decimal4 = Decimal4::from_ten_thousandths(1);

impl Json {
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Json::Dec(d) => {
                let _ = write!(out, "{d}");
            }
            Json::Str(s) => write_str(out, s),
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Raw(text) => out.push_str(text),
            Json::Obj(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(out, key);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn s(text: impl Into<String>) -> Json {
    Json::Str(text.into())
}

/// Date-times as the documents show them: "2024-05-04T09:42:00+00:00".
fn time(t: DateTime<Utc>) -> Json {
    s(t.to_rfc3339_opts(SecondsFormat::AutoSi, false))
}

/// The total entry `i` of a list states: under InconsistentTotals the first entry claims one
/// [`SKEW`] more than its parts add up to.
fn stated_total(i: usize, total: Decimal4, variant: Variant) -> Decimal4 {
    if i == 0 && variant == Variant::InconsistentTotals {
        total + SKEW
    } else {
        total
    }
}

/// The v1 error body `{errors:[{code, message, fields?}]}`, also v2's throttling body.
pub(crate) fn errors(code: &str, message: &str, fields: &[&str]) -> Json {
    let mut error = vec![("code", s(code)), ("message", s(message))];
    if !fields.is_empty() {
        error.push(("fields", Json::Arr(fields.iter().map(|f| s(*f)).collect())));
    }
    Json::Obj(vec![("errors", Json::Arr(vec![Json::Obj(error)]))])
}

/// `{total_cost, deployments[{deployment_id, deployment_name, costs{total, dimensions}, hourly_rate, period}]}`.
pub(crate) fn v1_costs(deployments: &[DeploymentCost], variant: Variant) -> Json {
    let mut grand = Decimal4::ZERO;
    let items = deployments
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let total = stated_total(i, d.dimensions.iter().copied().sum(), variant);
            grand += total;
            let dimensions = V1_DIMENSIONS
                .iter()
                .zip(d.dimensions)
                .map(|(name, cost)| Json::Obj(vec![("type", s(*name)), ("cost", Json::Dec(cost))]))
                .collect();
            let costs = vec![
                ("total", Json::Dec(total)),
                ("dimensions", Json::Arr(dimensions)),
            ];
            let period = vec![("start", time(d.period.0)), ("end", time(d.period.1))];
            Json::Obj(vec![
                ("deployment_id", s(&d.instance.id)),
                ("deployment_name", s(d.instance.name)),
                ("costs", Json::Obj(costs)),
                ("hourly_rate", Json::Dec(d.hourly_rate)),
                ("period", Json::Obj(period)),
            ])
        })
        .collect();
    Json::Obj(vec![
        ("total_cost", Json::Dec(grand)),
        ("deployments", Json::Arr(items)),
    ])
}

/// Bytes of body gathered before they are sent on.
const STREAM_PIECE: usize = 64 * 1024;

/// The spec's `Instances`, `{total_ecu, instances[{id, name, type, total_ecu, product_line_items}]}`,
/// rendered as it is sent: each usage pattern's line items are summed and rendered once, then every
/// instance drawing it is written around them, so a big organization's answer costs its bytes and
/// little memory. Without `include_names`, a project's name is its id: billing knows deployment
/// names, project names come from the control plane.
pub(crate) struct InstancesBody {
    data: Arc<ElasticDataset>,
    org_id: String,
    /// Each instance alive in the window (its position in the org) and its usage pattern.
    listed: Vec<(usize, usize)>,
    /// Per usage pattern: its total and its rendered `product_line_items`.
    patterns: Vec<(Decimal4, Arc<str>)>,
    include_names: bool,
    variant: Variant,
    /// Instances written so far; `None` before the head.
    next: Option<usize>,
    done: bool,
}

impl InstancesBody {
    pub(crate) fn new(
        data: Arc<ElasticDataset>,
        org: &ElasticOrg,
        window: &Window,
        include_names: bool,
        variant: Variant,
    ) -> Self {
        let mut keys: HashMap<UsageKey, usize> = HashMap::new();
        let mut patterns = Vec::new();
        let mut listed = Vec::new();
        for (at, instance) in org.instances.iter().enumerate() {
            if instance.active_period(window).is_none() {
                continue;
            }
            let pattern = *keys.entry(instance.usage_key()).or_insert_with(|| {
                let cost = instance.cost(window);
                let lines = Json::Arr(cost.lines.iter().map(|l| line_item(l, window)).collect());
                patterns.push((cost.total(), Arc::from(lines.render())));
                patterns.len() - 1
            });
            listed.push((at, pattern));
        }
        Self {
            org_id: org.id.to_owned(),
            data,
            listed,
            patterns,
            include_names,
            variant,
            next: None,
            done: false,
        }
    }

    /// The grand total as stated: the sum of the instances' stated totals.
    fn grand_total(&self) -> Decimal4 {
        self.listed
            .iter()
            .enumerate()
            .map(|(i, &(_, p))| stated_total(i, self.patterns[p].0, self.variant))
            .sum()
    }

    fn write_instance(&self, out: &mut String, org: &ElasticOrg, i: usize) {
        let (at, pattern) = self.listed[i];
        let instance = &org.instances[at];
        let (total, lines) = &self.patterns[pattern];
        let name = if self.include_names || instance.kind.is_deployment() {
            instance.name.to_owned()
        } else {
            instance.id.clone()
        };
        Json::Obj(vec![
            ("id", s(&instance.id)),
            ("name", s(name)),
            ("type", s(instance.type_name())),
            (
                "total_ecu",
                Json::Dec(stated_total(i, *total, self.variant)),
            ),
            ("product_line_items", Json::Raw(lines.clone())),
        ])
        .write(out);
    }
}

impl Iterator for InstancesBody {
    type Item = Result<Bytes, Infallible>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut out = String::with_capacity(STREAM_PIECE + 4096);
        let mut next = match self.next {
            Some(next) => next,
            None => {
                out.push_str(r#"{"total_ecu":"#);
                Json::Dec(self.grand_total()).write(&mut out);
                out.push_str(r#","instances":["#);
                0
            }
        };
        let data = self.data.clone();
        // Found when the body was planned; datasets never change, so the loop always runs.
        let org = data.organization(&self.org_id);
        let end = if org.is_some() { self.listed.len() } else { 0 };
        while let Some(org) = org.filter(|_| next < end && out.len() < STREAM_PIECE) {
            if next > 0 {
                out.push(',');
            }
            self.write_instance(&mut out, org, next);
            next += 1;
        }
        self.next = Some(next);
        if next >= end {
            out.push_str("]}");
            self.done = true;
        }
        Some(Ok(Bytes::from(out)))
    }
}

/// The spec's `Items`: `{total_ecu, products[{type, total_ecu, product_line_items}]}`.
pub(crate) fn items(products: &[ProductCost], window: &Window, variant: Variant) -> Json {
    let mut grand = Decimal4::ZERO;
    let items = products
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let total = stated_total(i, p.total(), variant);
            grand += total;
            let lines = p.lines.iter().map(|l| line_item(l, window)).collect();
            Json::Obj(vec![
                ("type", s(p.name)),
                ("total_ecu", Json::Dec(total)),
                ("product_line_items", Json::Arr(lines)),
            ])
        })
        .collect();
    Json::Obj(vec![
        ("total_ecu", Json::Dec(grand)),
        ("products", Json::Arr(items)),
    ])
}

/// The org chart: one value per instance (`type` = instance type).
pub(crate) fn org_chart(org: &ElasticOrg, buckets: Buckets, variant: Variant) -> Json {
    chart(buckets, variant, |at| {
        let instance = &org.instances[at];
        (&instance.id, instance.name, instance.type_name())
    })
}

/// The instance chart: one value per line item (`id` = SKU, `type` = line item type).
pub(crate) fn instance_chart(
    instance: &ElasticInstance,
    buckets: Buckets,
    variant: Variant,
) -> Json {
    let skus: Vec<&Sku> = instance.skus().collect();
    chart(buckets, variant, |at| {
        (skus[at].sku, skus[at].name, skus[at].item_type)
    })
}

/// `{data[{timestamp, values[{id, name, type, value}]}]}`; `timestamp` is the bucket's
/// start in Unix seconds, `value` its cost in ECU.
fn chart<'a>(
    buckets: Buckets,
    variant: Variant,
    label: impl Fn(usize) -> (&'a str, &'a str, &'a str),
) -> Json {
    let mut skew = variant == Variant::InconsistentTotals;
    let data = buckets
        .into_iter()
        .map(|(start, values)| {
            let values = values
                .into_iter()
                .map(|(at, mut value)| {
                    // InconsistentTotals: one value no longer adds up to the period's total.
                    if std::mem::take(&mut skew) {
                        value += SKEW;
                    }
                    let (id, name, kind) = label(at);
                    Json::Obj(vec![
                        ("id", s(id)),
                        ("name", s(name)),
                        ("type", s(kind)),
                        ("value", Json::Dec(value)),
                    ])
                })
                .collect();
            Json::Obj(vec![
                ("timestamp", Json::Int(start.timestamp())),
                ("values", Json::Arr(values)),
            ])
        })
        .collect();
    Json::Obj(vec![("data", Json::Arr(data))])
}

/// A `ProductLineItem`. Its `rate` is the marginal rate of the latest price period with
/// usage (the only rate when untiered; without usage, the rate at the window's end).
/// `quantity × rate = total_ecu` holds whenever `quantities` is empty, and otherwise per
/// `quantities` entry (untiered) or per tier.
fn line_item(line: &LineSum, window: &Window) -> Json {
    let sku = line.sku;
    let quantity = line.quantity();
    let rate = match line.periods.last() {
        Some((period, tiers)) => marginal_rate(sku, *period, tiers),
        None => sku.prices[sku.period_at(window.last_day())].tiers[0].rate,
    };
    // Per the spec, empty when the price is untiered and did not change over the usage.
    let segments = if line.periods.is_empty() || (!sku.is_tiered() && line.periods.len() == 1) {
        Vec::new()
    } else {
        line.periods
            .iter()
            .map(|(p, tiers)| segment(sku, *p, tiers, window))
            .collect()
    };
    Json::Obj(vec![
        ("name", s(sku.name)),
        ("total_ecu", Json::Dec(line.total())),
        ("type", s(sku.item_type)),
        ("sku", s(sku.sku)),
        ("unit", s(sku.unit)),
        ("quantity", quantity_json(sku, quantity, None)),
        (
            "display_quantity",
            quantity_json(sku, quantity, Some("default")),
        ),
        ("rate", rate_json(sku, rate)),
        ("kind", sku.kind.map_or(Json::Null, s)),
        ("quantities", Json::Arr(segments)),
    ])
}

/// A `ProductLineItemQuantity`: one price period clipped to the window, with the marginal
/// rate. Untiered periods have no `tiers`; tiered ones list every tier, `max` null on the last.
fn segment(sku: &Sku, period: usize, tiers: &[(Decimal4, Decimal4)], window: &Window) -> Json {
    let (first, end) = sku.period_days(period);
    let from = window.from.max(day_start(first));
    let to = window.to.min(day_start(end));
    let quantity: Decimal4 = tiers.iter().map(|t| t.0).sum();
    let total: Decimal4 = tiers.iter().map(|t| t.1).sum();
    let spec = sku.prices[period].tiers;
    let tier_list = if spec.len() > 1 {
        spec.iter()
            .zip(tiers)
            .enumerate()
            .map(|(i, (tier, (q, t)))| {
                let max = spec.get(i + 1).map_or(Json::Null, |n| Json::Int(n.min));
                Json::Obj(vec![
                    ("min", Json::Int(tier.min)),
                    ("max", max),
                    ("total_ecu", Json::Dec(*t)),
                    ("quantity", quantity_json(sku, *q, None)),
                    ("rate", rate_json(sku, tier.rate)),
                ])
            })
            .collect()
    } else {
        Vec::new()
    };
    Json::Obj(vec![
        ("from", time(from)),
        ("to", time(to)),
        ("quantity", quantity_json(sku, quantity, None)),
        ("rate", rate_json(sku, marginal_rate(sku, period, tiers))),
        ("total_ecu", Json::Dec(total)),
        ("tiers", Json::Arr(tier_list)),
    ])
}

/// The rate of the highest tier with usage: what the next unit costs.
fn marginal_rate(sku: &Sku, period: usize, tiers: &[(Decimal4, Decimal4)]) -> Decimal4 {
    let spec = sku.prices[period].tiers;
    let used = tiers.iter().rposition(|(q, _)| *q > Decimal4::ZERO);
    spec[used.unwrap_or(0).min(spec.len() - 1)].rate
}

fn quantity_json(sku: &Sku, quantity: Decimal4, display_type: Option<&str>) -> Json {
    let mut fields = vec![
        ("value", Json::Dec(quantity)),
        ("formatted_value", s(sku.format_quantity(quantity))),
    ];
    if let Some(kind) = display_type {
        fields.push(("type", s(kind)));
    }
    Json::Obj(fields)
}

fn rate_json(sku: &Sku, rate: Decimal4) -> Json {
    Json::Obj(vec![
        ("value", Json::Dec(rate)),
        ("formatted_value", s(sku.format_rate(rate))),
    ])
}
