//! Tests of the team billing emulator: the seeded dataset, HTTP answers checked against it, every error.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::sandbox::team::data::DimensionCost;
use crate::sandbox::testkit::{
    JAN_2025, client, cost_url, get_cost, json, period, start, token_of, within,
};
use crate::sandbox::{Dataset, PricingSheet, SandboxHandle, UsageRecord};

/// Per (operation, dimension): (units, cost), summed record by record from the dataset.
type Expected = BTreeMap<(String, String), (u64, u64)>;

fn expected(
    sb: &SandboxHandle,
    team: &str,
    sheet: &PricingSheet,
    (start, end): (&str, &str),
) -> (Expected, u64) {
    let parse = |s: &str| s.parse::<DateTime<Utc>>().expect("test date parses");
    let team = sb.dataset().team(team).expect("seeded team");
    let mut sums = Expected::new();
    let mut records = 0;
    for r in sb.dataset().usage(team, parse(start), parse(end)) {
        let price = sheet.price(r.operation, r.dimension).expect("priced");
        let entry = sums
            .entry((r.operation.to_owned(), r.dimension.to_owned()))
            .or_default();
        entry.0 += r.units;
        entry.1 += r.units * price.unit_price_nanodollars;
        records += 1;
    }
    (sums, records)
}

/// Checks a 200 body against the dataset, and that every total is the sum of its parts.
fn assert_matches(
    sb: &SandboxHandle,
    team: &str,
    sheet: &PricingSheet,
    range: (&str, &str),
    body: &Value,
) {
    let (sums, records) = expected(sb, team, sheet, range);
    assert_eq!(body["teamId"], team);
    assert_eq!(body["pricingSheetId"], sheet.id);
    assert_eq!(body["usageRecordCount"], records);
    let seeded = sb.dataset().team(team).expect("seeded team");
    let ops = body["operationCosts"].as_array().expect("operationCosts");
    let names: Vec<&str> = ops
        .iter()
        .map(|o| o["operationType"].as_str().unwrap_or(""))
        .collect();
    let seeded_names: Vec<&str> = seeded.operations.iter().map(|(o, _)| *o).collect();
    assert_eq!(names, seeded_names);
    let mut grand = 0;
    for op in ops {
        let mut op_total = 0;
        for dim in op["dimensions"].as_array().expect("dimensions") {
            let key = (
                op["operationType"].as_str().unwrap_or("").to_owned(),
                dim["dimension"].as_str().unwrap_or("").to_owned(),
            );
            let (units, cost) = sums.get(&key).copied().unwrap_or((0, 0));
            let price = sheet.price(&key.0, &key.1).expect("priced");
            assert_eq!(dim["units"], units, "{key:?}");
            assert_eq!(dim["unitPriceNanodollars"], price.unit_price_nanodollars);
            assert_eq!(dim["costNanodollars"], cost, "{key:?}");
            assert_eq!(dim["costUsd"].as_f64(), Some(cost as f64 / 1e9));
            assert_eq!(dim["pricingRuleId"], price.pricing_rule_id.as_str());
            op_total += cost;
        }
        assert_eq!(op["totalCostNanodollars"], op_total);
        assert_eq!(op["totalCostUsd"].as_f64(), Some(op_total as f64 / 1e9));
        grand += op_total;
    }
    assert!(grand > 0 || records == 0);
    assert_eq!(body["totalCostNanodollars"], grand);
    assert_eq!(body["totalCostUsd"].as_f64(), Some(grand as f64 / 1e9));
    assert!(
        body["calculatedAt"]
            .as_str()
            .is_some_and(|t| t.parse::<DateTime<Utc>>().is_ok())
    );
}

#[tokio::test]
async fn totals_match_the_dataset_for_every_team() {
    let sb = start();
    let sheet = sb.dataset().default_pricing_sheet().clone();
    for team in ["team_acme", "team_borealis", "team_cobalt"] {
        let response = get_cost(&sb, team, &period(JAN_2025)).await;
        assert_eq!(response.status(), 200);
        let body = json(response).await;
        assert_eq!(body["startDate"], JAN_2025.0);
        assert_eq!(body["endDate"], JAN_2025.1);
        assert_matches(&sb, team, &sheet, JAN_2025, &body);
    }
}

#[tokio::test]
async fn older_sheet_is_selectable_by_id() {
    let sb = start();
    let old = sb.dataset().pricing_sheets()[0].clone();
    assert_ne!(old.id, sb.dataset().default_pricing_sheet().id);
    let range = ("2025-06-01T12:30:00+02:00", "2025-06-02T00:00:00Z");
    let query = format!("{}&pricingSheetId={}", period(range), old.id).replace('+', "%2B");
    let body = json(get_cost(&sb, "team_cobalt", &query).await).await;
    assert_matches(&sb, "team_cobalt", &old, range, &body);
    assert_eq!(body["startDate"], "2025-06-01T10:30:00Z");
}

#[tokio::test]
async fn a_range_without_usage_reports_zeros() {
    let sb = start();
    let range = ("2030-01-01T00:00:00Z", "2030-02-01T00:00:00Z");
    let body = json(get_cost(&sb, "team_borealis", &period(range)).await).await;
    let sheet = sb.dataset().default_pricing_sheet().clone();
    assert_matches(&sb, "team_borealis", &sheet, range, &body);
    assert_eq!(body["totalCostNanodollars"], 0);
    assert_eq!(body["operationCosts"].as_array().map(Vec::len), Some(3));
}

async fn send(sb: &SandboxHandle, team: &str, query: &str, auth: Option<&str>) -> (u16, Value) {
    let mut request = client().get(cost_url(sb, team, query));
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = within(request.send()).await.expect("request succeeds");
    (response.status().as_u16(), json(response).await)
}

fn assert_error(body: &Value, code: &str) {
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(body["code"], code);
    assert_eq!(body["retryable"], false);
}

#[tokio::test]
async fn missing_or_unknown_token_is_401_in_the_auth_page_form() {
    let sb = start();
    let token = token_of(&sb, "team_acme");
    let wrong = format!("Bearer {token}x");
    let basic = format!("Basic {token}");
    for auth in [
        None,
        Some(wrong.as_str()),
        Some(basic.as_str()),
        Some("Bearer"),
    ] {
        let (status, body) = send(&sb, "team_acme", &period(JAN_2025), auth).await;
        assert_eq!(status, 401, "{auth:?}");
        assert_eq!(body["error"], "UNAUTHORIZED");
        assert!(body["message"].is_string());
        assert!(
            !body.to_string().contains(&token),
            "a token must never be echoed"
        );
    }
}

#[tokio::test]
async fn another_teams_token_is_403_and_an_unknown_team_404() {
    let sb = start();
    let token = token_of(&sb, "team_borealis");
    let auth = format!("bearer {token}");
    let (status, body) = send(&sb, "team_acme", &period(JAN_2025), Some(&auth)).await;
    assert_eq!(status, 403);
    assert_error(&body, "FORBIDDEN");
    let (status, body) = send(&sb, "team_nope", &period(JAN_2025), Some(&auth)).await;
    assert_eq!(status, 404);
    assert_error(&body, "NOT_FOUND");
    assert_eq!(body["details"]["teamId"], "team_nope");
}

#[tokio::test]
async fn an_unknown_pricing_sheet_is_404() {
    let sb = start();
    let query = format!("{}&pricingSheetId=ps_1999_01", period(JAN_2025));
    let response = get_cost(&sb, "team_acme", &query).await;
    assert_eq!(response.status(), 404);
    let body = json(response).await;
    assert_error(&body, "NOT_FOUND");
    assert_eq!(body["details"]["pricingSheetId"], "ps_1999_01");
}

#[tokio::test]
async fn bad_dates_are_400_listing_each_bad_field() {
    let sb = start();
    let cases = [
        ("endDate=yesterday", vec!["startDate", "endDate"]),
        (
            "startDate=2025-01-01&endDate=2025-02-01T00:00:00Z",
            vec!["startDate"],
        ),
        (
            "startDate=2025-02-01T00:00:00Z&endDate=2025-02-01T00:00:00Z",
            vec!["endDate"],
        ),
        (
            "startDate=2025-03-01T00:00:00Z&endDate=2025-02-01T00:00:00Z",
            vec!["endDate"],
        ),
    ];
    for (query, fields) in cases {
        let response = get_cost(&sb, "team_acme", query).await;
        assert_eq!(response.status(), 400, "{query}");
        let body = json(response).await;
        assert_error(&body, "VALIDATION_ERROR");
        let got: Vec<&str> = body["details"]
            .as_array()
            .expect("details list")
            .iter()
            .map(|d| d["field"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(got, fields, "{query}");
    }
}

#[tokio::test]
async fn other_methods_are_405_in_the_error_shape() {
    let sb = start();
    let token = token_of(&sb, "team_acme");
    let request = client()
        .post(cost_url(&sb, "team_acme", &period(JAN_2025)))
        .bearer_auth(token);
    let response = within(request.send()).await.expect("request succeeds");
    assert_eq!(response.status(), 405);
    assert_error(&json(response).await, "METHOD_NOT_ALLOWED");
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("test date parses")
}

#[test]
fn seeding_is_deterministic_and_tokens_are_distinct_and_hidden() {
    let (a, b) = (Dataset::seeded(), Dataset::seeded());
    let tokens: Vec<&str> = a.teams().iter().map(|t| t.token.as_str()).collect();
    assert!(
        tokens
            .iter()
            .all(|t| t.starts_with("cat_tok_") && t.len() == 32)
    );
    assert!(tokens[0] != tokens[1] && tokens[1] != tokens[2] && tokens[0] != tokens[2]);
    for (x, y) in a.teams().iter().zip(b.teams()) {
        assert_eq!(x.token, y.token);
        assert!(!format!("{x:?}").contains(&x.token));
        let (from, to) = (at("2025-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"));
        assert!(a.usage(x, from, to).eq(b.usage(y, from, to)));
    }
}

#[test]
fn usage_is_hourly_half_open_and_limited_to_the_span() {
    let d = Dataset::seeded();
    let team = d.team("team_acme").expect("seeded");
    let hour = at("2025-03-10T07:00:00Z");
    let one = d.usage(team, hour, at("2025-03-10T08:00:00Z"));
    assert!(one.map(|r| r.hour).all(|h| h == hour));
    // A start just past an hour boundary excludes that hour.
    let late = d.usage(
        team,
        at("2025-03-10T07:00:00.001Z"),
        at("2025-03-10T08:00:00Z"),
    );
    assert_eq!(late.count(), 0);
    let before = d.usage(team, at("2024-01-01T00:00:00Z"), at("2025-01-01T00:00:00Z"));
    assert_eq!(before.count(), 0);
    let after = d.usage(team, at("2027-01-01T00:00:00Z"), at("2099-01-01T00:00:00Z"));
    assert_eq!(after.count(), 0);
    let all = d.usage(team, at("2000-01-01T00:00:00Z"), at("2099-01-01T00:00:00Z"));
    let (mut first, mut last, mut n) = (None, None, 0);
    for r in all {
        assert!(r.units > 0);
        first.get_or_insert(r.hour);
        last = Some(r.hour);
        n += 1;
    }
    assert_eq!(first, Some(at("2025-01-01T00:00:00Z")));
    assert_eq!(last, Some(at("2026-12-31T23:00:00Z")));
    // 6 dimensions over 17520 hours, some of them idle.
    assert!(n > 17_520 && n < 17_520 * 6);
}

#[test]
fn teams_differ_in_operations_and_sheets_in_prices() {
    let d = Dataset::seeded();
    let ops = |id: &str| -> Vec<&str> {
        let team = d.team(id).expect("seeded");
        team.operations.iter().map(|(o, _)| *o).collect()
    };
    assert_eq!(ops("team_acme").len(), 4);
    assert!(!ops("team_borealis").contains(&"fine_tuning"));
    assert!(!ops("team_cobalt").contains(&"embedding"));
    let [old, new] = d.pricing_sheets() else {
        panic!("two sheets")
    };
    assert_eq!(d.default_pricing_sheet().id, new.id);
    assert!(old.effective_from < new.effective_from);
    for (p, q) in old.prices.iter().zip(&new.prices) {
        assert_ne!(p.unit_price_nanodollars, q.unit_price_nanodollars);
        assert_ne!(p.pricing_rule_id, q.pricing_rule_id);
    }
}

#[test]
fn cost_is_the_fold_of_the_usage_records() {
    let d = Dataset::seeded();
    let (from, to) = (at("2025-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z"));
    for team in d.teams() {
        let sheet = d.default_pricing_sheet();
        let cost = d.cost(team, sheet, from, to);
        let records: Vec<UsageRecord> = d.usage(team, from, to).collect();
        assert_eq!(cost.usage_record_count, records.len() as u64);
        let total: u64 = cost
            .operations
            .iter()
            .flat_map(|o| &o.dimensions)
            .map(DimensionCost::cost_nanodollars)
            .sum();
        let expected: u64 = records
            .iter()
            .map(|r| {
                r.units
                    * sheet
                        .price(r.operation, r.dimension)
                        .expect("priced")
                        .unit_price_nanodollars
            })
            .sum();
        assert_eq!(total, expected);
        assert!(total < 1 << 53, "exact as f64");
    }
}
