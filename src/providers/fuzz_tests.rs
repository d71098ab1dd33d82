//! Every provider's parse + normalize on arbitrary bytes and on mutations of documented bodies
//! (10,000 cases per provider): never a panic, and a body that parses either yields records that add
//! up to its stated total or says that it does not (a data-quality warning).

use super::{ChunkData, atlas, elastic, team};
use crate::domain::{AccountRef, NANOS_PER_UNIT, Period, ProviderAccountId, ProviderKind, Text};
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;

const CASES: u32 = 10_000;

const TEAM_BODY: &str = r#"{"teamId":"t1","pricingSheetId":"ps","startDate":"2026-01-01T00:00:00Z",
"endDate":"2026-02-01T00:00:00Z","operationCosts":[{"operationType":"query","dimensions":[
{"dimension":"rows","units":3,"unitPriceNanodollars":7,"costNanodollars":1500000001,"costUsd":1.500000001,"pricingRuleId":"r1"},
{"dimension":"bytes","units":2.5,"unitPriceNanodollars":4,"costNanodollars":10,"costUsd":0.00000001,"pricingRuleId":"r2"}],
"totalCostNanodollars":1500000011,"totalCostUsd":1.500000011}],"totalCostNanodollars":1500000011,
"totalCostUsd":1.500000011,"usageRecordCount":2,"calculatedAt":"2026-02-01T00:00:05Z"}"#;

const ELASTIC_V1_BODY: &str = r#"{"total_cost":3.5,"deployments":[{"deployment_id":"d1","deployment_name":"Search",
"hourly_rate":0.01,"costs":{"total":3.5,"dimensions":[{"type":"capacity","cost":3},{"type":"data_out","cost":0.5}]},
"period":{"start":"2026-01-01T00:00:00+00:00","end":"2026-02-01T00:00:00+00:00"}}]}"#;

const ELASTIC_V2_BODY: &str = r#"{"total_ecu":4.25,"instances":[{"id":"d1","name":"Search","type":"elasticsearch",
"total_ecu":4.25,"product_line_items":[{"name":"gp name","sku":"gp","type":"capacity","unit":"hour","kind":"compute",
"total_ecu":4,"quantity":{"value":400,"formatted_value":"400 hours"},"rate":{"value":0.01,"formatted_value":"0.01 per hour"},
"display_quantity":{"value":1,"formatted_value":"1","type":"default"},"quantities":[]},{"name":"out name","sku":"out",
"type":"data_out","unit":"GB","kind":"data","total_ecu":0.25,"quantity":{"value":25,"formatted_value":"25 GB"},
"rate":{"value":0.01,"formatted_value":"0.01 per GB"},"display_quantity":{"value":1,"formatted_value":"1","type":"default"},
"quantities":[]}]}]}"#;

const ATLAS_BODY: &str = r#"{"usageDetails":[{"invoiceId":"inv1","organizationId":"5f3b1c2d4e5f6a7b8c9d0e1f",
"organizationName":"Kubecost","projectId":"aaaaaaaaaaaaaaaaaaaaaaaa","projectName":"prod","clusterId":"bbbbbbbbbbbbbbbbbbbbbbbb",
"clusterName":"orders","service":"Clusters","usageAmount":51.19,"usageDate":"2026-01-01"},
{"service":"Credits","usageAmount":-2.5,"usageDate":"2026-01-01"}]}"#;

fn account(kind: ProviderKind) -> AccountRef {
    AccountRef {
        id: ProviderAccountId::parse("fuzzed").expect("a valid id"),
        kind,
        display_name: Text::from("Fuzzed"),
    }
}

fn january() -> Period {
    let at = |text: &str| {
        DateTime::parse_from_rfc3339(text)
            .expect("a valid instant")
            .with_timezone(&Utc)
    };
    Period::new(at("2026-01-01T00:00:00Z"), at("2026-02-01T00:00:00Z")).expect("a period")
}

/// Arbitrary bytes, or a documented body with a few bytes replaced, inserted or removed.
fn bodies(seed: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let mutations =
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..6);
    let printable = prop::collection::vec(
        (
            any::<prop::sample::Index>(),
            0u8..3,
            prop::sample::select(b"0123456789-.e\",:{}[]ntf ".to_vec()),
        ),
        1..6,
    );
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..256),
        2 => mutations.prop_map(move |edits| mutate(seed, edits)),
        // JSON's own characters keep more mutants parseable, so normalize sees them.
        4 => printable.prop_map(move |edits| mutate(seed, edits)),
    ]
}

fn mutate(seed: &str, edits: Vec<(prop::sample::Index, u8, u8)>) -> Vec<u8> {
    let mut body = seed.as_bytes().to_vec();
    for (at, op, byte) in edits {
        let i = at.index(body.len().max(1));
        match op {
            0 if i < body.len() => body[i] = byte,
            1 => body.insert(i.min(body.len()), byte),
            _ if i < body.len() => {
                body.remove(i);
            }
            _ => {}
        }
    }
    body
}

fn parsed<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    serde_json::from_slice(bytes).ok()
}

fn billed_nanos(data: &ChunkData) -> Option<i128> {
    (0..data.records.len()).try_fold(0i128, |sum, record| {
        sum.checked_add(data.records.billed_nanos(record))
    })
}

/// The stated total, in USD nanos, against what the records add up to.
fn adds_up_or_says_so(
    data: &ChunkData,
    stated_nanos: Option<Decimal>,
) -> Result<(), TestCaseError> {
    if !data.warnings.is_empty() {
        return Ok(());
    }
    let (Some(stated), Some(sum)) = (stated_nanos, billed_nanos(data)) else {
        return Ok(());
    };
    prop_assert_eq!(
        Decimal::from_i128_with_scale(sum, 0),
        stated,
        "records add up to a total other than the stated one, without a warning"
    );
    Ok(())
}

fn usd_nanos(amount: Decimal, usd_per_unit: Decimal) -> Option<Decimal> {
    amount
        .checked_mul(usd_per_unit)?
        .checked_mul(Decimal::from(NANOS_PER_UNIT))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn team_bodies(bytes in bodies(TEAM_BODY)) {
        if let Some(body) = parsed::<team::CostResponse>(&bytes) {
            let normalized = team::normalize(&account(ProviderKind::TeamBilling), "t1", january(), &body);
            if let Ok(data) = normalized {
                adds_up_or_says_so(&data, Some(body.total_cost_nanodollars.0))?;
            }
        }
    }

    #[test]
    fn elastic_bodies(v1 in bodies(ELASTIC_V1_BODY), v2 in bodies(ELASTIC_V2_BODY), charts in prop::collection::vec(any::<u8>(), 0..64)) {
        let account = account(ProviderKind::Elastic);
        let org = elastic::Organization { account: &account, organization_id: "org-1", usd_per_ecu: Decimal::ONE };
        if let Some(body) = parsed::<elastic::wire::DeploymentCosts>(&v1)
            && let Ok(data) = elastic::normalize::deployments(&org, january(), &body) {
                adds_up_or_says_so(&data, usd_nanos(body.total_cost.0, org.usd_per_ecu))?;
            }
        if let Some(body) = parsed::<elastic::wire::Instances>(&v2)
            && let Ok(data) = elastic::normalize::instances(&org, january(), &body) {
                adds_up_or_says_so(&data, usd_nanos(body.total_ecu.0, org.usd_per_ecu))?;
            }
        if let Some(body) = parsed::<elastic::wire::Charts>(&charts) {
            for bucketing in [elastic::Bucketing::Daily, elastic::Bucketing::Monthly] {
                let _ = elastic::normalize::charts(&org, january(), bucketing, &body);
            }
        }
    }

    /// Atlas states no total beside its rows: the property is that nothing panics.
    #[test]
    fn atlas_bodies(bytes in bodies(ATLAS_BODY)) {
        if let Some(body) = parsed::<atlas::wire::UsageResult>(&bytes) {
            let _ = atlas::normalize::usage_rows(&account(ProviderKind::Atlas), "5f3b1c2d4e5f6a7b8c9d0e1f", january(), &body);
        }
    }
}

#[test]
fn the_seeds_are_documented_bodies_that_add_up() {
    let team: team::CostResponse = parsed(TEAM_BODY.as_bytes()).expect("the team seed parses");
    let data = team::normalize(&account(ProviderKind::TeamBilling), "t1", january(), &team)
        .expect("normalizes");
    assert!(data.warnings.is_empty(), "{:?}", data.warnings);
    assert_eq!(billed_nanos(&data), Some(1_500_000_011));
    let account = account(ProviderKind::Elastic);
    let org = elastic::Organization {
        account: &account,
        organization_id: "org-1",
        usd_per_ecu: Decimal::ONE,
    };
    let v1: elastic::wire::DeploymentCosts = parsed(ELASTIC_V1_BODY.as_bytes()).expect("v1 parses");
    let data = elastic::normalize::deployments(&org, january(), &v1).expect("normalizes");
    assert!(data.warnings.is_empty(), "{:?}", data.warnings);
    assert_eq!(billed_nanos(&data), Some(3_500_000_000));
    let v2: elastic::wire::Instances = parsed(ELASTIC_V2_BODY.as_bytes()).expect("v2 parses");
    let data = elastic::normalize::instances(&org, january(), &v2).expect("normalizes");
    assert!(data.warnings.is_empty(), "{:?}", data.warnings);
    assert_eq!(billed_nanos(&data), Some(4_250_000_000));
    let rows: atlas::wire::UsageResult = parsed(ATLAS_BODY.as_bytes()).expect("atlas parses");
    let data = atlas::normalize::usage_rows(
        &crate::providers::fuzz_tests::account(ProviderKind::Atlas),
        "5f3b1c2d4e5f6a7b8c9d0e1f",
        january(),
        &rows,
    )
    .expect("normalizes");
    assert_eq!(data.records.len(), 2);
}
