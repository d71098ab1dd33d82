//! Seeded, deterministic ground truth for the team billing (Catalyzed) emulator: teams, prices, hourly usage.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};

use crate::sandbox::elastic::data::ElasticDataset;
use crate::sandbox::mix::mix;

/// First hour with usage: 2025-01-01T00:00:00Z, as a Unix timestamp.
const USAGE_EPOCH: i64 = 1_735_689_600;
/// Hours from 2025-01-01 to 2027-01-01 (730 days).
const USAGE_HOURS: i64 = 730 * 24;
/// Most dimensions any operation has.
const MAX_DIMS: usize = 3;

/// An operation type and its cost dimensions, with how usage is generated for each.
struct OpSpec {
    name: &'static str,
    dims: &'static [DimSpec],
}

struct DimSpec {
    name: &'static str,
    /// Chance, in percent, that an hour has no usage.
    idle_percent: u64,
    /// Units in a busy hour lie in 1..=max_units.
    max_units: u64,
    /// Unit price in nanodollars on each sheet, in `SHEETS` order.
    prices: [u64; SHEETS.len()],
}

const fn dim(name: &'static str, idle_percent: u64, max_units: u64, prices: [u64; 2]) -> DimSpec {
    DimSpec {
        name,
        idle_percent,
        max_units,
        prices,
    }
}

/// Every value here is bounded so that two years of cost stays far below 2^53
/// nanodollars (exact as f64, safe for JSON readers that use doubles).
static CATALOG: [OpSpec; 4] = [
    OpSpec {
        name: "inference",
        dims: &[
            dim("input_tokens", 10, 2_000_000, [3_500, 3_000]),
            dim("output_tokens", 10, 600_000, [16_000, 15_000]),
            dim("cached_tokens", 40, 900_000, [400, 300]),
        ],
    },
    OpSpec {
        name: "embedding",
        dims: &[dim("tokens", 30, 1_500_000, [130, 100])],
    },
    OpSpec {
        name: "storage",
        dims: &[dim("gb_hours", 3, 800, [250_000, 200_000])],
    },
    OpSpec {
        name: "fine_tuning",
        dims: &[
            dim("training_tokens", 85, 5_000_000, [9_000, 8_000]),
            dim("gpu_hours", 85, 8, [2_900_000_000, 2_500_000_000]),
        ],
    },
];

// `cost` sums into a fixed [op][dim] array; keep every operation within it.
const _: () = {
    let mut o = 0;
    while o < CATALOG.len() {
        assert!(CATALOG[o].dims.len() <= MAX_DIMS);
        o += 1;
    }
};

/// Pricing sheets, oldest first; the last is the default ("latest effective").
static SHEETS: [(&str, i64); 2] = [("ps_2025_01", USAGE_EPOCH), ("ps_2026_01", 1_767_225_600)];

/// Seeded teams: id, name, and which `CATALOG` operations they use (by index).
static TEAMS: [(&str, &str, &[usize]); 3] = [
    ("team_acme", "Acme Analytics", &[0, 1, 2, 3]),
    ("team_borealis", "Borealis Labs", &[0, 1, 2]),
    ("team_cobalt", "Cobalt Robotics", &[0, 2, 3]),
];

/// The sandbox's ground truth. Tests derive expected answers from it, never from the handler.
#[derive(Debug)]
pub struct Dataset {
    teams: Vec<Team>,
    sheets: Vec<PricingSheet>,
    /// The Elastic organizations: the seeded ones (built once per process and shared), plus a big
    /// one when the sandbox was asked for it.
    pub(crate) elastic: Arc<ElasticDataset>,
}

/// A seeded team and its API token (`cat_tok_…`, scoped to this team only).
#[derive(Clone)]
pub struct Team {
    pub id: &'static str,
    pub name: &'static str,
    pub token: String,
    /// Operation types this team uses, each with its dimensions.
    pub operations: Vec<(&'static str, Vec<&'static str>)>,
    seed: u64,
    op_indices: &'static [usize],
}

#[derive(Clone, Debug)]
pub struct PricingSheet {
    pub id: &'static str,
    pub effective_from: DateTime<Utc>,
    pub prices: Vec<Price>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Price {
    pub operation: &'static str,
    pub dimension: &'static str,
    pub unit_price_nanodollars: u64,
    pub pricing_rule_id: String,
}

/// Usage of one dimension in one hour. Only hours with non-zero units are records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageRecord {
    /// Start of the hour.
    pub hour: DateTime<Utc>,
    pub operation: &'static str,
    pub dimension: &'static str,
    pub units: u64,
}

/// A team's cost over a range under one sheet: every operation the team uses, every dimension of it.
pub(crate) struct CostBreakdown {
    pub(crate) operations: Vec<OperationCost>,
    pub(crate) usage_record_count: u64,
}

pub(crate) struct OperationCost {
    pub(crate) operation: &'static str,
    pub(crate) dimensions: Vec<DimensionCost>,
}

pub(crate) struct DimensionCost {
    pub(crate) price: Price,
    pub(crate) units: u64,
}

impl Dataset {
    pub fn seeded() -> Self {
        let teams = TEAMS
            .iter()
            .enumerate()
            .map(|(i, &(id, name, op_indices))| {
                let seed = mix(0x7ea3_b111_0000 + i as u64);
                Team {
                    id,
                    name,
                    token: format!("cat_tok_{:016x}{:08x}", mix(seed), mix(seed ^ 1) as u32),
                    operations: op_indices
                        .iter()
                        .map(|&o| {
                            (
                                CATALOG[o].name,
                                CATALOG[o].dims.iter().map(|d| d.name).collect(),
                            )
                        })
                        .collect(),
                    seed,
                    op_indices,
                }
            })
            .collect();
        let sheets = SHEETS
            .iter()
            .enumerate()
            .map(|(s, &(id, from))| PricingSheet {
                id,
                // Constant, valid timestamps: this cannot fail.
                effective_from: Utc.timestamp_opt(from, 0).single().unwrap_or_default(),
                prices: CATALOG
                    .iter()
                    .flat_map(|op| op.dims.iter().map(move |d| (op.name, d)))
                    .map(|(operation, d)| Price {
                        operation,
                        dimension: d.name,
                        unit_price_nanodollars: d.prices[s],
                        pricing_rule_id: format!(
                            "pr_{}_{operation}_{}",
                            id.trim_start_matches("ps_"),
                            d.name
                        ),
                    })
                    .collect(),
            })
            .collect();
        Self {
            teams,
            sheets,
            elastic: ElasticDataset::shared_seeded(),
        }
    }

    pub fn teams(&self) -> &[Team] {
        &self.teams
    }

    pub fn team(&self, id: &str) -> Option<&Team> {
        self.teams.iter().find(|t| t.id == id)
    }

    pub fn team_by_token(&self, token: &str) -> Option<&Team> {
        self.teams.iter().find(|t| t.token == token)
    }

    /// Oldest first.
    pub fn pricing_sheets(&self) -> &[PricingSheet] {
        &self.sheets
    }

    pub fn pricing_sheet(&self, id: &str) -> Option<&PricingSheet> {
        self.sheets.iter().find(|s| s.id == id)
    }

    /// The sheet used when a request names none: the most recently effective one.
    pub fn default_pricing_sheet(&self) -> &PricingSheet {
        // SHEETS is a non-empty constant, and the last entry is the latest.
        &self.sheets[self.sheets.len() - 1]
    }

    /// The team's non-zero hourly records with `start <= hour < end`, hour by hour.
    /// Usage exists only from 2025-01-01 to 2027-01-01.
    pub fn usage(
        &self,
        team: &Team,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> impl Iterator<Item = UsageRecord> + use<> {
        usage_indexed(team, start, end).map(|(hour, o, d, units)| UsageRecord {
            // Hours are clamped to the usage span, so the timestamp is always valid.
            hour: DateTime::from_timestamp(USAGE_EPOCH + hour * 3600, 0).unwrap_or_default(),
            operation: CATALOG[o].name,
            dimension: CATALOG[o].dims[d].name,
            units,
        })
    }

    /// The handler's cost: a fold over exactly the records `usage` yields.
    pub(crate) fn cost(
        &self,
        team: &Team,
        sheet: &PricingSheet,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> CostBreakdown {
        let mut units = [[0u64; MAX_DIMS]; CATALOG.len()];
        let mut usage_record_count = 0;
        for (_, o, d, n) in usage_indexed(team, start, end) {
            units[o][d] += n;
            usage_record_count += 1;
        }
        let operations = team
            .op_indices
            .iter()
            .map(|&o| OperationCost {
                operation: CATALOG[o].name,
                dimensions: CATALOG[o]
                    .dims
                    .iter()
                    .enumerate()
                    .filter_map(|(d, dim)| {
                        let price = sheet.price(CATALOG[o].name, dim.name)?.clone();
                        Some(DimensionCost {
                            price,
                            units: units[o][d],
                        })
                    })
                    .collect(),
            })
            .collect();
        CostBreakdown {
            operations,
            usage_record_count,
        }
    }
}

impl PricingSheet {
    pub fn price(&self, operation: &str, dimension: &str) -> Option<&Price> {
        self.prices
            .iter()
            .find(|p| p.operation == operation && p.dimension == dimension)
    }
}

impl DimensionCost {
    pub(crate) fn cost_nanodollars(&self) -> u64 {
        self.units * self.price.unit_price_nanodollars
    }
}

impl fmt::Debug for Team {
    // Hand-written so that debug output never shows the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Team")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("operations", &self.operations)
            .finish_non_exhaustive()
    }
}

/// Yields (hour index, operation index, dimension index, units) for non-zero usage.
fn usage_indexed(
    team: &Team,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> impl Iterator<Item = (i64, usize, usize, u64)> + use<> {
    let (seed, ops) = (team.seed, team.op_indices);
    let (first, last) = (hour_index_at_or_after(start), hour_index_at_or_after(end));
    (first..last.max(first)).flat_map(move |hour| {
        ops.iter().flat_map(move |&o| {
            CATALOG[o]
                .dims
                .iter()
                .enumerate()
                .filter_map(move |(d, dim)| {
                    let h = mix(seed ^ ((o as u64) << 56) ^ ((d as u64) << 48) ^ hour as u64);
                    if h % 100 < dim.idle_percent {
                        return None;
                    }
                    Some((hour, o, d, 1 + (h >> 8) % dim.max_units))
                })
        })
    })
}

/// Index of the first usage hour starting at or after `t`, clamped to the usage span.
fn hour_index_at_or_after(t: DateTime<Utc>) -> i64 {
    // Any sub-second part pushes a time on an hour boundary past that hour.
    let secs = t.timestamp() - USAGE_EPOCH + i64::from(t.timestamp_subsec_nanos() > 0);
    (secs + 3599).div_euclid(3600).clamp(0, USAGE_HOURS)
}
