//! Atlas authentication: HTTP Digest (RFC 7616 with MD5 and qop=auth, as Atlas challenges) for API keys, and OAuth 2 client credentials for service accounts.

use crate::sync::lock;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use md5::{Digest, Md5};

use crate::sandbox::atlas::data::{AtlasDataset, AtlasOrg};
use crate::sandbox::atlas::reply::{self as reply, Answer};
use crate::sandbox::atlas::state::Entropy;
use crate::sandbox::authorization::credential;
use crate::sandbox::recorder::Incoming;
use crate::sandbox::{Scope, Shared};

/// The realm Atlas names in its Digest challenges.
pub const DIGEST_REALM: &str = "MMS Public API";
/// Atlas documents nonces as short-lived; a stale one gets a fresh challenge with `stale=true`.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(300);
/// Documented lifetime of a service-account access token.
pub const ACCESS_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// Issued Digest nonces and OAuth access tokens.
#[derive(Default)]
pub(crate) struct AuthBook {
    nonces: Mutex<HashMap<String, Nonce>>,
    tokens: Mutex<HashMap<String, AccessToken>>,
}

struct Nonce {
    issued: Instant,
    /// Nonce counts already used with this nonce: a repeat is a replay.
    seen: HashSet<u32>,
}

struct AccessToken {
    org_id: &'static str,
    expires: Instant,
}

/// Why a request was not authenticated; all are 401s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    Missing,
    Invalid,
    /// A correct Digest answer to a nonce that has expired (or is unknown): retry with a new one.
    Stale,
}

impl AuthBook {
    fn nonces(&self) -> MutexGuard<'_, HashMap<String, Nonce>> {
        lock(&self.nonces)
    }

    fn tokens(&self) -> MutexGuard<'_, HashMap<String, AccessToken>> {
        lock(&self.tokens)
    }

    /// A fresh `WWW-Authenticate` Digest challenge, in the form Atlas sends.
    pub(crate) fn challenge(&self, entropy: &Entropy, now: Instant, stale: bool) -> HeaderValue {
        let bytes: Vec<u8> = (0..3).flat_map(|_| entropy.next().to_be_bytes()).collect();
        // Base64 puts '+', '/' in nonces, as real ones have; clients must quote them back.
        let nonce = STANDARD.encode(bytes);
        let mut nonces = self.nonces();
        nonces.retain(|_, n| now.saturating_duration_since(n.issued) <= NONCE_LIFETIME);
        let issued = Nonce {
            issued: now,
            seen: HashSet::new(),
        };
        nonces.insert(nonce.clone(), issued);
        let value = format!(
            r#"Digest realm="{DIGEST_REALM}", domain="", nonce="{nonce}", algorithm=MD5, qop="auth", stale={stale}"#
        );
        // Built only from base64 and fixed text, so always a valid header value.
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("Digest"))
    }

    /// The org whose credentials the request carries: a Digest answer or a live Bearer token.
    /// `uri` is the request target as sent (path and query).
    pub(crate) fn authenticate<'d>(
        &self,
        data: &'d AtlasDataset,
        headers: &HeaderMap,
        method: &Method,
        uri: &str,
        now: Instant,
    ) -> Result<&'d AtlasOrg, AuthFailure> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(AuthFailure::Missing);
        };
        let value = value.to_str().map_err(|_| AuthFailure::Invalid)?.trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("digest") {
            let params = parse_digest_params(rest).ok_or(AuthFailure::Invalid)?;
            return self.verify_digest(data, &params, method, uri, now);
        }
        if scheme.eq_ignore_ascii_case("bearer") {
            let mut tokens = self.tokens();
            let token = tokens.get(rest.trim()).ok_or(AuthFailure::Invalid)?;
            if now >= token.expires {
                tokens.remove(rest.trim());
                return Err(AuthFailure::Invalid);
            }
            return data.org(token.org_id).ok_or(AuthFailure::Invalid);
        }
        Err(AuthFailure::Invalid)
    }

    fn verify_digest<'d>(
        &self,
        data: &'d AtlasDataset,
        params: &HashMap<String, String>,
        method: &Method,
        uri: &str,
        now: Instant,
    ) -> Result<&'d AtlasOrg, AuthFailure> {
        let get = |key: &str| params.get(key).map(String::as_str);
        let invalid = AuthFailure::Invalid;
        let org = get("username")
            .and_then(|user| data.org_by_public_key(user))
            .ok_or(invalid)?;
        let md5_algorithm = get("algorithm").is_none_or(|a| a.eq_ignore_ascii_case("MD5"));
        let (nonce, nc, cnonce) = (get("nonce"), get("nc"), get("cnonce"));
        let (Some(nonce), Some(nc_text), Some(cnonce)) = (nonce, nc, cnonce) else {
            return Err(invalid);
        };
        let nc = (nc_text.len() == 8)
            .then(|| u32::from_str_radix(nc_text, 16).ok())
            .flatten()
            .ok_or(invalid)?;
        let shaped = get("realm") == Some(DIGEST_REALM)
            && md5_algorithm
            && get("qop") == Some("auth")
            && get("uri") == Some(uri)
            && !cnonce.is_empty();
        if !shaped {
            return Err(invalid);
        }
        let ha1 = md5_hex(&format!(
            "{}:{DIGEST_REALM}:{}",
            org.api_key.public_key, org.api_key.private_key
        ));
        let ha2 = md5_hex(&format!("{method}:{uri}"));
        let expected = md5_hex(&format!("{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}"));
        if !get("response").is_some_and(|r| r.eq_ignore_ascii_case(&expected)) {
            return Err(invalid);
        }
        // Nonce checks come after the password is proven: `stale` only tells a caller who
        // knows it to retry with a fresh nonce (RFC 7616 §3.3).
        let mut nonces = self.nonces();
        let Some(issued) = nonces.get_mut(nonce) else {
            return Err(AuthFailure::Stale);
        };
        if now.saturating_duration_since(issued.issued) > NONCE_LIFETIME {
            nonces.remove(nonce);
            return Err(AuthFailure::Stale);
        }
        if !issued.seen.insert(nc) {
            return Err(invalid);
        }
        Ok(org)
    }

    /// Issues a Bearer token for `org`, valid for [`ACCESS_TOKEN_LIFETIME`].
    pub(crate) fn issue_token(&self, org: &AtlasOrg, entropy: &Entropy, now: Instant) -> String {
        let token: String = (0..4).map(|_| format!("{:016x}", entropy.next())).collect();
        let token = format!("mdb_sa_at_{token}");
        let mut tokens = self.tokens();
        tokens.retain(|_, t| now < t.expires);
        let expires = now + ACCESS_TOKEN_LIFETIME;
        tokens.insert(
            token.clone(),
            AccessToken {
                org_id: org.id,
                expires,
            },
        );
        token
    }

    pub(crate) fn expire_access_tokens(&self) {
        self.tokens().clear();
    }
}

/// `POST /api/oauth/token`: client credentials in Basic auth, `grant_type=client_credentials`.
pub(crate) async fn oauth_token(
    State(shared): State<Arc<Shared>>,
    incoming: Incoming,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let method = incoming.method.clone();
    let state = shared.clone();
    let fault_state = shared.clone();
    let error = move |code| reply::render(reply::status_answer(&fault_state.atlas, code), false);
    let answer = move |_| async move {
        let grant_type = form.ok().and_then(|Form(f)| f.get("grant_type").cloned());
        reply::render(token_answer(&state, &method, &headers, grant_type), false)
    };
    shared
        .exchange(Scope::atlas_oauth(), incoming, error, answer)
        .await
}

fn token_answer(
    shared: &Shared,
    method: &Method,
    headers: &HeaderMap,
    grant_type: Option<String>,
) -> Answer {
    let atlas = &shared.atlas;
    if method != Method::POST {
        return reply::method_not_allowed("POST");
    }
    let Some(org) = basic_client(headers).and_then(|(id, secret)| {
        let org = atlas.data.org_by_client_id(&id)?;
        (org.service_account.client_secret == secret).then_some(org)
    }) else {
        let mut answer = Answer::error(
            StatusCode::UNAUTHORIZED,
            "Invalid service account client credentials.",
        );
        let challenge = HeaderValue::from_static(r#"Basic realm="MMS Public API""#);
        answer.headers.insert(header::WWW_AUTHENTICATE, challenge);
        return answer;
    };
    if grant_type.as_deref() != Some("client_credentials") {
        let description =
            "must be client_credentials, in an application/x-www-form-urlencoded body";
        return reply::invalid_fields(&[("grant_type", description)]);
    }
    let now = atlas.now();
    let token = atlas.auth.issue_token(org, atlas.entropy(), now);
    let body = serde_json::json!({
        "access_token": token,
        "expires_in": ACCESS_TOKEN_LIFETIME.as_secs(),
        "token_type": "Bearer",
    });
    let mut answer = Answer::json(StatusCode::OK, body.to_string());
    answer.plain_json = true;
    answer
        .headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    answer
}

/// `(client id, secret)` from `Authorization: Basic base64(id:secret)`.
fn basic_client(headers: &HeaderMap) -> Option<(String, String)> {
    let encoded = credential(headers, "Basic")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// The `key=value` pairs after `Digest `; values may be quoted strings with `\` escapes.
/// Keys are lowercased; `None` if the header is not of that shape.
pub(crate) fn parse_digest_params(s: &str) -> Option<HashMap<String, String>> {
    let mut params = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        if chars.peek().is_none() {
            return Some(params);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=') {
            key.push(c);
        }
        chars.next()?; // '='
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => value.push(chars.next()?),
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                value.push(c);
            }
        }
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() {
            return None;
        }
        params.insert(key, value.trim_end().to_owned());
    }
}

pub(crate) fn md5_hex(input: &str) -> String {
    hex::encode(Md5::digest(input.as_bytes()))
}
