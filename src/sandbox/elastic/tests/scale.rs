//! Tests of the big organization `SandboxOptions::elastic_scale` adds: its answers are the records'
//! sums like every org's, though instances that share a usage pattern share one computation.

use crate::sandbox::elastic::data::SCALE_LINES_PER_INSTANCE;
use crate::sandbox::elastic::seed::SCALE_USAGE_POOL;
use crate::sandbox::elastic::tests::kit::{
    SPRING_2026, e4, expected, get_as, list, range, sum, v1, v2,
};
use crate::sandbox::{ElasticScale, Sandbox, SandboxOptions};

#[tokio::test]
async fn every_instance_of_a_big_org_lists_every_line_summed_from_its_records() {
    // More instances than usage patterns, so some share one.
    let instances = SCALE_USAGE_POOL + 4;
    let options = SandboxOptions {
        elastic_scale: Some(ElasticScale { instances }),
        ..SandboxOptions::default()
    };
    let sb = Sandbox::start(options).expect("sandbox starts");
    let data = sb.dataset().elastic();
    let org = data.scale_organization().expect("the big organization");
    assert_eq!(
        data.organizations().len(),
        4,
        "the seeded three and the big one"
    );
    let want = expected(data, org, SPRING_2026);

    let body = get_as(
        &sb,
        org.id,
        &v2(org.id, "costs/instances", &range(SPRING_2026)),
    )
    .await
    .json();
    assert_eq!(e4(&body["total_ecu"]), want.total);
    let listed = list(&body, "instances");
    assert_eq!(listed.len(), instances);
    for instance in listed {
        let id = instance["id"].as_str().unwrap_or("").to_owned();
        let items = list(instance, "product_line_items");
        assert_eq!(items.len(), SCALE_LINES_PER_INSTANCE);
        assert_eq!(e4(&instance["total_ecu"]), want.instances[&id], "{id}");
        for item in items {
            let sku = item["sku"].as_str().unwrap_or("").to_owned();
            let (quantity, total) = want.lines[&(id.clone(), sku.clone())];
            assert_eq!(e4(&item["total_ecu"]), total, "{id} {sku}");
            assert_eq!(e4(&item["quantity"]["value"]), quantity, "{id} {sku}");
        }
    }

    // v1 folds the same sums into dimensions.
    let v1_body = get_as(&sb, org.id, &v1(org.id, &range(SPRING_2026)))
        .await
        .json();
    let deployments = list(&v1_body, "deployments");
    assert_eq!(deployments.len(), instances);
    assert_eq!(e4(&v1_body["total_cost"]), want.total);
    let costs: Vec<_> = deployments.iter().map(|d| d["costs"].clone()).collect();
    assert_eq!(sum(&costs, "total"), want.total);
}
