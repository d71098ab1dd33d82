//! The cache's weigher is honest: what `RecordColumns::heap_bytes` says a chunk holds is what the
//! allocator handed out for it. Counted per thread, so other tests running at once do not disturb it.

use costd::domain::{
    AccountRef, ChargeCategory, CostRecord, Currency, Money, Named, Period, ProviderAccountId,
    ProviderKind, Quantity, RecordColumns, Text,
};
use rust_decimal::Decimal;
use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    collections::BTreeMap,
};

/// The system allocator, counting the bytes live on each thread.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: every call is passed to the system allocator unchanged; the count is a thread-local cell
// with a const initializer, so reading it never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.with(|live| live.set(live.get() + layout.size() as isize));
        // SAFETY: as the caller promised for `layout`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.with(|live| live.set(live.get() - layout.size() as isize));
        // SAFETY: `ptr` came from `alloc` with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.with(|live| live.set(live.get() + new_size as isize - layout.size() as isize));
        // SAFETY: as the caller promised for `ptr` and `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

pub(crate) fn live() -> isize {
    LIVE.with(Cell::get)
}

/// Records shaped like a month of one Elastic organization's daily line items: every text made anew
/// per record, as a parser makes them.
fn records(count: usize) -> Vec<CostRecord> {
    records_from(0, 30, count)
}

/// As [`records`], over `days` days from day `first` on.
fn records_from(first: usize, days: usize, count: usize) -> Vec<CostRecord> {
    let account = AccountRef {
        id: ProviderAccountId::parse("elastic-acme").expect("valid"),
        kind: ProviderKind::Elastic,
        display_name: Text::from("Acme"),
    };
    let start = chrono::DateTime::from_timestamp(1_767_225_600, 0).expect("valid");
    (0..count)
        .map(|i| {
            let day = start + chrono::Duration::days((first + i % days) as i64);
            CostRecord {
                provider: account.kind,
                provider_account: account.id.clone(),
                billing_account: Named {
                    id: Text::from("org-1"),
                    name: Some(Text::from("Acme Corp")),
                },
                sub_account: Some(Named {
                    id: Text::from(format!("deployment-{}", i % 40)),
                    name: Some(Text::from(format!("Deployment {}", i % 40))),
                }),
                resource: Some(costd::domain::Resource {
                    id: Text::from(format!("instance-{}", i % 40)),
                    name: None,
                    kind: Text::from("elasticsearch"),
                }),
                service_name: Text::from("elasticsearch"),
                sku_id: Some(Text::from(format!("sku-{}", i % 12))),
                charge_dimension: Some(Text::from("capacity")),
                charge_category: ChargeCategory::Usage,
                charge_period: Period::new(day, day + chrono::Duration::days(1)).expect("valid"),
                billed_cost: Money::from_nanos(Currency::USD, 1_000_000 * i as i128),
                original_amount: Quantity {
                    value: Decimal::new(i as i64, 4),
                    unit: Text::from("ECU"),
                },
                consumed_quantity: Some(Quantity {
                    value: Decimal::from(24),
                    unit: Text::from("hours"),
                }),
                list_unit_price: None,
                invoice_id: None,
                extensions: BTreeMap::from([("x_line_item_name", Text::from("capacity"))]),
            }
        })
        .collect()
}

#[test]
fn the_weigher_counts_what_the_allocator_handed_out_for_a_chunk() {
    for count in [10, 1_000, 20_000] {
        let before = live();
        let columns = RecordColumns::from_records(records(count));
        let held = (live() - before) as f64;

        let estimated = columns.heap_bytes() as f64;
        assert!(
            (0.9..=1.1).contains(&(estimated / held)),
            "{count} records: the weigher says {estimated} bytes, the allocator {held}"
        );
        drop(columns);
    }
}

/// A year of small daily chunks, held at once as the cache holds them: what each chunk costs beside
/// its records (its layout inline, its own dictionary) is counted too, not only what grows with them.
#[test]
fn the_weigher_counts_what_a_year_of_ten_record_daily_chunks_holds() {
    let days = 365;
    let before = live();
    let mut chunks = Vec::with_capacity(days);
    for day in 0..days {
        chunks.push(RecordColumns::from_records(records_from(day, 1, 10)));
    }
    let held = (live() - before) as f64;

    let estimated: usize = chunks
        .iter()
        .map(|chunk| std::mem::size_of::<RecordColumns>() + chunk.heap_bytes())
        .sum();
    let estimated = estimated as f64;
    assert!(
        (0.9..=1.1).contains(&(estimated / held)),
        "{days} chunks of 10 records: the weigher says {estimated} bytes, the allocator {held}"
    );
}
