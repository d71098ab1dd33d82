//! Seeded, deterministic ground truth for the Elastic Cloud billing emulator: organizations, instances and their usage records.

use std::fmt;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};

use crate::sandbox::Dataset;
use crate::sandbox::elastic::catalog::{CATALOG, Decimal4, Grain, Sku, SkuId, UNIT};
use crate::sandbox::elastic::seed::{
    Draw, EPOCH, InstanceKind, MONTH_STARTS, ORGS, SCALE_LINES, SCALE_ORG, SCALE_USAGE_POOL,
    USAGE_DAYS, month_of,
};
use crate::sandbox::mix::mix;

/// The Elastic part of the sandbox's ground truth. Tests derive expected answers from
/// [`ElasticDataset::usage`], the same records every endpoint sums.
#[derive(Debug)]
pub struct ElasticDataset {
    orgs: Vec<ElasticOrg>,
}

/// A seeded organization and its API key (`ec_key_` + 32 hex; valid for this org only).
pub struct ElasticOrg {
    pub id: &'static str,
    pub name: &'static str,
    pub api_key: String,
    pub instances: Vec<ElasticInstance>,
}

/// A hosted deployment or a serverless project (32-hex id, like upstream's).
#[derive(Debug)]
pub struct ElasticInstance {
    pub id: String,
    pub name: &'static str,
    pub kind: InstanceKind,
    /// Usage starts at midnight UTC of `created` and stops at `deleted` (if it ever does).
    pub created: DateTime<Utc>,
    pub deleted: Option<DateTime<Utc>>,
    pub(crate) first_day: i64,
    pub(crate) end_day: i64,
    lines: &'static [(SkuId, Draw)],
    seed: u64,
}

/// Usage of one SKU by one instance in one hour or day, within one price tier.
/// A slot whose quantity crosses a tier boundary yields one record per tier.
#[derive(Clone, Copy, Debug)]
pub struct ElasticUsage<'a> {
    /// Start of the hour (hourly SKUs) or of the UTC day (daily SKUs).
    pub start: DateTime<Utc>,
    pub instance: &'a ElasticInstance,
    pub sku: &'static Sku,
    /// Index of the price period (in `sku.prices`) and of the tier within it.
    pub period: usize,
    pub tier: usize,
    pub quantity: Decimal4,
    pub rate: Decimal4,
    /// Exactly `quantity × rate`.
    pub total: Decimal4,
    /// Position of the SKU among the instance's line items.
    pub(crate) line: usize,
}

/// A query range as slot bounds: records whose start lies in `[from, to)`, clamped to the span.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub(crate) from: DateTime<Utc>,
    pub(crate) to: DateTime<Utc>,
    pub(crate) hours: (i64, i64),
    days: (i64, i64),
}

/// Walks instances × SKU lines × slots. Tiers count an instance's monthly quantity, so a
/// range that starts mid-month silently replays that month's earlier slots first.
pub(crate) struct UsageIter<'a> {
    instances: &'a [ElasticInstance],
    window: Window,
    cursor: Option<(usize, usize)>,
    slot: i64,
    end: i64,
    emit_from: i64,
    month_end: i64,
    used: i64,
    pending: Vec<ElasticUsage<'a>>,
}

/// An extra Elastic organization made big, for scale measurements: `instances` hosted deployments,
/// alive over the whole span, each with the ten hosted SKUs (`SCALE_LINES`). A v2 `costs/instances`
/// answer lists every line of every instance alive in the range, used or not, so it carries exactly
/// `instances × SCALE_LINES_PER_INSTANCE` line items per request.
///
/// Usage is seeded like the other orgs', but instance `i` draws it with the seed of usage pattern
/// `i % SCALE_USAGE_POOL` (ids, and so the records' resources, stay distinct): the answer is built
/// once per pattern and repeated, so a million line items cost the emulator little more than their
/// bytes. [`ElasticDataset::usage`] stays the ground truth. The organization's charts are summed
/// record by record like every other's: correct, but slow for a big organization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ElasticScale {
    pub instances: usize,
}

/// Line items of every instance of an [`ElasticScale`] organization.
pub const SCALE_LINES_PER_INSTANCE: usize = SCALE_LINES.len();

/// What an instance's usage is drawn from: instances equal in it have equal records but for
/// their instance, so one sum serves them all.
pub(crate) type UsageKey = (u64, usize, i64, i64);

impl Dataset {
    /// The seeded organizations, plus the big one if the sandbox has it.
    pub fn elastic(&self) -> &ElasticDataset {
        &self.elastic
    }

    /// The same, shared, for answers streamed after the handler has returned.
    pub(crate) fn elastic_shared(&self) -> Arc<ElasticDataset> {
        self.elastic.clone()
    }

    /// Adds the big organization `scale` describes to the seeded ones.
    pub fn with_elastic_scale(mut self, scale: ElasticScale) -> Self {
        let mut elastic = ElasticDataset::seeded();
        elastic.orgs.push(ElasticOrg::scaled(scale));
        self.elastic = Arc::new(elastic);
        self
    }
}

impl ElasticDataset {
    /// Built once per process: it is fixed, and tests and handlers must see the same one.
    pub(crate) fn shared_seeded() -> Arc<Self> {
        static ELASTIC: OnceLock<Arc<ElasticDataset>> = OnceLock::new();
        ELASTIC
            .get_or_init(|| Arc::new(ElasticDataset::seeded()))
            .clone()
    }

    pub(crate) fn seeded() -> Self {
        let orgs = ORGS
            .iter()
            .enumerate()
            .map(|(o, seed)| {
                let org_seed = mix(0xe1a5_71c0_0000 + o as u64);
                let instances = seed
                    .instances
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let seed = mix(org_seed ^ ((i as u64 + 1) << 40));
                        ElasticInstance {
                            id: format!("{:016x}{:016x}", mix(seed), mix(seed ^ 1)),
                            name: s.name,
                            kind: s.kind,
                            created: day_start(s.created),
                            deleted: (s.ended < USAGE_DAYS).then(|| day_start(s.ended)),
                            first_day: s.created,
                            end_day: s.ended,
                            lines: s.lines,
                            seed,
                        }
                    })
                    .collect();
                ElasticOrg {
                    id: seed.id,
                    name: seed.name,
                    api_key: format!("ec_key_{:016x}{:016x}", mix(org_seed), mix(!org_seed)),
                    instances,
                }
            })
            .collect();
        Self { orgs }
    }

    pub fn organizations(&self) -> &[ElasticOrg] {
        &self.orgs
    }

    pub fn organization(&self, id: &str) -> Option<&ElasticOrg> {
        self.orgs.iter().find(|o| o.id == id)
    }

    /// The organization an [`ElasticScale`] added, if any.
    pub fn scale_organization(&self) -> Option<&ElasticOrg> {
        self.organization(SCALE_ORG.id)
    }

    pub fn organization_by_key(&self, key: &str) -> Option<&ElasticOrg> {
        self.orgs.iter().find(|o| o.api_key == key)
    }

    /// Every SKU any instance can use, in the order items are listed.
    pub fn skus(&self) -> &'static [Sku] {
        &CATALOG
    }

    /// The org's usage records starting in `[from, to)` (only 2025-01-01..2027-01-01 has
    /// usage), ordered by instance, SKU line, then time.
    pub fn usage<'a>(
        &self,
        org: &'a ElasticOrg,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Iterator<Item = ElasticUsage<'a>> + use<'a> {
        UsageIter::new(&org.instances, Window::new(from, to))
    }
}

impl ElasticOrg {
    pub fn instance(&self, id: &str) -> Option<&ElasticInstance> {
        self.instances.iter().find(|i| i.id == id)
    }

    /// The organization [`ElasticScale`] describes (seeded after the fixed ones, never equal to them).
    fn scaled(scale: ElasticScale) -> Self {
        let org_seed = mix(0xe1a5_5ca1_e000);
        let instances = (0..scale.instances)
            .map(|i| {
                let seed = mix(org_seed ^ (((i % SCALE_USAGE_POOL) as u64 + 1) << 40));
                let id_seed = mix(org_seed ^ 0x1d ^ ((i as u64 + 1) << 8));
                ElasticInstance {
                    id: format!("{:016x}{:016x}", mix(id_seed), mix(id_seed ^ 1)),
                    name: SCALE_ORG.instance_name,
                    kind: InstanceKind::Deployment,
                    created: day_start(0),
                    deleted: None,
                    first_day: 0,
                    end_day: USAGE_DAYS,
                    lines: &SCALE_LINES,
                    seed,
                }
            })
            .collect();
        ElasticOrg {
            id: SCALE_ORG.id,
            name: SCALE_ORG.name,
            api_key: format!("ec_key_{:016x}{:016x}", mix(org_seed), mix(!org_seed)),
            instances,
        }
    }
}

impl fmt::Debug for ElasticOrg {
    // Hand-written so that debug output never shows the API key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ElasticOrg")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("instances", &self.instances)
            .finish_non_exhaustive()
    }
}

impl ElasticInstance {
    /// The v2 instance `type`.
    pub fn type_name(&self) -> &'static str {
        self.kind.type_name()
    }

    /// SKUs in the order of this instance's line items.
    pub fn skus(&self) -> impl Iterator<Item = &'static Sku> + use<> {
        self.lines.iter().map(|&(id, _)| &CATALOG[id as usize])
    }

    /// This instance's records in `[from, to)`, as [`ElasticDataset::usage`] yields them.
    pub fn usage(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> impl Iterator<Item = ElasticUsage<'_>> {
        UsageIter::new(std::slice::from_ref(self), Window::new(from, to))
    }

    /// Instances with the same key have the same usage records, instance aside.
    pub(crate) fn usage_key(&self) -> UsageKey {
        let lines = self.lines.as_ptr() as usize;
        (self.seed, lines, self.first_day, self.end_day)
    }

    /// The window clipped to the instance's life, if they overlap.
    pub(crate) fn active_period(&self, w: &Window) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let (first, end) = (self.first_day * 24, self.end_day * 24);
        if w.hours.0.max(first) >= w.hours.1.min(end) {
            return None;
        }
        let start = w.from.max(day_start(self.first_day));
        Some((start, w.to.min(day_start(self.end_day))))
    }
}

impl Window {
    pub(crate) fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        Self {
            from,
            to,
            hours: (slot_at_or_after(from, 3600), slot_at_or_after(to, 3600)),
            days: (slot_at_or_after(from, 86_400), slot_at_or_after(to, 86_400)),
        }
    }

    fn slots(&self, grain: Grain) -> (i64, i64) {
        match grain {
            Grain::Hourly => self.hours,
            Grain::Daily => self.days,
        }
    }

    /// The day whose rates apply to an empty line: the last one the window touches.
    pub(crate) fn last_day(&self) -> i64 {
        ((self.hours.1 - 1) / 24).clamp(0, USAGE_DAYS - 1)
    }
}

impl<'a> UsageIter<'a> {
    pub(crate) fn new(instances: &'a [ElasticInstance], window: Window) -> Self {
        Self {
            instances,
            window,
            cursor: None,
            slot: 0,
            end: 0,
            emit_from: 0,
            month_end: 0,
            used: 0,
            pending: Vec::new(),
        }
    }

    /// Moves to the next (instance, line) and sets up its slot range; false when done.
    fn next_line(&mut self) -> bool {
        let (mut i, mut l) = self.cursor.map_or((0, 0), |(i, l)| (i, l + 1));
        while let Some(instance) = self.instances.get(i) {
            if let Some(&(id, _)) = instance.lines.get(l) {
                let sku = &CATALOG[id as usize];
                let per_day = sku.grain.slots_per_day();
                let (want_from, want_to) = self.window.slots(sku.grain);
                let replay_from = if sku.is_tiered() {
                    MONTH_STARTS[month_of(want_from / per_day)] * per_day
                } else {
                    want_from
                };
                self.cursor = Some((i, l));
                self.slot = replay_from.max(instance.first_day * per_day);
                self.end = want_to.min(instance.end_day * per_day);
                self.emit_from = want_from;
                self.month_end = i64::MIN;
                self.used = 0;
                return true;
            }
            (i, l) = (i + 1, 0);
        }
        self.cursor = Some((i, 0));
        false
    }
}

impl<'a> Iterator for UsageIter<'a> {
    type Item = ElasticUsage<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(record) = self.pending.pop() {
                return Some(record);
            }
            let current = self.cursor.filter(|_| self.slot < self.end);
            let Some((i, l)) = current else {
                if !self.next_line() {
                    return None;
                }
                continue;
            };
            let instance = &self.instances[i];
            let (id, draw) = instance.lines[l];
            let sku = &CATALOG[id as usize];
            let slot = self.slot;
            self.slot += 1;
            let day = slot / sku.grain.slots_per_day();
            if day >= self.month_end {
                self.used = 0;
                self.month_end = MONTH_STARTS[(month_of(day) + 1).min(24)];
            }
            let hash = mix(instance.seed ^ ((l as u64) << 56) ^ slot as u64);
            let quantity = draw.quantity(hash, sku.step);
            if quantity == 0 {
                continue;
            }
            let period = sku.period_at(day);
            let tiers = sku.prices[period].tiers;
            let used = self.used;
            self.used += quantity;
            if slot < self.emit_from {
                continue;
            }
            let start = DateTime::from_timestamp(EPOCH + slot * sku.grain.slot_seconds(), 0)
                .unwrap_or_default();
            // Reversed, so that popping yields tiers in ascending order.
            for (tier, t) in tiers.iter().enumerate().rev() {
                let upper = tiers.get(tier + 1).map_or(i64::MAX, |n| n.min * UNIT);
                let part = (used + quantity).min(upper) - used.max(t.min * UNIT);
                if part <= 0 {
                    continue;
                }
                let quantity = Decimal4::from_ten_thousandths(part);
                self.pending.push(ElasticUsage {
                    start,
                    instance,
                    sku,
                    period,
                    tier,
                    quantity,
                    rate: t.rate,
                    total: quantity.times(t.rate),
                    line: l,
                });
            }
        }
    }
}

/// Midnight UTC of a span day (days are small constants, so the timestamp is always valid).
pub(crate) fn day_start(day: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(EPOCH + day * 86_400, 0).unwrap_or_default()
}

/// Index of the first slot starting at or after `t`, clamped to the usage span.
fn slot_at_or_after(t: DateTime<Utc>, slot_seconds: i64) -> i64 {
    // Any sub-second part pushes a time on a boundary past that slot.
    let secs = t.timestamp() - EPOCH + i64::from(t.timestamp_subsec_nanos() > 0);
    let max = USAGE_DAYS * 86_400 / slot_seconds;
    (secs + slot_seconds - 1)
        .div_euclid(slot_seconds)
        .clamp(0, max)
}
