//! Random records for property tests anywhere in the crate.

use super::{
    ChargeCategory, CostRecord, Currency, Money, Named, Period, ProviderAccountId, ProviderKind,
    Quantity, Resource, Text, UnitPrice,
};
use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use std::collections::BTreeMap;

fn at(day: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap() + Duration::days(day)
}

/// A record of random shape: every dimension drawn from a few values, some absent.
pub(crate) fn any_record() -> impl Strategy<Value = CostRecord> {
    let text =
        |values: &'static [&'static str]| proptest::sample::select(values).prop_map(Text::from);
    let optional = move |values: &'static [&'static str]| proptest::option::of(text(values));
    (
        (0usize..3, text(&["b1", "b2"]), optional(&["Billing One"])),
        proptest::option::of((text(&["p1", "p2", "p3"]), optional(&["Project"]))),
        proptest::option::of((
            text(&["r1", "r2"]),
            optional(&["Res"]),
            text(&["cluster", "vm"]),
        )),
        (
            text(&["s1", "s2", "s3"]),
            optional(&["k1", "k2"]),
            optional(&["d1", "d2"]),
        ),
        (0usize..5, 0i64..40, prop_oneof![Just(1i64), Just(31)]),
        // Now and then an amount too large for i64 nanos, or exactly the column's marker.
        prop_oneof![
            8 => -10i128.pow(12)..10i128.pow(12),
            1 => Just(i128::from(i64::MIN)),
            1 => -10i128.pow(20)..10i128.pow(20),
        ],
        proptest::option::of((0i64..1000, text(&["hours", "GB"]))),
        (
            optional(&["inv-1"]),
            proptest::option::of(text(&["rule-a", "rule-b"])),
        ),
    )
        .prop_map(
            |(
                (account, billing, billing_name),
                sub,
                resource,
                (service, sku, dimension),
                (category, day, days),
                nanos,
                quantity,
                (invoice, rule),
            )| {
                let accounts = ["team-a", "team-b", "elastic-c"];
                CostRecord {
                    provider: if account == 2 {
                        ProviderKind::Elastic
                    } else {
                        ProviderKind::TeamBilling
                    },
                    provider_account: ProviderAccountId::parse(accounts[account]).unwrap(),
                    billing_account: Named {
                        id: billing,
                        name: billing_name,
                    },
                    sub_account: sub.map(|(id, name)| Named { id, name }),
                    resource: resource.map(|(id, name, kind)| Resource { id, name, kind }),
                    service_name: service,
                    sku_id: sku,
                    charge_dimension: dimension,
                    charge_category: ChargeCategory::ALL[category],
                    charge_period: Period::new(at(day), at(day + days)).unwrap(),
                    billed_cost: Money::from_nanos(Currency::USD, nanos),
                    original_amount: Quantity {
                        value: Decimal::from_i128_with_scale(nanos, 9),
                        unit: Text::from("USD"),
                    },
                    consumed_quantity: quantity.map(|(value, unit)| Quantity {
                        value: Decimal::from(value),
                        unit,
                    }),
                    // Now and then in another currency, or a negative zero with trailing zeros
                    // (which the columns must give back as it was, sign and scale).
                    list_unit_price: match nanos.rem_euclid(6) {
                        0 => Some(UnitPrice {
                            amount: Decimal::new(125, 3),
                            currency: Currency::USD,
                        }),
                        3 => Some(UnitPrice {
                            amount: {
                                let mut zero = Decimal::new(0, 2);
                                zero.set_sign_negative(true);
                                zero
                            },
                            currency: Currency::parse("EUR").unwrap(),
                        }),
                        _ => None,
                    },
                    extensions: rule
                        .map(|r| ("x_pricing_rule_id", r))
                        .into_iter()
                        .chain(
                            invoice
                                .as_ref()
                                .map(|_| ("x_pricing_sheet_id", Text::from("ps"))),
                        )
                        .collect::<BTreeMap<_, _>>(),
                    invoice_id: invoice,
                }
            },
        )
}
