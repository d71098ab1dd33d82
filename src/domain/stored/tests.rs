//! The stored form gives back exactly what went in, and refuses what it cannot read.

use super::*;
use crate::domain::testing::any_record;
use proptest::prelude::*;

fn month() -> Period {
    let at = |text: &str| {
        DateTime::parse_from_rfc3339(text)
            .map(|at| at.with_timezone(&Utc))
            .unwrap()
    };
    Period::new(at("2026-01-01T00:00:00Z"), at("2026-02-01T00:00:00Z")).unwrap()
}

fn fetched_at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_770_000_000, 123_456_789).unwrap()
}

fn warnings() -> Vec<DataQualityWarning> {
    vec![DataQualityWarning {
        code: "TOTAL_MISMATCH",
        message: "stated 3, parts add up to 2".to_string(),
    }]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_chunk_comes_back_record_for_record(records in proptest::collection::vec(any_record(), 0..60)) {
        let columns = RecordColumns::from_records(records.clone());

        let bytes = StoredChunk::encode(month(), fetched_at(), &columns, &warnings()).unwrap();
        let stored = StoredChunk::decode(&bytes).unwrap();

        prop_assert_eq!(stored.period, month());
        prop_assert_eq!(stored.fetched_at, fetched_at());
        prop_assert_eq!(stored.warnings, warnings());
        prop_assert_eq!(stored.records, records);
    }

    #[test]
    fn any_cut_or_flipped_byte_is_an_error_or_a_valid_chunk_never_a_panic(
        records in proptest::collection::vec(any_record(), 1..20),
        at in any::<prop::sample::Index>(),
        flip in any::<u8>(),
    ) {
        let columns = RecordColumns::from_records(records);
        let bytes = StoredChunk::encode(month(), fetched_at(), &columns, &[]).unwrap();
        let cut = at.index(bytes.len());

        prop_assert!(StoredChunk::decode(&bytes[..cut]).is_err());
        let mut flipped = bytes.clone();
        flipped[cut] ^= flip | 1;
        // Either refused, or read as some other well-formed chunk: the check is that it returns.
        let _ = StoredChunk::decode(&flipped);
    }
}

#[test]
fn another_format_is_refused_by_its_number_and_other_bytes_as_no_chunk() {
    let columns = RecordColumns::from_records(Vec::new());
    let mut bytes = StoredChunk::encode(month(), fetched_at(), &columns, &[]).unwrap();
    bytes[4] = STORED_CHUNK_FORMAT + 1;

    assert_eq!(
        StoredChunk::decode(&bytes),
        Err(StoredChunkError::Format(STORED_CHUNK_FORMAT + 1))
    );
    assert_eq!(
        StoredChunk::decode(b"{\"records\":[]}"),
        Err(StoredChunkError::NotAChunk)
    );
}

#[test]
fn a_record_is_a_few_dozen_bytes_when_its_texts_repeat() {
    let records: Vec<CostRecord> = proptest::strategy::ValueTree::current(
        &proptest::collection::vec(any_record(), 1000)
            .new_tree(&mut proptest::test_runner::TestRunner::deterministic())
            .unwrap(),
    );
    let columns = RecordColumns::from_records(records);

    let bytes = StoredChunk::encode(month(), fetched_at(), &columns, &[]).unwrap();

    assert!(
        bytes.len() < 1000 * 48,
        "{} bytes for 1,000 records",
        bytes.len()
    );
}
