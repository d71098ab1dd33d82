//! The Elastic emulator's price list: exact decimals and the SKU catalog with tiered, dated rates.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign};

use chrono::{DateTime, Utc};

use crate::sandbox::elastic::seed::{EPOCH, USAGE_DAYS, day};

/// One whole unit (1 ECU, 1 GB, 1 hour…) in ten-thousandths.
pub(crate) const UNIT: i64 = 10_000;

/// An exact decimal with at most four places, held in ten-thousandths: every ECU amount, rate
/// and quantity. JSON numbers are written from its text, so no float ever rounds one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Decimal4(i64);

/// Whether a SKU is metered per hour or per day (records start on the hour or at midnight UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grain {
    Hourly,
    Daily,
}

/// One billable SKU, the same for every instance that uses it.
#[derive(Debug)]
pub struct Sku {
    pub(crate) id: SkuId,
    pub sku: &'static str,
    pub name: &'static str,
    /// The line item `type`; for hosted SKUs it is also the v1 dimension type.
    pub item_type: &'static str,
    pub kind: Option<&'static str>,
    pub unit: &'static str,
    /// Appended to a quantity in `formatted_value` ("24 hours", "572k requests").
    quantity_suffix: &'static str,
    pub grain: Grain,
    /// Every quantity is a multiple of this (ten-thousandths), so quantity × rate has ≤ 4 dp.
    pub(crate) step: i64,
    /// v2 items grouping; hosted SKUs have "deployment" for both.
    pub product: &'static str,
    pub product_family: &'static str,
    /// Oldest first; the first starts on 2025-01-01.
    pub prices: &'static [PricePeriod],
}

/// The rates in force from one day on. More than one tier means tiered pricing.
#[derive(Debug)]
pub struct PricePeriod {
    pub(crate) from_day: i64,
    pub tiers: &'static [Tier],
}

/// A tier applies to the part of an instance's monthly quantity of the SKU from `min` whole
/// units up to the next tier's `min` (the first tier starts at 0).
#[derive(Debug)]
pub struct Tier {
    pub min: i64,
    pub rate: Decimal4,
}

/// How a SKU is measured: line item type, unit, quantity suffix, grain and quantity step.
struct Meter(&'static str, &'static str, &'static str, Grain, i64);

/// Names `CATALOG` entries; each entry's position is its id (checked at compile time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SkuId {
    EsHot8g,
    EsHot4g,
    EsWarm,
    EsFrozen,
    Kibana,
    DataIn,
    DataInternode,
    DataOut,
    SnapshotStorage,
    SnapshotApi,
    EsIngestVcu,
    EsSearchVcu,
    EsStorage,
    ObsIngest,
    ObsRetention,
    SecIngest,
    SecRetention,
    SecEndpoints,
    ServerlessDataOut,
}

/// Whole-unit step, and the 0.1-unit step of the data SKUs (whose rates have ≤ 3 dp).
const WHOLE: i64 = UNIT;
const TENTH: i64 = UNIT / 10;
/// Hosted SKUs form one v2 product whatever the grouping.
const HOSTED: (&str, &str) = ("deployment", "deployment");

const DATA_IN: Meter = Meter("data_in", "GB", " GBs", Grain::Hourly, TENTH);
const INTERNODE: Meter = Meter("data_internode", "GB", " GBs", Grain::Hourly, TENTH);
const DATA_OUT: Meter = Meter("data_out", "GB", " GBs", Grain::Hourly, TENTH);
const SNAPSHOTS: Meter = Meter("storage_bytes", "GB", " GBs", Grain::Daily, WHOLE);
const API_CALLS: Meter = Meter(
    "storage_api",
    "1000 API Calls",
    "k requests",
    Grain::Daily,
    WHOLE,
);
const INGEST_VCU: Meter = Meter("ingest", "VCU hour", " VCU hours", Grain::Hourly, WHOLE);
const SEARCH_VCU: Meter = Meter("search", "VCU hour", " VCU hours", Grain::Hourly, WHOLE);
const STORED: Meter = Meter("storage", "GB", " GBs", Grain::Daily, WHOLE);
const INGEST_GB: Meter = Meter("ingest", "GB", " GBs", Grain::Hourly, TENTH);
const RETAINED: Meter = Meter("retention", "GB", " GBs", Grain::Daily, WHOLE);
const ENDPOINTS: Meter = Meter("endpoint", "endpoint", " endpoints", Grain::Daily, WHOLE);

const JUL25: i64 = day(2025, 7, 1);
const JAN26: i64 = day(2026, 1, 1);
const APR26: i64 = day(2026, 4, 15);
const JUL26: i64 = day(2026, 7, 1);

/// Rates in ten-thousandths of an ECU. Changes land on 2025-07-01, 2026-01-01, 2026-04-15
/// (mid-month, so a month can hold two rates) and 2026-07-01.
pub(crate) static CATALOG: [Sku; 19] = [
    capacity(
        SkuId::EsHot8g,
        "gcp.es.datahot.n2.68x16x45_gcp-europe-west1_8192_3",
        "Cloud Standard, GCP europe-west1 (Belgium), gcp.es.datahot.n2.68x16x45, 8GB, 3AZ",
        &[p(0, &[t(0, 7992)]), p(JAN26, &[t(0, 8392)])],
    ),
    capacity(
        SkuId::EsHot4g,
        "gcp.es.datahot.n2.68x16x45_gcp-europe-west1_4096_2",
        "Cloud Standard, GCP europe-west1 (Belgium), gcp.es.datahot.n2.68x16x45, 4GB, 2AZ",
        &[p(0, &[t(0, 2664)]), p(JAN26, &[t(0, 2797)])],
    ),
    capacity(
        SkuId::EsWarm,
        "gcp.es.datawarm.n2.68x10x190_gcp-europe-west1_4096_2",
        "Cloud Standard, GCP europe-west1 (Belgium), gcp.es.datawarm.n2.68x10x190, 4GB, 2AZ",
        &[p(0, &[t(0, 1816)]), p(JUL25, &[t(0, 1728)])],
    ),
    capacity(
        SkuId::EsFrozen,
        "gcp.es.datafrozen.n2.68x10x95_gcp-europe-west1_4096_1",
        "Cloud Standard, GCP europe-west1 (Belgium), gcp.es.datafrozen.n2.68x10x95, 4GB, 1AZ",
        &[p(0, &[t(0, 1208)])],
    ),
    capacity(
        SkuId::Kibana,
        "gcp.kibana.n2.68x32x45_gcp-europe-west1_1024_1",
        "Cloud Standard, GCP europe-west1 (Belgium), gcp.kibana.n2.68x32x45, 1GB, 1AZ",
        &[p(0, &[t(0, 472)]), p(JAN26, &[t(0, 496)])],
    ),
    sku(
        SkuId::DataIn,
        "gcp.data-transfer-in",
        "GCP Data Transfer In",
        DATA_IN,
        HOSTED,
        FREE,
    ),
    sku(
        SkuId::DataInternode,
        "gcp.data-transfer-inter-node",
        "GCP Data Transfer Inter-Node",
        INTERNODE,
        HOSTED,
        &[p(0, &[t(0, 160)]), p(JAN26, &[t(0, 150)])],
    ),
    sku(
        SkuId::DataOut,
        "gcp.data-transfer-out",
        "GCP Data Transfer Out",
        DATA_OUT,
        HOSTED,
        &[
            p(0, &[t(0, 0), t(10, 320), t(100, 250)]),
            p(APR26, &[t(0, 0), t(10, 300), t(100, 220)]),
        ],
    ),
    sku(
        SkuId::SnapshotStorage,
        "gcp.snapshot-storage",
        "GCP Snapshot Storage",
        SNAPSHOTS,
        HOSTED,
        &[p(0, &[t(0, 10)]), p(JAN26, &[t(0, 11)])],
    ),
    sku(
        SkuId::SnapshotApi,
        "gcp.snapshot-api-1k",
        "GCP Snapshot Storage API",
        API_CALLS,
        HOSTED,
        &[p(0, &[t(0, 20)]), p(JAN26, &[t(0, 18)])],
    ),
    sku(
        SkuId::EsIngestVcu,
        "es.serverless.ingest-vcu",
        "Elasticsearch Serverless Indexing VCU",
        INGEST_VCU,
        ("elasticsearch_indexing", "elasticsearch"),
        &[p(0, &[t(0, 1400)]), p(APR26, &[t(0, 1200)])],
    ),
    sku(
        SkuId::EsSearchVcu,
        "es.serverless.search-vcu",
        "Elasticsearch Serverless Search VCU",
        SEARCH_VCU,
        ("elasticsearch_search", "elasticsearch"),
        &[p(0, &[t(0, 900)])],
    ),
    sku(
        SkuId::EsStorage,
        "es.serverless.storage",
        "Elasticsearch Serverless Search AI Lake",
        STORED,
        ("elasticsearch_storage", "elasticsearch"),
        &[p(0, &[t(0, 16)]), p(JAN26, &[t(0, 15)])],
    ),
    sku(
        SkuId::ObsIngest,
        "obs.serverless.ingest",
        "Observability Serverless Ingest",
        INGEST_GB,
        ("observability_ingest", "observability"),
        &[
            p(0, &[t(0, 1500), t(500, 1200)]),
            p(JAN26, &[t(0, 1050), t(500, 900)]),
        ],
    ),
    sku(
        SkuId::ObsRetention,
        "obs.serverless.retention",
        "Observability Serverless Retention",
        RETAINED,
        ("observability_retention", "observability"),
        &[p(0, &[t(0, 6)])],
    ),
    sku(
        SkuId::SecIngest,
        "sec.serverless.ingest",
        "Security Serverless Ingest",
        INGEST_GB,
        ("security_ingest", "security"),
        &[p(0, &[t(0, 2500)]), p(JUL26, &[t(0, 2200)])],
    ),
    sku(
        SkuId::SecRetention,
        "sec.serverless.retention",
        "Security Serverless Retention",
        RETAINED,
        ("security_retention", "security"),
        &[p(0, &[t(0, 7)])],
    ),
    sku(
        SkuId::SecEndpoints,
        "sec.serverless.endpoints",
        "Security Serverless Endpoint Protection",
        ENDPOINTS,
        ("security_endpoints", "security"),
        &[p(0, &[t(0, 137)])],
    ),
    sku(
        SkuId::ServerlessDataOut,
        "serverless.data-out",
        "Serverless Data Out",
        DATA_OUT,
        ("data_out", "add_ons"),
        &[
            p(0, &[t(0, 0), t(50, 500)]),
            p(JAN26, &[t(0, 0), t(50, 450)]),
        ],
    ),
];

const FREE: &[PricePeriod] = &[p(0, &[t(0, 0)])];

// Ids match positions; steps divide a unit; every rate times a step stays within 4 dp;
// periods and tiers start at 0 and ascend.
const _: () = {
    let mut i = 0;
    while i < CATALOG.len() {
        let sku = &CATALOG[i];
        assert!(sku.id as usize == i && UNIT % sku.step == 0);
        assert!(!sku.prices.is_empty() && sku.prices[0].from_day == 0);
        let mut p = 0;
        while p < sku.prices.len() {
            let tiers = sku.prices[p].tiers;
            assert!(!tiers.is_empty() && tiers[0].min == 0);
            assert!(p == 0 || sku.prices[p].from_day > sku.prices[p - 1].from_day);
            let mut t = 0;
            while t < tiers.len() {
                assert!(tiers[t].rate.0 * sku.step % UNIT == 0);
                assert!(t == 0 || tiers[t].min > tiers[t - 1].min);
                t += 1;
            }
            p += 1;
        }
        i += 1;
    }
};

impl Decimal4 {
    pub const ZERO: Self = Self(0);

    pub const fn from_ten_thousandths(value: i64) -> Self {
        Self(value)
    }

    pub const fn ten_thousandths(self) -> i64 {
        self.0
    }

    /// `self × rate`; exact for catalog quantities and rates (checked above).
    pub(crate) const fn times(self, rate: Decimal4) -> Decimal4 {
        Self(self.0 * rate.0 / UNIT)
    }

    /// Always four places, as upstream formats rates ("0.7992", "28.0000").
    pub fn fixed4(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        format!("{sign}{}.{:04}", abs / UNIT as u64, abs % UNIT as u64)
    }
}

/// The shortest exact text: "0.3", "19.1808", "24".
impl fmt::Display for Decimal4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (whole, frac) = (abs / UNIT as u64, abs % UNIT as u64);
        if frac == 0 {
            return write!(f, "{sign}{whole}");
        }
        let digits = format!("{frac:04}");
        write!(f, "{sign}{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl Add for Decimal4 {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self(self.0 + other.0)
    }
}

impl AddAssign for Decimal4 {
    fn add_assign(&mut self, other: Self) {
        self.0 += other.0;
    }
}

impl Sum for Decimal4 {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, Add::add)
    }
}

impl Grain {
    pub(crate) const fn slots_per_day(self) -> i64 {
        match self {
            Grain::Hourly => 24,
            Grain::Daily => 1,
        }
    }

    pub(crate) const fn slot_seconds(self) -> i64 {
        86_400 / self.slots_per_day()
    }
}

impl Sku {
    pub fn is_tiered(&self) -> bool {
        self.prices.iter().any(|p| p.tiers.len() > 1)
    }

    /// Index of the price period in force on `day`.
    pub(crate) fn period_at(&self, day: i64) -> usize {
        self.prices
            .iter()
            .rposition(|p| p.from_day <= day)
            .unwrap_or(0)
    }

    /// `[start, end)` days of a price period; the last ends with the usage span.
    pub(crate) fn period_days(&self, period: usize) -> (i64, i64) {
        let start = self.prices.get(period).map_or(0, |p| p.from_day);
        let next = self.prices.get(period + 1);
        (start, next.map_or(USAGE_DAYS, |p| p.from_day))
    }

    pub(crate) fn format_quantity(&self, quantity: Decimal4) -> String {
        format!("{quantity}{}", self.quantity_suffix)
    }

    pub(crate) fn format_rate(&self, rate: Decimal4) -> String {
        format!("{} per {}", rate.fixed4(), self.unit)
    }
}

impl PricePeriod {
    /// Midnight UTC of the first day these rates apply.
    pub fn starts(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(EPOCH + self.from_day * 86_400, 0).unwrap_or_default()
    }
}

const fn t(min: i64, rate: i64) -> Tier {
    Tier {
        min,
        rate: Decimal4(rate),
    }
}

const fn p(from_day: i64, tiers: &'static [Tier]) -> PricePeriod {
    PricePeriod { from_day, tiers }
}

/// A capacity SKU: metered in hours, one per hour, of Kibana or of Elasticsearch.
const fn capacity(
    id: SkuId,
    sku_id: &'static str,
    name: &'static str,
    prices: &'static [PricePeriod],
) -> Sku {
    let meter = Meter("capacity", "hour", " hours", Grain::Hourly, WHOLE);
    let mut s = sku(id, sku_id, name, meter, HOSTED, prices);
    s.kind = Some(if matches!(id, SkuId::Kibana) {
        "kibana"
    } else {
        "elasticsearch"
    });
    s
}

const fn sku(
    id: SkuId,
    sku: &'static str,
    name: &'static str,
    Meter(item_type, unit, quantity_suffix, grain, step): Meter,
    (product, product_family): (&'static str, &'static str),
    prices: &'static [PricePeriod],
) -> Sku {
    Sku {
        id,
        sku,
        name,
        item_type,
        kind: None,
        unit,
        quantity_suffix,
        grain,
        step,
        product,
        product_family,
        prices,
    }
}
