//! The `Authorization: <scheme> <credential>` header, read the one way every emulator reads it.

use http::{HeaderMap, header};

/// The credential after `scheme` (matched case-insensitively), trimmed; `None` for another
/// scheme, a missing header or one that is not text. The credential may be empty.
pub(crate) fn credential<'h>(headers: &'h HeaderMap, scheme: &str) -> Option<&'h str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (given, credential) = value.trim().split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then(|| credential.trim())
}
