//! The Atlas emulator's seed tables: which orgs, projects and clusters exist, and how each service's monthly amounts are drawn.

/// What a charge is attached to: cluster charges carry a project and a cluster, project
/// charges only a project, org charges neither (the "partial matches" of a project filter).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Cluster,
    Project,
    Org,
}

/// How one service's monthly amounts are generated, in cents.
pub(crate) struct ServiceSpec {
    pub(crate) name: &'static str,
    pub(crate) level: Level,
    pub(crate) min_cents: i64,
    pub(crate) max_cents: i64,
    /// Chance, in percent, that a month has no charge.
    pub(crate) idle_percent: u64,
}

const fn svc(name: &'static str, level: Level, min: i64, max: i64, idle: u64) -> ServiceSpec {
    ServiceSpec {
        name,
        level,
        min_cents: min,
        max_cents: max,
        idle_percent: idle,
    }
}

/// Services that carry data; the rest of `ATLAS_SERVICES` are valid filters that match nothing.
pub(crate) static SPECS: [ServiceSpec; 13] = [
    svc("Clusters", Level::Cluster, 5_000, 250_000, 0),
    svc("Storage", Level::Cluster, 300, 20_000, 0),
    svc("Backup", Level::Cluster, 500, 30_000, 10),
    svc("Data Transfer", Level::Cluster, 1, 15_000, 5),
    svc("BI Connector", Level::Cluster, 2_000, 9_000, 0),
    svc("Serverless Instances", Level::Project, 1, 8_000, 30),
    svc("Atlas Data Federation", Level::Project, 1, 5_000, 40),
    svc("Atlas Stream Processing", Level::Project, 1_000, 40_000, 50),
    svc("App Services", Level::Project, 1, 3_000, 20),
    svc("Charts", Level::Project, 1, 500, 50),
    svc("Premium Features", Level::Org, 10_000, 30_000, 0),
    svc("Support", Level::Org, 40_000, 60_000, 0),
    // Credits are negative: a discount applied to the invoice.
    svc("Credits", Level::Org, -150_000, -2_500, 60),
];

pub(crate) struct OrgSpec {
    pub(crate) id: &'static str,
    pub(crate) name: &'static str,
    /// Names from `SPECS` this org is charged for.
    pub(crate) services: &'static [&'static str],
    pub(crate) projects: &'static [(&'static str, &'static [ClusterSpec])],
}

/// A cluster exists for months `from..until` (indices from 2024-01); `bi` adds BI Connector charges.
pub(crate) struct ClusterSpec {
    pub(crate) name: &'static str,
    pub(crate) from: u32,
    pub(crate) until: u32,
    pub(crate) bi: bool,
}

const fn cluster(name: &'static str, from: u32, until: u32, bi: bool) -> ClusterSpec {
    ClusterSpec {
        name,
        from,
        until,
        bi,
    }
}

pub(crate) static ORGS: [OrgSpec; 3] = [
    OrgSpec {
        id: "65f0a1b2c3d4e5f60718293a",
        name: "Kestrel Freight",
        services: &[
            "Clusters",
            "Storage",
            "Backup",
            "Data Transfer",
            "BI Connector",
            "Atlas Data Federation",
            "Charts",
            "Premium Features",
            "Support",
            "Credits",
        ],
        projects: &[
            (
                "prod",
                &[
                    cluster("orders-prod", 0, 36, false),
                    cluster("events-prod", 6, 36, true),
                ],
            ),
            (
                "staging",
                &[
                    cluster("orders-staging", 0, 36, false),
                    // Terminated after 2025-03.
                    cluster("scratch", 3, 15, false),
                ],
            ),
            // No clusters: only project-level services.
            ("analytics", &[]),
        ],
    },
    OrgSpec {
        id: "66a0b1c2d3e4f5061728394b",
        name: "Lumen Health",
        services: &[
            "Clusters",
            "Storage",
            "Backup",
            "Data Transfer",
            "Serverless Instances",
            "App Services",
            "Support",
            "Credits",
        ],
        projects: &[
            (
                "ehr-prod",
                &[
                    cluster("ehr-primary", 0, 36, false),
                    cluster("ehr-archive", 0, 36, false),
                ],
            ),
            ("ehr-dev", &[cluster("ehr-dev", 8, 36, false)]),
        ],
    },
    OrgSpec {
        id: "67b1c2d3e4f506172839405c",
        name: "Quarry Games",
        services: &[
            "Clusters",
            "Storage",
            "Data Transfer",
            "Atlas Stream Processing",
            "Charts",
            "Credits",
        ],
        projects: &[
            ("leaderboards", &[cluster("Cluster0", 0, 36, false)]),
            // A non-ASCII name, so clients are exercised on JSON string escapes.
            ("matchmaking-ü", &[cluster("mm-core", 12, 36, false)]),
        ],
    },
];
