//! The wire → domain query parse on arbitrary messages and bytes: never a panic, and what it
//! accepts is a query every upstream can be asked.

use super::*;
use crate::domain::{Period, ProviderAccountId};
use proptest::prelude::*;
use prost::Message;

fn rules() -> QueryRules {
    QueryRules {
        known_accounts: vec![ProviderAccountId::parse("team-acme").expect("an id")],
        max_range_days: 731,
    }
}

/// Seconds near the edges that matter (the epoch, protobuf's range, chrono's) and anywhere.
fn seconds() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        -62_135_596_900i64..-62_135_596_700,
        -100i64..100,
        1_700_000_000i64..1_800_000_000,
        253_399_000_000i64..253_402_400_000,
    ]
}

fn timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    prop::option::weighted(
        0.95,
        (seconds(), prop_oneof![any::<i32>(), 0i32..1_000_000_000])
            .prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
    )
}

fn query() -> impl Strategy<Value = pb::CostQuery> {
    let texts = || prop::collection::vec(prop_oneof!["", "[a-z-]{1,12}", "\\PC{0,8}"], 0..4);
    (
        timestamp(),
        timestamp(),
        (
            prop::collection::vec(-1i32..5, 0..4),
            prop::collection::vec(
                prop_oneof![Just("team-acme".to_string()), "\\PC{0,12}"],
                0..4,
            ),
            texts(),
            texts(),
            texts(),
        ),
        prop::collection::vec(-1i32..10, 0..5),
        -1i32..5,
        prop::option::of(
            (any::<i64>(), any::<i32>())
                .prop_map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }),
        ),
    )
        .prop_map(
            |(
                start,
                end,
                (providers, accounts, subs, resources, services),
                group_by,
                granularity,
                staleness,
            )| {
                pb::CostQuery {
                    start_time: start,
                    end_time: end,
                    filter: Some(pb::CostFilter {
                        providers,
                        provider_accounts: accounts,
                        sub_accounts: subs,
                        resources,
                        services,
                    }),
                    group_by,
                    granularity,
                    max_staleness: staleness,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_query_parses_or_says_why(wire in query()) {
        match parse_query(Some(wire), &rules()) {
            Ok(query) => {
                let supported = Period::supported();
                prop_assert!(supported.contains_period(&query.period), "{}", query.period);
                prop_assert!(query.period.duration() <= chrono::Duration::days(731));
                // Every calendar piece an upstream is asked for keeps a four-digit year.
                for month in query.period.months() {
                    prop_assert!(Period::month_of(month.start()).end() <= supported.end());
                }
            }
            Err(violations) => prop_assert!(!violations.is_empty()),
        }
    }

    #[test]
    fn any_bytes_decode_and_parse_or_say_why(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        if let Ok(request) = pb::GetCostsRequest::decode(bytes.as_slice()) {
            let _ = parse_query(request.query, &rules());
        }
    }
}
