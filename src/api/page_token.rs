//! Pages (AIP-158) for every list of both services: the page size asked, and opaque page tokens — an
//! offset bound to the query that produced it. A token altered in transit, or reused with another
//! query, is refused rather than answered with the wrong page.

use crate::{api::convert, domain::CostQuery};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use prost::Message;
use sha2::{Digest, Sha256};
use tonic_types::FieldViolation;

const VERSION: u8 = 1;
const FINGERPRINT_LEN: usize = 16;
const CHECK_LEN: usize = 8;
const TOKEN_LEN: usize = 1 + 8 + FINGERPRINT_LEN + CHECK_LEN;

/// Why a page token cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PageTokenError {
    #[error("is not a page token of this service")]
    Malformed,
    #[error("was issued for a different query; keep the query the same across pages")]
    ForeignQuery,
}

/// How many items a page holds: `default` when the caller does not say, never more than `max`.
#[derive(Debug, Clone, Copy)]
pub struct PageSizes {
    pub default: usize,
    pub max: usize,
}

/// A checked page request: where it starts, how many it holds, and what its tokens are bound to.
#[derive(Debug, Clone)]
pub struct PageRequest {
    offset: usize,
    size: usize,
    fingerprint: [u8; FINGERPRINT_LEN],
}

impl PageRequest {
    /// Checks `page_size` and `page_token`, adding what is wrong to `violations`. Without a
    /// `fingerprint` (the query itself is invalid) the token cannot be checked and is not.
    pub fn parse(
        page_size: i32,
        page_token: &str,
        sizes: PageSizes,
        fingerprint: Option<[u8; FINGERPRINT_LEN]>,
        violations: &mut Vec<FieldViolation>,
    ) -> PageRequest {
        let size = match page_size {
            0 => sizes.default,
            size if size < 0 => {
                violations.push(FieldViolation::new("page_size", "must not be negative"));
                0
            }
            size => usize::try_from(size).unwrap_or(usize::MAX).min(sizes.max),
        };
        let offset = match (page_token, &fingerprint) {
            ("", _) | (_, None) => 0,
            (token, Some(fingerprint)) => match decode(token, fingerprint) {
                Ok(offset) => usize::try_from(offset).unwrap_or(usize::MAX),
                Err(error) => {
                    violations.push(FieldViolation::new("page_token", error.to_string()));
                    0
                }
            },
        };
        PageRequest {
            offset,
            size,
            fingerprint: fingerprint.unwrap_or_default(),
        }
    }

    /// This page of `items`, and the token of the next page (empty after the last).
    pub fn slice<'a, T>(&self, items: &'a [T]) -> (&'a [T], String) {
        let start = self.offset.min(items.len());
        let end = start.saturating_add(self.size).min(items.len());
        let next = if end < items.len() {
            encode(end as u64, &self.fingerprint)
        } else {
            String::new()
        };
        (&items[start..end], next)
    }
}

/// What identifies a query across pages: its canonical wire form, hashed.
pub fn fingerprint(query: &CostQuery) -> [u8; FINGERPRINT_LEN] {
    fingerprint_bytes(&convert::query_to_proto(query).encode_to_vec())
}

/// A fingerprint of any canonical bytes that pages are bound to.
pub fn fingerprint_bytes(canonical: &[u8]) -> [u8; FINGERPRINT_LEN] {
    let digest = Sha256::digest(canonical);
    let mut fingerprint = [0u8; FINGERPRINT_LEN];
    fingerprint.copy_from_slice(&digest[..FINGERPRINT_LEN]);
    fingerprint
}

pub fn encode(offset: u64, fingerprint: &[u8; FINGERPRINT_LEN]) -> String {
    let mut bytes = Vec::with_capacity(TOKEN_LEN);
    bytes.push(VERSION);
    bytes.extend_from_slice(&offset.to_be_bytes());
    bytes.extend_from_slice(fingerprint);
    let check = check(&bytes);
    bytes.extend_from_slice(&check);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The offset a token stands for, if it is intact and belongs to `fingerprint`'s query.
pub fn decode(token: &str, fingerprint: &[u8; FINGERPRINT_LEN]) -> Result<u64, PageTokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| PageTokenError::Malformed)?;
    if bytes.len() != TOKEN_LEN || bytes[0] != VERSION {
        return Err(PageTokenError::Malformed);
    }
    let (payload, sent_check) = bytes.split_at(TOKEN_LEN - CHECK_LEN);
    if check(payload) != sent_check {
        return Err(PageTokenError::Malformed);
    }
    if &payload[9..] != fingerprint {
        return Err(PageTokenError::ForeignQuery);
    }
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&payload[1..9]);
    Ok(u64::from_be_bytes(offset))
}

/// An integrity check, not a secret: the token grants nothing the query itself does not.
fn check(payload: &[u8]) -> [u8; CHECK_LEN] {
    let digest = Sha256::new_with_prefix(b"costd page token")
        .chain_update(payload)
        .finalize();
    let mut check = [0u8; CHECK_LEN];
    check.copy_from_slice(&digest[..CHECK_LEN]);
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_tampering_and_other_queries() {
        let mine = [7u8; FINGERPRINT_LEN];
        let token = encode(1234, &mine);
        assert_eq!(decode(&token, &mine), Ok(1234));
        assert_eq!(
            decode(&token, &[8u8; FINGERPRINT_LEN]),
            Err(PageTokenError::ForeignQuery)
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[8] ^= 1;
        assert_eq!(
            decode(&URL_SAFE_NO_PAD.encode(bytes), &mine),
            Err(PageTokenError::Malformed)
        );
        assert_eq!(decode("not a token", &mine), Err(PageTokenError::Malformed));
        assert_eq!(decode("", &mine), Err(PageTokenError::Malformed));
    }
}
