//! The Elastic emulator's calendar and seeded organizations: their instances, when each lived, and how its usage of each SKU is drawn.

use crate::sandbox::elastic::catalog::SkuId;

/// 2025-01-01T00:00:00Z as a Unix timestamp: day 0 and hour 0 of the usage span.
pub(crate) const EPOCH: i64 = 1_735_689_600;
/// First day of each month from 2025-01 to 2027-01, in days since `EPOCH`.
pub(crate) const MONTH_STARTS: [i64; 25] = {
    let mut starts = [0; 25];
    let mut i = 0;
    while i < 25 {
        starts[i] = day(2025 + i as i64 / 12, i as i64 % 12 + 1, 1);
        i += 1;
    }
    starts
};
/// Days with usage: 2025-01-01 up to (not including) 2027-01-01.
pub(crate) const USAGE_DAYS: i64 = MONTH_STARTS[24];

/// How an instance's usage of a SKU is drawn for each hour or day, in steps of the SKU.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Draw {
    Const(i64),
    Random { idle_percent: u64, lo: i64, hi: i64 },
}

/// Instance types: the v2 `type` is "deployment" or the serverless project type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceKind {
    Deployment,
    ElasticsearchProject,
    ObservabilityProject,
    SecurityProject,
}

pub(crate) struct InstanceSeed {
    pub(crate) name: &'static str,
    pub(crate) kind: InstanceKind,
    /// Alive on days `[created, ended)` since 2025-01-01.
    pub(crate) created: i64,
    pub(crate) ended: i64,
    pub(crate) lines: &'static [(SkuId, Draw)],
}

pub(crate) struct OrgSeed {
    pub(crate) id: &'static str,
    pub(crate) name: &'static str,
    pub(crate) instances: &'static [InstanceSeed],
}

/// The end of an instance that is never deleted.
const ALIVE: i64 = USAGE_DAYS;

/// Org ids are numeric like Elastic's; names match the team emulator's tenants.
pub(crate) static ORGS: [OrgSeed; 3] = [
    OrgSeed {
        id: "2417306858",
        name: "Acme Analytics",
        instances: &[
            deployment(
                "search-prod",
                0,
                ALIVE,
                &[
                    (SkuId::EsHot8g, Draw::Const(1)),
                    (SkuId::Kibana, Draw::Const(1)),
                    (SkuId::DataIn, rnd(10, 1, 80)),
                    (SkuId::DataInternode, rnd(5, 10, 120)),
                    (SkuId::DataOut, rnd(20, 1, 6)),
                    (SkuId::SnapshotStorage, rnd(0, 200, 400)),
                    (SkuId::SnapshotApi, rnd(0, 50, 900)),
                ],
            ),
            deployment(
                "logs-staging",
                day(2025, 3, 15),
                day(2026, 9, 1),
                &[
                    (SkuId::EsHot4g, Draw::Const(1)),
                    (SkuId::EsWarm, Draw::Const(1)),
                    (SkuId::DataIn, rnd(30, 1, 40)),
                    (SkuId::DataOut, rnd(50, 1, 3)),
                    (SkuId::SnapshotStorage, rnd(0, 20, 90)),
                    (SkuId::SnapshotApi, rnd(10, 10, 300)),
                ],
            ),
            // A stopped deployment whose snapshots still cost 100 GB × 0.001 = 0.1 and
            // 100k calls × 0.002 = 0.2 a day in 2025: sums that floats get wrong.
            deployment(
                "archive-snapshots",
                0,
                ALIVE,
                &[
                    (SkuId::SnapshotStorage, Draw::Const(100)),
                    (SkuId::SnapshotApi, Draw::Const(100)),
                ],
            ),
            project(
                InstanceKind::ElasticsearchProject,
                "catalog-search",
                day(2025, 6, 1),
                ALIVE,
                &[
                    (SkuId::EsIngestVcu, rnd(30, 1, 3)),
                    (SkuId::EsSearchVcu, rnd(10, 1, 4)),
                    (SkuId::EsStorage, rnd(0, 50, 600)),
                    (SkuId::ServerlessDataOut, rnd(40, 1, 3)),
                ],
            ),
            project(
                InstanceKind::ObservabilityProject,
                "apm-observability",
                0,
                ALIVE,
                &[
                    (SkuId::ObsIngest, rnd(5, 2, 15)),
                    (SkuId::ObsRetention, rnd(0, 100, 2000)),
                    (SkuId::ServerlessDataOut, rnd(40, 1, 3)),
                ],
            ),
        ],
    },
    OrgSeed {
        id: "2584193377",
        name: "Borealis Labs",
        instances: &[
            deployment(
                "main",
                0,
                ALIVE,
                &[
                    (SkuId::EsHot8g, Draw::Const(1)),
                    (SkuId::Kibana, Draw::Const(1)),
                    (SkuId::EsFrozen, Draw::Const(1)),
                    (SkuId::DataIn, rnd(10, 1, 60)),
                    (SkuId::DataInternode, rnd(5, 5, 90)),
                    (SkuId::DataOut, rnd(20, 1, 8)),
                    (SkuId::SnapshotStorage, rnd(0, 100, 300)),
                    (SkuId::SnapshotApi, rnd(0, 20, 500)),
                ],
            ),
            project(
                InstanceKind::SecurityProject,
                "siem",
                0,
                ALIVE,
                &[
                    (SkuId::SecIngest, rnd(5, 1, 20)),
                    (SkuId::SecRetention, rnd(0, 200, 1500)),
                    (SkuId::SecEndpoints, rnd(0, 20, 60)),
                    (SkuId::ServerlessDataOut, rnd(40, 1, 2)),
                ],
            ),
            project(
                InstanceKind::ElasticsearchProject,
                "vector-lab",
                0,
                day(2025, 11, 1),
                &[
                    (SkuId::EsIngestVcu, rnd(50, 1, 2)),
                    (SkuId::EsSearchVcu, rnd(20, 1, 2)),
                    (SkuId::EsStorage, rnd(0, 10, 80)),
                ],
            ),
        ],
    },
    OrgSeed {
        id: "2739951046",
        name: "Cobalt Robotics",
        instances: &[
            deployment(
                "telemetry",
                day(2025, 2, 1),
                ALIVE,
                &[
                    (SkuId::EsHot4g, Draw::Const(1)),
                    (SkuId::Kibana, Draw::Const(1)),
                    (SkuId::DataInternode, rnd(5, 1, 40)),
                    (SkuId::DataOut, rnd(30, 1, 4)),
                    (SkuId::SnapshotStorage, rnd(0, 30, 120)),
                    (SkuId::SnapshotApi, rnd(0, 10, 200)),
                ],
            ),
            project(
                InstanceKind::ObservabilityProject,
                "fleet-metrics",
                day(2025, 4, 1),
                ALIVE,
                &[
                    (SkuId::ObsIngest, rnd(10, 1, 8)),
                    (SkuId::ObsRetention, rnd(0, 50, 900)),
                    (SkuId::ServerlessDataOut, rnd(50, 1, 2)),
                ],
            ),
        ],
    },
];

/// The organization `ElasticScale` adds: its id, name and the name every instance has.
pub(crate) struct ScaleOrgSeed {
    pub(crate) id: &'static str,
    pub(crate) name: &'static str,
    pub(crate) instance_name: &'static str,
}

pub(crate) static SCALE_ORG: ScaleOrgSeed = ScaleOrgSeed {
    id: "2866420931",
    name: "Zenith Fleet",
    instance_name: "fleet-node",
};

/// Usage patterns of the big organization's instances: instance `i` draws pattern `i % POOL`.
pub(crate) const SCALE_USAGE_POOL: usize = 16;

/// Every hosted SKU once: a deployment with hot, warm and frozen tiers and Kibana, and its traffic
/// and snapshots.
pub(crate) static SCALE_LINES: [(SkuId, Draw); 10] = [
    (SkuId::EsHot8g, Draw::Const(1)),
    (SkuId::EsHot4g, Draw::Const(1)),
    (SkuId::EsWarm, Draw::Const(1)),
    (SkuId::EsFrozen, Draw::Const(1)),
    (SkuId::Kibana, Draw::Const(1)),
    (SkuId::DataIn, rnd(10, 1, 80)),
    (SkuId::DataInternode, rnd(5, 10, 120)),
    (SkuId::DataOut, rnd(20, 1, 6)),
    (SkuId::SnapshotStorage, rnd(0, 200, 400)),
    (SkuId::SnapshotApi, rnd(0, 50, 900)),
];

impl Draw {
    /// Ten-thousandths drawn for one slot; `hash` is the slot's seeded hash.
    pub(crate) fn quantity(self, hash: u64, step: i64) -> i64 {
        match self {
            Draw::Const(steps) => steps * step,
            Draw::Random { idle_percent, .. } if hash % 100 < idle_percent => 0,
            Draw::Random { lo, hi, .. } => {
                let spread = (hi - lo + 1).max(1) as u64;
                step * (lo + ((hash >> 8) % spread) as i64)
            }
        }
    }
}

impl InstanceKind {
    /// The v2 instance `type`.
    pub fn type_name(self) -> &'static str {
        match self {
            InstanceKind::Deployment => "deployment",
            InstanceKind::ElasticsearchProject => "elasticsearch",
            InstanceKind::ObservabilityProject => "observability",
            InstanceKind::SecurityProject => "security",
        }
    }

    pub fn is_deployment(self) -> bool {
        self == InstanceKind::Deployment
    }
}

/// Days since 2025-01-01 of a civil date (Howard Hinnant's days_from_civil, shifted).
pub(crate) const fn day(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468 - EPOCH / 86_400
}

/// Index of the month containing `day` (0 = 2025-01); days past the span map to 24.
pub(crate) fn month_of(day: i64) -> usize {
    MONTH_STARTS
        .partition_point(|&start| start <= day)
        .saturating_sub(1)
}

const fn rnd(idle_percent: u64, lo: i64, hi: i64) -> Draw {
    Draw::Random {
        idle_percent,
        lo,
        hi,
    }
}

const fn deployment(
    name: &'static str,
    created: i64,
    ended: i64,
    lines: &'static [(SkuId, Draw)],
) -> InstanceSeed {
    project(InstanceKind::Deployment, name, created, ended, lines)
}

const fn project(
    kind: InstanceKind,
    name: &'static str,
    created: i64,
    ended: i64,
    lines: &'static [(SkuId, Draw)],
) -> InstanceSeed {
    InstanceSeed {
        name,
        kind,
        created,
        ended,
        lines,
    }
}
