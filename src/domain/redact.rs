//! Upstream text is untrusted: an upstream may echo what it was sent, the Authorization header
//! included. Before its words reach a result, a job's note, health or a log line, every configured
//! credential, and anything shaped like an Authorization value, is taken out.

use secrecy::{ExposeSecret, SecretString};

/// What replaces a credential.
pub const REDACTED: &str = "[redacted]";

/// Schemes whose next word is a credential (`Bearer eyJ…`, `ApiKey …`, `Basic …`), case-insensitive.
const SCHEMES: &[&str] = &["bearer", "basic", "apikey", "api-key", "digest", "token"];

/// Shortest secret searched for literally: shorter ones would redact ordinary words.
const MIN_SECRET_CHARS: usize = 6;

/// Takes credentials out of text. Built once from every configured credential.
#[derive(Default)]
pub struct Redactor {
    secrets: Vec<SecretString>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = SecretString>) -> Self {
        let mut secrets: Vec<SecretString> = secrets
            .into_iter()
            .filter(|secret| secret.expose_secret().chars().count() >= MIN_SECRET_CHARS)
            .collect();
        // Longest first, so a secret that contains another is taken out whole.
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.expose_secret().len()));
        Redactor { secrets }
    }

    /// `text` without any configured secret or Authorization-shaped value.
    pub fn clean(&self, text: &str) -> String {
        let mut clean = text.to_string();
        for secret in &self.secrets {
            let secret = secret.expose_secret();
            if clean.contains(secret) {
                clean = clean.replace(secret, REDACTED);
            }
        }
        without_credential_values(&clean)
    }
}

/// Replaces the value after an Authorization header name (`authorization: …`, `"Authorization":"…"`)
/// and the word after a credential scheme.
fn without_credential_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((before, word, after)) = next_word(rest) {
        out.push_str(before);
        out.push_str(word);
        rest = after;
        let lower = word.to_ascii_lowercase();
        let takes_value = match lower.as_str() {
            "authorization"
            | "proxy-authorization"
            | "x-api-key"
            | "api_key"
            | "apikey"
            | "access_token"
            | "client_secret"
            | "password" => {
                // The value follows a separator (`:`, `=`, quotes and spaces between).
                let separated = rest.trim_start_matches(['"', '\'', ' ']);
                separated.starts_with([':', '='])
            }
            _ => false,
        };
        if takes_value {
            let value_at = rest
                .find(|c: char| !matches!(c, '"' | '\'' | ' ' | ':' | '='))
                .unwrap_or(rest.len());
            out.push_str(&rest[..value_at]);
            rest = &rest[value_at..];
            // A scheme word, if any, stays; its credential goes.
            if let Some((gap, scheme, after)) =
                next_word(rest).filter(|(gap, scheme, _)| gap.is_empty() && is_scheme(scheme))
            {
                out.push_str(gap);
                out.push_str(scheme);
                rest = after;
            }
            rest = skip_credential(rest, &mut out, true);
        } else if is_scheme(&lower) {
            rest = skip_credential(rest, &mut out, false);
        }
    }
    out.push_str(rest);
    out
}

fn is_scheme(word: &str) -> bool {
    SCHEMES
        .iter()
        .any(|scheme| word.eq_ignore_ascii_case(scheme))
}

/// After a scheme: when the next word looks like a credential (a header's value always does), writes
/// the spaces and `REDACTED` instead of it.
fn skip_credential<'a>(rest: &'a str, out: &mut String, always: bool) -> &'a str {
    let spaces = rest.len() - rest.trim_start_matches(' ').len();
    let value = &rest[spaces..];
    if let Some(after) = value.strip_prefix(REDACTED) {
        out.push_str(&rest[..spaces + REDACTED.len()]);
        return after;
    }
    // A header's value runs to its quote or line end (Digest's has spaces); a scheme's is one word.
    let end = match always {
        true => value.find(['"', '\'', '\n', '\r', '}', ']', ';']),
        false => value.find(|c: char| !is_credential_char(c)),
    }
    .unwrap_or(value.len());
    let credential = &value[..end];
    let looks_like_one = credential.len() >= 8
        && credential.chars().any(|c| c.is_ascii_digit())
        && credential.chars().any(|c| c.is_ascii_alphabetic());
    if credential.is_empty() || !(always || (spaces > 0 && looks_like_one)) {
        return rest;
    }
    out.push_str(&rest[..spaces]);
    out.push_str(REDACTED);
    &value[end..]
}

fn is_credential_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '+' | '/' | '=' | '-' | ',')
}

/// The text before the next word, the word (letters, digits, `-`, `_`), and the rest.
fn next_word(text: &str) -> Option<(&str, &str, &str)> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let start = text.find(is_word)?;
    let len = text[start..]
        .find(|c: char| !is_word(c))
        .unwrap_or(text.len() - start);
    Some((
        &text[..start],
        &text[start..start + len],
        &text[start + len..],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn redactor() -> Redactor {
        Redactor::new([
            SecretString::from("team-token-0123456789"),
            SecretString::from("short"),
        ])
    }

    #[test]
    fn configured_secrets_and_authorization_values_are_taken_out() {
        let redactor = redactor();
        for (text, expected) in [
            (
                "bad token team-token-0123456789 for team acme",
                "bad token [redacted] for team acme",
            ),
            (
                "echo: Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc123",
                "echo: Authorization: Bearer [redacted]",
            ),
            (
                r#"{"headers":{"authorization":"ApiKey c29tZS1rZXk6MTIzNA=="}}"#,
                r#"{"headers":{"authorization":"ApiKey [redacted]"}}"#,
            ),
            (
                "Authorization: Digest username=pub, response=9f8e7d\nnext line",
                "Authorization: Digest [redacted]\nnext line",
            ),
            (
                "sent bearer abcDEF123456789 twice",
                "sent bearer [redacted] twice",
            ),
            ("client_secret=s3cr3tvalue1", "client_secret=[redacted]"),
        ] {
            assert_eq!(redactor.clean(text), expected, "{text}");
        }
    }

    #[test]
    fn ordinary_words_stay() {
        let redactor = redactor();
        for text in [
            "the token expired; ask for a new one",
            "Bearer token required",
            "invalid value: short for a key",
            "basic plan has no SKUs",
            "organization 5f3b1c2d4e5f6a7b8c9d0e1f not found",
        ] {
            assert_eq!(redactor.clean(text), text);
        }
    }

    proptest! {
        #[test]
        fn a_configured_secret_never_survives(
            before in "[ -~]{0,40}",
            after in "[ -~]{0,40}",
        ) {
            let redactor = redactor();
            let cleaned = redactor.clean(&format!("{before}team-token-0123456789{after}"));
            prop_assert!(!cleaned.contains("team-token-0123456789"), "{}", cleaned);
        }
    }
}
