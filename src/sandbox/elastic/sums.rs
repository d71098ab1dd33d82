//! The sums every Elastic endpoint answers from, each a fold over the same usage records tests read.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use crate::sandbox::elastic::catalog::{CATALOG, Decimal4, Sku};
use crate::sandbox::elastic::data::{
    ElasticInstance, ElasticOrg, ElasticUsage, UsageIter, UsageKey, Window, day_start,
};
use crate::sandbox::elastic::seed::{EPOCH, MONTH_STARTS, month_of};

/// The v1 dimension types, in the order every deployment lists them.
pub(crate) const V1_DIMENSIONS: [&str; 6] = [
    "capacity",
    "data_in",
    "data_internode",
    "data_out",
    "storage_api",
    "storage_bytes",
];

/// One line item's usage: per price period that has usage (ascending), per tier, (quantity, total).
#[derive(Clone, Debug)]
pub(crate) struct LineSum {
    pub(crate) sku: &'static Sku,
    pub(crate) periods: Vec<(usize, Vec<(Decimal4, Decimal4)>)>,
}

/// An instance alive in the window, with one line per SKU it uses.
pub(crate) struct InstanceCost<'a> {
    pub(crate) instance: &'a ElasticInstance,
    pub(crate) lines: Vec<LineSum>,
}

/// The v2 `Product`: line items summed across instances, one per SKU.
pub(crate) struct ProductCost {
    pub(crate) name: &'static str,
    pub(crate) lines: Vec<LineSum>,
}

/// A v1 deployment: cost per `V1_DIMENSIONS` entry, hourly rate and the active period.
pub(crate) struct DeploymentCost<'a> {
    pub(crate) instance: &'a ElasticInstance,
    pub(crate) dimensions: [Decimal4; 6],
    pub(crate) hourly_rate: Decimal4,
    pub(crate) period: (DateTime<Utc>, DateTime<Utc>),
}

/// Chart sums per bucket, keyed by a position: an instance in its org or a line in its instance.
pub(crate) type Buckets = Vec<(DateTime<Utc>, BTreeMap<usize, Decimal4>)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grouping {
    Product,
    ProductFamily,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bucketing {
    Daily,
    Monthly,
}

impl ElasticOrg {
    /// Instances alive in the window, each with every SKU line it has, summed from its records
    /// (once per usage pattern: instances that draw the same usage share the sums).
    pub(crate) fn instance_costs(&self, window: &Window) -> Vec<InstanceCost<'_>> {
        let mut sums: HashMap<UsageKey, Vec<LineSum>> = HashMap::new();
        self.instances
            .iter()
            .filter(|i| i.active_period(window).is_some())
            .map(|instance| {
                let lines = sums
                    .entry(instance.usage_key())
                    .or_insert_with(|| instance.cost(window).lines)
                    .clone();
                InstanceCost { instance, lines }
            })
            .collect()
    }

    /// The v1 view: deployments only, their lines folded into dimensions.
    pub(crate) fn deployment_costs(&self, window: &Window) -> Vec<DeploymentCost<'_>> {
        let costs = self.instance_costs(window);
        costs
            .into_iter()
            .filter(|c| c.instance.kind.is_deployment())
            .filter_map(|c| {
                let period = c.instance.active_period(window)?;
                let mut dimensions = [Decimal4::ZERO; 6];
                for line in &c.lines {
                    let at = V1_DIMENSIONS.iter().position(|&d| d == line.sku.item_type);
                    if let Some(at) = at {
                        dimensions[at] += line.total();
                    }
                }
                // Capacity is metered at one unit per hour, so its rate is the price of an hour.
                let last_day = (period.1.timestamp() - 1 - EPOCH).div_euclid(86_400);
                let hourly_rate = c
                    .lines
                    .iter()
                    .filter(|l| l.sku.item_type == "capacity")
                    .map(|l| l.sku.prices[l.sku.period_at(last_day)].tiers[0].rate)
                    .sum();
                Some(DeploymentCost {
                    instance: c.instance,
                    dimensions,
                    hourly_rate,
                    period,
                })
            })
            .collect()
    }

    /// Per bucket, each instance's cost (keyed by its position in the org).
    pub(crate) fn chart(&self, window: &Window, bucketing: Bucketing) -> Buckets {
        let records = UsageIter::new(&self.instances, *window);
        chart(records, window, bucketing, |r| {
            let at = self
                .instances
                .iter()
                .position(|i| std::ptr::eq(i, r.instance));
            at.unwrap_or_default()
        })
    }
}

impl ElasticInstance {
    pub(crate) fn cost(&self, window: &Window) -> InstanceCost<'_> {
        let mut lines: Vec<LineSum> = self.skus().map(LineSum::new).collect();
        for record in UsageIter::new(std::slice::from_ref(self), *window) {
            lines[record.line].add(&record);
        }
        InstanceCost {
            instance: self,
            lines,
        }
    }

    /// Per bucket, each line item's cost (keyed by its position in the instance).
    pub(crate) fn chart(&self, window: &Window, bucketing: Bucketing) -> Buckets {
        let records = UsageIter::new(std::slice::from_ref(self), *window);
        chart(records, window, bucketing, |r| r.line)
    }
}

impl InstanceCost<'_> {
    pub(crate) fn total(&self) -> Decimal4 {
        self.lines.iter().map(LineSum::total).sum()
    }
}

impl LineSum {
    fn new(sku: &'static Sku) -> Self {
        Self {
            sku,
            periods: Vec::new(),
        }
    }

    fn add(&mut self, r: &ElasticUsage) {
        let tiers = self.tiers_mut(r.period);
        tiers[r.tier].0 += r.quantity;
        tiers[r.tier].1 += r.total;
    }

    fn merge(&mut self, other: &LineSum) {
        for (period, sums) in &other.periods {
            for (mine, theirs) in self.tiers_mut(*period).iter_mut().zip(sums) {
                mine.0 += theirs.0;
                mine.1 += theirs.1;
            }
        }
    }

    /// The period's tier sums, created (zeroed, kept in period order) on first use.
    fn tiers_mut(&mut self, period: usize) -> &mut Vec<(Decimal4, Decimal4)> {
        let at = self.periods.partition_point(|(p, _)| *p < period);
        if self.periods.get(at).is_none_or(|(p, _)| *p != period) {
            let n = self.sku.prices.get(period).map_or(1, |p| p.tiers.len());
            self.periods
                .insert(at, (period, vec![(Decimal4::ZERO, Decimal4::ZERO); n]));
        }
        &mut self.periods[at].1
    }

    pub(crate) fn quantity(&self) -> Decimal4 {
        self.periods.iter().flat_map(|(_, t)| t).map(|t| t.0).sum()
    }

    pub(crate) fn total(&self) -> Decimal4 {
        self.periods.iter().flat_map(|(_, t)| t).map(|t| t.1).sum()
    }
}

impl ProductCost {
    pub(crate) fn total(&self) -> Decimal4 {
        self.lines.iter().map(LineSum::total).sum()
    }
}

/// Groups the instances' lines into products (hosted SKUs always form "deployment"), one
/// line per SKU; products and lines follow the catalog's order.
pub(crate) fn products(costs: &[InstanceCost], grouping: Grouping) -> Vec<ProductCost> {
    let mut products: Vec<ProductCost> = Vec::new();
    for sku in CATALOG.iter() {
        let mut merged: Option<LineSum> = None;
        for line in costs.iter().flat_map(|c| &c.lines) {
            if line.sku.id == sku.id {
                merged.get_or_insert_with(|| LineSum::new(sku)).merge(line);
            }
        }
        let Some(line) = merged else { continue };
        let name = match grouping {
            Grouping::Product => sku.product,
            Grouping::ProductFamily => sku.product_family,
        };
        match products.iter_mut().find(|p| p.name == name) {
            Some(product) => product.lines.push(line),
            None => products.push(ProductCost {
                name,
                lines: vec![line],
            }),
        }
    }
    products
}

/// Sums record totals per bucket and per `key` (an instance or line index), listing every
/// bucket the window touches within the usage span, empty or not.
fn chart<'a>(
    records: impl Iterator<Item = ElasticUsage<'a>>,
    window: &Window,
    bucketing: Bucketing,
    key: impl Fn(&ElasticUsage<'a>) -> usize,
) -> Buckets {
    let (h0, h1) = window.hours;
    let days = h0.div_euclid(24)..(h1 + 23).div_euclid(24);
    let bucket_of = |day: i64| match bucketing {
        Bucketing::Daily => day,
        Bucketing::Monthly => month_of(day) as i64,
    };
    let mut buckets: BTreeMap<i64, BTreeMap<usize, Decimal4>> = BTreeMap::new();
    if !days.is_empty() {
        for b in bucket_of(days.start)..=bucket_of(days.end - 1) {
            buckets.insert(b, BTreeMap::new());
        }
    }
    for r in records {
        let day = (r.start.timestamp() - EPOCH).div_euclid(86_400);
        let values = buckets.entry(bucket_of(day)).or_default();
        *values.entry(key(&r)).or_default() += r.total;
    }
    buckets
        .into_iter()
        .map(|(b, values)| {
            let first_day = match bucketing {
                Bucketing::Daily => b,
                Bucketing::Monthly => MONTH_STARTS[(b as usize).min(24)],
            };
            (day_start(first_day), values)
        })
        .collect()
}
