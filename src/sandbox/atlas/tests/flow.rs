//! Tests of the Atlas Cost Explorer emulator: the create/poll flow against the dataset, the bare 102, distinct tokens, filters and grouping, the seeded data.

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::sandbox::atlas::tests::kit::{
    access_token, bearer, body, create, expected, header, json_of, month, org_id, poll_url, query,
    rows_of,
};
use crate::sandbox::atlas::{BARE_PROCESSING, MEDIA_TYPE};
use crate::sandbox::testkit::{start, within};
use crate::sandbox::{AtlasCounters, AtlasDataset, DEFAULT_PROCESSING_POLLS, usd_text};

#[tokio::test]
async fn a_query_processes_for_the_set_polls_then_answers_the_datasets_sums() {
    let sb = start();
    let org = org_id(&sb, 0);
    let token = access_token(&sb, org).await;
    let range = ("2024-01-01", "2025-01-01");
    let query_token = create(&sb, &token, org, &body(range.0, range.1)).await;
    assert_eq!(query_token.len(), 64);
    assert!(query_token.bytes().all(|b| b.is_ascii_hexdigit()));
    let url = poll_url(&sb, org, &query_token, true);
    for _ in 0..DEFAULT_PROCESSING_POLLS {
        let response = bearer(&token, Method::GET, &url, None).await.expect("poll");
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "content-type"), Some(MEDIA_TYPE));
        assert_eq!(
            json_of(response).await,
            json!({ "status": 102, "content": {} })
        );
    }
    let response = bearer(&token, Method::GET, &url, None).await.expect("poll");
    assert_eq!(response.status(), 200);
    let raw = within(response.text()).await.expect("body");
    let body: Value = serde_json::from_str(&raw).expect("JSON");
    assert_eq!(body["status"], 200);
    let got = rows_of(&raw, &body["content"]);
    let want = expected(&sb, org, range, |_| true, false, false);
    assert_eq!(got, want);
    assert!(want.len() > 100, "{}", want.len());
    assert!(want.iter().any(|(k, &c)| k.1 == "Credits" && c < 0));
    let seeded = sb.atlas().dataset().org(org).expect("seeded");
    for row in body["content"]["usageDetails"].as_array().expect("rows") {
        assert_eq!(row["organizationId"], org);
        assert_eq!(row["organizationName"], seeded.name);
        let date = row["usageDate"]
            .as_str()
            .expect("date")
            .parse()
            .expect("date");
        assert_eq!(row["invoiceId"].as_str(), seeded.invoice_id(date));
        assert!(row.get("projectId").is_none() && row.get("clusterId").is_none());
    }
    let counters = sb.atlas().counters(org);
    let want = AtlasCounters {
        posts: 1,
        polls: 4,
        queries_created: 1,
        processing_answers: 3,
        result_answers: 1,
        rate_limited: 0,
        unversioned_accepts: 0,
    };
    assert_eq!(counters, want);
}

#[tokio::test]
async fn without_the_envelope_a_poll_is_a_bare_102_that_reqwest_cannot_read() {
    let sb = start();
    let org = org_id(&sb, 1);
    sb.atlas().set_org_processing_polls(org, 2);
    let token = access_token(&sb, org).await;
    let range = ("2025-01-01", "2025-07-01");
    let query_token = create(&sb, &token, org, &body(range.0, range.1)).await;

    // On the wire: the status line, no headers, no body, then the connection ends.
    let mut stream = within(TcpStream::connect(sb.addr()))
        .await
        .expect("connects");
    let url = poll_url(&sb, org, &query_token, false);
    let path = url.trim_start_matches(&sb.base_url());
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: sandbox\r\nauthorization: Bearer {token}\r\naccept: {MEDIA_TYPE}\r\n\r\n"
    );
    within(stream.write_all(request.as_bytes()))
        .await
        .expect("writes");
    let mut wire = Vec::new();
    within(stream.read_to_end(&mut wire))
        .await
        .expect("reads to the end");
    assert_eq!(wire, BARE_PROCESSING);

    // reqwest (hyper) skips the 1xx, waits for a final response, and finds the end instead.
    let err = bearer(&token, Method::GET, &url, None)
        .await
        .expect_err("no final response");
    assert!(err.status().is_none() && !err.is_timeout(), "{err:?}");
    assert!(format!("{err:?}").contains("IncompleteMessage"), "{err:?}");

    let response = bearer(&token, Method::GET, &url, None).await.expect("poll");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-type"), Some(MEDIA_TYPE));
    let raw = within(response.text()).await.expect("body");
    let got = rows_of(&raw, &serde_json::from_str(&raw).expect("JSON"));
    assert_eq!(got, expected(&sb, org, range, |_| true, false, false));
    let counters = sb.atlas().counters(org);
    assert_eq!(
        (counters.processing_answers, counters.result_answers),
        (2, 1)
    );
    assert_eq!((counters.posts, counters.polls), (1, 3));
}

#[tokio::test]
async fn identical_bodies_get_distinct_tokens_and_polls_are_set_per_org() {
    let sb = start();
    let (kestrel, lumen) = (org_id(&sb, 0), org_id(&sb, 1));
    sb.atlas().set_processing_polls(5);
    sb.atlas().set_org_processing_polls(lumen, 0);
    let token = access_token(&sb, kestrel).await;
    let q = body("2025-01-01", "2025-02-01");
    let (first, second) = (
        create(&sb, &token, kestrel, &q).await,
        create(&sb, &token, kestrel, &q).await,
    );
    assert_ne!(first, second, "the emulator never dedupes");
    for query_token in [&first, &second] {
        let url = poll_url(&sb, kestrel, query_token, true);
        let polled = bearer(&token, Method::GET, &url, None).await.expect("poll");
        assert_eq!(json_of(polled).await["status"], 102);
    }
    let lumen_token = access_token(&sb, lumen).await;
    let query_token = create(&sb, &lumen_token, lumen, &q).await;
    let url = poll_url(&sb, lumen, &query_token, true);
    let polled = bearer(&lumen_token, Method::GET, &url, None)
        .await
        .expect("poll");
    assert_eq!(
        json_of(polled).await["status"],
        200,
        "done at the first poll"
    );
    assert_eq!(sb.atlas().counters(kestrel).queries_created, 2);
}

#[tokio::test]
async fn filters_select_items_and_group_by_adds_project_and_cluster_columns() {
    let sb = start();
    sb.atlas().set_processing_polls(0);
    let org = sb.atlas().dataset().orgs()[0].id;
    let seeded = sb.atlas().dataset().org(org).expect("seeded");
    let token = access_token(&sb, org).await;
    let range = ("2024-06-01", "2024-09-01");
    let prod = &seeded.projects[0];
    let of_prod = |i: &crate::sandbox::UsageItem<'_>| i.project.is_some_and(|p| p.id == prod.id);

    let q = json!({ "startDate": range.0, "endDate": range.1, "projects": [prod.id], "groupBy": "projects" });
    let (raw, content) = query(&sb, &token, org, &q).await;
    assert_eq!(
        rows_of(&raw, &content),
        expected(&sb, org, range, of_prod, true, false)
    );
    for row in content["usageDetails"].as_array().expect("rows") {
        assert_eq!(
            (&row["projectId"], &row["projectName"]),
            (&json!(prod.id), &json!("prod"))
        );
        assert!(row.get("clusterId").is_none() && row.get("clusterName").is_none());
    }

    // Org-level charges have no project: only partial matches of a project filter.
    let mut partial = q.clone();
    partial["includePartialMatches"] = json!(true);
    let (raw, content) = query(&sb, &token, org, &partial).await;
    let keep = |i: &crate::sandbox::UsageItem<'_>| i.project.is_none() || of_prod(i);
    let got = rows_of(&raw, &content);
    assert_eq!(got, expected(&sb, org, range, keep, true, false));
    assert!(got.keys().any(|k| k.1 == "Support" && k.2.is_none()));

    let cluster = &prod.clusters[0];
    let q = json!({
        "startDate": range.0, "endDate": range.1, "clusters": [cluster.id],
        "services": ["Clusters", "Storage"], "groupBy": "clusters",
    });
    let (raw, content) = query(&sb, &token, org, &q).await;
    let keep = |i: &crate::sandbox::UsageItem<'_>| {
        i.cluster.is_some_and(|c| c.id == cluster.id)
            && ["Clusters", "Storage"].contains(&i.service)
    };
    let got = rows_of(&raw, &content);
    assert_eq!(got, expected(&sb, org, range, keep, true, true));
    assert_eq!(got.len(), 6, "two services over three months");
    let row = &content["usageDetails"][0];
    assert_eq!(
        (&row["clusterName"], &row["clusterId"]),
        (&json!(cluster.name), &json!(cluster.id))
    );
    assert_eq!(row["projectId"], json!(prod.id));

    let credits =
        json!({ "startDate": "2024-01-01", "endDate": "2027-01-01", "services": ["Credits"] });
    let (raw, content) = query(&sb, &token, org, &credits).await;
    let got = rows_of(&raw, &content);
    assert!(!got.is_empty() && got.values().all(|&c| c < 0), "{raw}");
    assert!(got.keys().all(|k| k.1 == "Credits"));

    let unused = json!({ "startDate": "2024-01-01", "endDate": "2027-01-01", "services": ["Cloud Manager"] });
    let foreign = json!({ "startDate": "2024-01-01", "endDate": "2027-01-01", "organizations": [org_id(&sb, 2)] });
    for q in [unused, foreign] {
        let (_, content) = query(&sb, &token, org, &q).await;
        assert_eq!(content, json!({ "usageDetails": [] }));
    }
}

#[test]
fn the_dataset_is_deterministic_with_distinct_ids_and_hidden_secrets() {
    let (a, b) = (AtlasDataset::seeded(), AtlasDataset::seeded());
    let hex24 =
        |s: &str| s.len() == 24 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let mut ids = Vec::new();
    for (x, y) in a.orgs().iter().zip(b.orgs()) {
        assert_eq!(x.id, y.id);
        assert_eq!(x.api_key.private_key, y.api_key.private_key);
        assert_eq!(x.api_key.public_key.len(), 8);
        assert!(x.service_account.client_id.starts_with("mdb_sa_id_"));
        let debug = format!("{x:?}");
        assert!(
            !debug.contains(&x.api_key.private_key)
                && !debug.contains(&x.service_account.client_secret)
        );
        ids.push(x.id.to_owned());
        for p in &x.projects {
            ids.push(p.id.clone());
            ids.extend(p.clusters.iter().map(|c| c.id.clone()));
        }
        let (from, to) = (
            "2024-01-01".parse().expect("date"),
            "2027-01-01".parse().expect("date"),
        );
        assert!(x.usage(from, to).eq(y.usage(from, to)));
    }
    assert!(ids.iter().all(|id| hex24(id)));
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "ids are distinct");
    assert_eq!(a.orgs().len(), 3);
}

#[test]
fn usage_spans_2024_to_2026_monthly_with_negative_credits() {
    let data = AtlasDataset::seeded();
    let date = |s: &str| s.parse().expect("date");
    for org in data.orgs() {
        let all: Vec<_> = org.usage(date("2000-01-01"), date("2099-01-01")).collect();
        assert_eq!(all.first().map(|i| i.month), Some(date("2024-01-01")));
        assert_eq!(all.last().map(|i| i.month), Some(date("2026-12-01")));
        assert!(
            all.iter()
                .all(|i| i.amount_cents != 0 && org.services.contains(&i.service))
        );
        assert!(
            all.iter()
                .filter(|i| i.service == "Credits")
                .all(|i| i.amount_cents < 0)
        );
        assert!(all.iter().any(|i| i.service == "Credits"));
        assert!(
            all.iter()
                .all(|i| i.cluster.is_none() || i.project.is_some())
        );
        assert!(
            all.iter()
                .all(|i| Some(i.invoice_id) == org.invoice_id(i.month))
        );
        let one = org.usage(date(&month(2025, 3)), date(&month(2025, 4)));
        assert!(one.map(|i| i.month).all(|m| m == date("2025-03-01")));
    }
    // A cluster terminated after 2025-03 has no charges after it.
    let kestrel = &data.orgs()[0];
    let scratch = &kestrel.projects[1].clusters[1];
    let late = kestrel.usage(date("2025-04-01"), date("2027-01-01"));
    assert!(late.filter_map(|i| i.cluster).all(|c| c.id != scratch.id));
}

#[test]
fn amounts_are_written_as_their_exact_decimal_text() {
    let cases = [
        (5119, "51.19"),
        (5110, "51.1"),
        (5100, "51"),
        (5, "0.05"),
        (0, "0"),
        (-250, "-2.5"),
        (-150_000, "-1500"),
        (-1, "-0.01"),
    ];
    for (cents, text) in cases {
        assert_eq!(usd_text(cents), text);
    }
}
