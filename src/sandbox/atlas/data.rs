//! Seeded, deterministic ground truth for the Atlas Cost Explorer emulator: orgs, credentials, projects, clusters, monthly usage.

use std::fmt;

use chrono::{Datelike, NaiveDate};

use crate::sandbox::atlas::seed::{Level, ORGS, OrgSpec, SPECS, ServiceSpec};
use crate::sandbox::mix::mix;

/// The documented `services` values, in the documented order.
pub const ATLAS_SERVICES: [&str; 18] = [
    "Atlas",
    "Clusters",
    "Storage",
    "Serverless Instances",
    "Backup",
    "Data Transfer",
    "BI Connector",
    "Premium Features",
    "Atlas Data Federation",
    "Atlas Stream Processing",
    "App Services",
    "Charts",
    "Cloud Manager",
    "Cloud Manager Standard/Premium",
    "Legacy Backup",
    "Flex Consulting",
    "Support",
    "Credits",
];

/// First month with usage (2024-01) as a year; usage spans `USAGE_MONTHS` months from it.
const FIRST_YEAR: i32 = 2024;
/// 2024-01 through 2026-12.
const USAGE_MONTHS: u32 = 36;

/// The Atlas emulator's ground truth. Tests derive expected answers from it, never from the handler.
#[derive(Debug)]
pub struct AtlasDataset {
    orgs: Vec<AtlasOrg>,
}

/// A seeded organization, with its one API key pair and one service account.
#[derive(Debug)]
pub struct AtlasOrg {
    /// 24 lowercase hex digits.
    pub id: &'static str,
    pub name: &'static str,
    pub api_key: ApiKey,
    pub service_account: ServiceAccount,
    pub projects: Vec<AtlasProject>,
    /// Services this org has charges for (a subset of [`ATLAS_SERVICES`]).
    pub services: Vec<&'static str>,
    /// One invoice id per month with usage, 2024-01 first.
    invoices: Vec<String>,
    seed: u64,
}

/// HTTP Digest credentials: the public key is the username, the private key the password.
pub struct ApiKey {
    pub public_key: String,
    pub private_key: String,
}

/// OAuth 2 client credentials for `POST /api/oauth/token`.
pub struct ServiceAccount {
    pub client_id: String,
    pub client_secret: String,
}

#[derive(Debug, PartialEq, Eq)]
pub struct AtlasProject {
    pub id: String,
    pub name: &'static str,
    pub clusters: Vec<AtlasCluster>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct AtlasCluster {
    pub id: String,
    pub name: &'static str,
    /// First month with charges.
    pub active_from: NaiveDate,
    /// First month without charges again (exclusive).
    pub active_until: NaiveDate,
    bi: bool,
}

/// One monthly charge: the finest grain the emulator knows. Rows are sums of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageItem<'a> {
    /// First day of the month.
    pub month: NaiveDate,
    pub invoice_id: &'a str,
    pub org_id: &'a str,
    pub org_name: &'a str,
    /// Absent for org-level services (Support, Credits, Premium Features).
    pub project: Option<&'a AtlasProject>,
    /// Absent for project- and org-level services.
    pub cluster: Option<&'a AtlasCluster>,
    pub service: &'static str,
    /// USD cents; negative for credits, never zero.
    pub amount_cents: i64,
}

impl AtlasDataset {
    pub fn seeded() -> Self {
        let orgs = ORGS.iter().enumerate().map(|(o, spec)| seed_org(o, spec));
        Self {
            orgs: orgs.collect(),
        }
    }

    pub fn orgs(&self) -> &[AtlasOrg] {
        &self.orgs
    }

    pub fn org(&self, id: &str) -> Option<&AtlasOrg> {
        self.orgs.iter().find(|o| o.id == id)
    }

    pub fn org_by_public_key(&self, public_key: &str) -> Option<&AtlasOrg> {
        self.orgs
            .iter()
            .find(|o| o.api_key.public_key == public_key)
    }

    pub fn org_by_client_id(&self, client_id: &str) -> Option<&AtlasOrg> {
        let mut orgs = self.orgs.iter();
        orgs.find(|o| o.service_account.client_id == client_id)
    }
}

impl AtlasOrg {
    /// Every charge of this org in months `start <= month < end`, month by month, then
    /// project, cluster and service in seeded order. Usage exists for 2024-01 .. 2026-12.
    /// The emulator's rows are folds of exactly this iterator.
    pub fn usage(&self, start: NaiveDate, end: NaiveDate) -> impl Iterator<Item = UsageItem<'_>> {
        let (first, last) = (month_index(start), month_index(end));
        (first..last.max(first)).flat_map(move |m| self.month_usage(m))
    }

    /// The invoice id of a month with usage.
    pub fn invoice_id(&self, month: NaiveDate) -> Option<&str> {
        let index = usize::try_from(month_index(month)).ok()?;
        self.invoices.get(index).map(String::as_str)
    }

    fn month_usage(&self, m: u32) -> Vec<UsageItem<'_>> {
        let mut items = Vec::new();
        let spec = |name: &str| SPECS.iter().position(|s| s.name == name);
        let used: Vec<usize> = self.services.iter().filter_map(|s| spec(s)).collect();
        let mut push = |s: usize, p: Option<usize>, c: Option<usize>| {
            let key = ((m as u64) << 48)
                ^ ((s as u64) << 40)
                ^ (p.map_or(0xff, |p| p as u64) << 32)
                ^ (c.map_or(0xff, |c| c as u64) << 24);
            let Some(amount_cents) = amount(&SPECS[s], mix(self.seed ^ key)) else {
                return;
            };
            let project = p.and_then(|p| self.projects.get(p));
            items.push(UsageItem {
                month: month_date(m),
                invoice_id: &self.invoices[m as usize],
                org_id: self.id,
                org_name: self.name,
                project,
                cluster: project.zip(c).and_then(|(p, c)| p.clusters.get(c)),
                service: SPECS[s].name,
                amount_cents,
            });
        };
        for (p, project) in self.projects.iter().enumerate() {
            let date = month_date(m);
            for (c, cluster) in project.clusters.iter().enumerate() {
                if date < cluster.active_from || date >= cluster.active_until {
                    continue;
                }
                for &s in &used {
                    let bi_only = SPECS[s].name == "BI Connector";
                    if SPECS[s].level == Level::Cluster && (!bi_only || cluster.bi) {
                        push(s, Some(p), Some(c));
                    }
                }
            }
            for &s in used.iter().filter(|&&s| SPECS[s].level == Level::Project) {
                push(s, Some(p), None);
            }
        }
        for &s in used.iter().filter(|&&s| SPECS[s].level == Level::Org) {
            push(s, None, None);
        }
        items
    }
}

/// `cents` as the JSON number text the emulator sends: shortest exact form, e.g. `51.19`, `51.1`, `-7`.
pub fn usd_text(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let (whole, frac) = (cents.unsigned_abs() / 100, cents.unsigned_abs() % 100);
    match frac {
        0 => format!("{sign}{whole}"),
        f if f % 10 == 0 => format!("{sign}{whole}.{}", f / 10),
        f => format!("{sign}{whole}.{f:02}"),
    }
}

impl fmt::Debug for ApiKey {
    // Hand-written so that debug output never shows the private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ServiceAccount {
    // Hand-written so that debug output never shows the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

fn seed_org(o: usize, spec: &OrgSpec) -> AtlasOrg {
    let seed = mix(0xa71a_5000_0000 + o as u64);
    let projects = spec
        .projects
        .iter()
        .enumerate()
        .map(|(p, &(name, clusters))| {
            let project_seed = mix(seed ^ 0x5052_4f4a ^ p as u64);
            AtlasProject {
                id: hex24(project_seed),
                name,
                clusters: clusters
                    .iter()
                    .enumerate()
                    .map(|(c, cl)| AtlasCluster {
                        id: hex24(mix(project_seed ^ 0x434c_5553 ^ c as u64)),
                        name: cl.name,
                        active_from: month_date(cl.from),
                        active_until: month_date(cl.until),
                        bi: cl.bi,
                    })
                    .collect(),
            }
        });
    let private = |k: u64| {
        let (a, b) = (mix(seed ^ k), mix(seed ^ k ^ 1));
        let (hi, lo) = ((a >> 32) as u32, (a >> 16) as u16);
        let tail = b & 0xffff_ffff_ffff;
        format!(
            "{hi:08x}-{lo:04x}-4{:03x}-8{:03x}-{tail:012x}",
            a & 0xfff,
            b >> 52
        )
    };
    let letters = mix(seed ^ 0x5055_424b);
    AtlasOrg {
        id: spec.id,
        name: spec.name,
        api_key: ApiKey {
            // Atlas public keys are eight lowercase letters; private keys are UUIDs.
            public_key: (0..8)
                .map(|i| char::from(b'a' + ((letters >> (i * 5)) % 26) as u8))
                .collect(),
            private_key: private(0x5052_4956),
        },
        service_account: ServiceAccount {
            client_id: format!("mdb_sa_id_{}", hex24(mix(seed ^ 0x5341_4944))),
            client_secret: format!(
                "mdb_sa_sk_{:016x}{:016x}",
                mix(seed ^ 0x5341_534b),
                mix(seed ^ 0x5341_534c)
            ),
        },
        projects: projects.collect(),
        services: spec.services.to_vec(),
        invoices: (0..USAGE_MONTHS)
            .map(|m| hex24(mix(seed ^ 0x494e_5600_0000 ^ m as u64)))
            .collect(),
        seed,
    }
}

/// A month's charge for one service, or `None` for an idle month.
fn amount(spec: &ServiceSpec, h: u64) -> Option<i64> {
    if h % 100 < spec.idle_percent {
        return None;
    }
    let span = (spec.max_cents - spec.min_cents + 1) as u64;
    Some(spec.min_cents + ((h >> 8) % span) as i64)
}

/// Months from 2024-01 to the month of `date` (rounded up unless it is a first of the
/// month), clamped to the usage span.
fn month_index(date: NaiveDate) -> u32 {
    let months = (date.year() - FIRST_YEAR) * 12 + date.month0() as i32;
    let rounded = months + i32::from(date.day() > 1);
    rounded.clamp(0, USAGE_MONTHS as i32) as u32
}

fn month_date(m: u32) -> NaiveDate {
    let (year, month) = (FIRST_YEAR + (m / 12) as i32, m % 12 + 1);
    // Within a few years of 2024, always a valid date.
    NaiveDate::from_ymd_opt(year, month, 1).unwrap_or_default()
}

fn hex24(x: u64) -> String {
    format!("{:016x}{:08x}", x, mix(x) as u32)
}
