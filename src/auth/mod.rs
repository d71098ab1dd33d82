//! Caller identity: who is calling (a client certificate's SAN, a bearer JWT's subject) and what its
//! grant lets it see. TLS itself is in `tls.rs`, tokens in `jwt.rs`, grants in `grants.rs`; the API
//! layer asks [`Authenticator::authenticate`] once per call and carries the resulting [`Access`].

mod grants;
mod jwt;
pub mod tls;

pub use grants::{Access, Caller, Grant, Grants};
pub use jwt::JwtVerifier;
pub use tls::{PeerCertificate, SetupError, TlsAcceptor, TlsPeer};

use crate::config::{AuthConfig, TlsConfig};
use std::{fmt, sync::Arc};

/// An authenticated caller's name: a SPIFFE ID, a DNS name or a token's subject.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Principal(Arc<str>);

impl Principal {
    pub fn new(name: &str) -> Self {
        Principal(Arc::from(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Principal({})", self.0)
    }
}

/// Why credentials were refused. Each is a bounded metric label and a message that never repeats
/// the credential itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    MissingCredentials,
    MalformedAuthorization,
    MalformedToken,
    AlgNone,
    AlgorithmNotAllowed,
    UnknownKid,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    MissingPrincipal,
    KeysUnavailable,
    UntrustedClientCertificate,
    ClientCertificateWithoutIdentity,
}

impl Rejection {
    pub const ALL: [Rejection; 15] = [
        Rejection::MissingCredentials,
        Rejection::MalformedAuthorization,
        Rejection::MalformedToken,
        Rejection::AlgNone,
        Rejection::AlgorithmNotAllowed,
        Rejection::UnknownKid,
        Rejection::BadSignature,
        Rejection::Expired,
        Rejection::NotYetValid,
        Rejection::WrongIssuer,
        Rejection::WrongAudience,
        Rejection::MissingPrincipal,
        Rejection::KeysUnavailable,
        Rejection::UntrustedClientCertificate,
        Rejection::ClientCertificateWithoutIdentity,
    ];

    /// The metric label and, upper-cased, the ErrorInfo reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::MissingCredentials => "missing_credentials",
            Rejection::MalformedAuthorization => "malformed_authorization",
            Rejection::MalformedToken => "malformed_token",
            Rejection::AlgNone => "alg_none",
            Rejection::AlgorithmNotAllowed => "algorithm_not_allowed",
            Rejection::UnknownKid => "unknown_kid",
            Rejection::BadSignature => "bad_signature",
            Rejection::Expired => "token_expired",
            Rejection::NotYetValid => "token_not_yet_valid",
            Rejection::WrongIssuer => "wrong_issuer",
            Rejection::WrongAudience => "wrong_audience",
            Rejection::MissingPrincipal => "missing_principal",
            Rejection::KeysUnavailable => "keys_unavailable",
            Rejection::UntrustedClientCertificate => "untrusted_client_certificate",
            Rejection::ClientCertificateWithoutIdentity => "client_certificate_without_identity",
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            Rejection::MissingCredentials => {
                "no credentials: send `authorization: Bearer <JWT>` or a client certificate"
            }
            Rejection::MalformedAuthorization => "the authorization header is not `Bearer <JWT>`",
            Rejection::MalformedToken => "the bearer token is not a well-formed JWT",
            Rejection::AlgNone => "the token is unsigned (`alg: none`)",
            Rejection::AlgorithmNotAllowed => "the token's signing algorithm is not accepted",
            Rejection::UnknownKid => "the token's `kid` names no known signing key",
            Rejection::BadSignature => "the token's signature does not verify",
            Rejection::Expired => "the token has expired",
            Rejection::NotYetValid => "the token is not yet valid (`nbf`)",
            Rejection::WrongIssuer => "the token's issuer is not the one accepted",
            Rejection::WrongAudience => "the token's audience does not include this service",
            Rejection::MissingPrincipal => "the token names no principal",
            Rejection::KeysUnavailable => "the signing keys cannot be fetched now",
            Rejection::UntrustedClientCertificate => {
                "the client certificate is not issued by a trusted CA"
            }
            Rejection::ClientCertificateWithoutIdentity => {
                "the client certificate has neither a URI nor a DNS subject alternative name"
            }
        }
    }
}

/// Decides who a call is from, and with which grant.
pub struct Authenticator {
    jwt: Option<JwtVerifier>,
    /// Client certificates are required (mTLS).
    mtls: bool,
    grants: Grants,
}

/// An authenticated call no grant covers.
#[derive(Debug)]
pub struct NoGrant(pub Principal);

/// What [`Authenticator::authenticate`] refuses.
#[derive(Debug)]
pub enum Refusal {
    Unauthenticated(Rejection),
    NoGrant(NoGrant),
}

impl Authenticator {
    /// From `[auth]` and `[server.tls]`; fetches a remote JWK Set once (a failure is retried later).
    pub async fn new(
        auth: &AuthConfig,
        tls: Option<&TlsConfig>,
        http: reqwest::Client,
    ) -> Result<Self, SetupError> {
        let jwt = match &auth.jwt {
            Some(jwt) => Some(JwtVerifier::new(jwt, http).await?),
            None => None,
        };
        Ok(Authenticator {
            jwt,
            mtls: tls.is_some_and(|tls| tls.client_ca.is_some()),
            grants: Grants::new(&auth.grants),
        })
    }

    /// The caller of a request with these headers, arriving on a connection with this peer.
    pub async fn authenticate(
        &self,
        authorization: Option<&http::HeaderValue>,
        peer: Option<&TlsPeer>,
    ) -> Result<Caller, Refusal> {
        let certificate = peer.map_or(&PeerCertificate::None, |peer| &peer.certificate);
        let from_certificate = match certificate {
            PeerCertificate::Verified(principal) => Ok(principal.clone()),
            PeerCertificate::Untrusted => Err(Rejection::UntrustedClientCertificate),
            PeerCertificate::WithoutIdentity => Err(Rejection::ClientCertificateWithoutIdentity),
            PeerCertificate::None => Err(Rejection::MissingCredentials),
        };
        if self.mtls {
            // A required certificate must verify whatever else is sent.
            from_certificate.clone().map_err(Refusal::Unauthenticated)?;
        }
        let principal = match (&self.jwt, authorization) {
            (Some(jwt), Some(header)) => {
                let token = bearer(header)
                    .ok_or(Refusal::Unauthenticated(Rejection::MalformedAuthorization))?;
                jwt.verify(token).await.map_err(Refusal::Unauthenticated)?
            }
            _ => from_certificate.map_err(Refusal::Unauthenticated)?,
        };
        self.grants
            .caller(principal)
            .map_err(|principal| Refusal::NoGrant(NoGrant(principal)))
    }
}

/// The token of `Bearer <token>` (the scheme is case-insensitive, RFC 6750).
fn bearer(header: &http::HeaderValue) -> Option<&str> {
    let text = header.to_str().ok()?;
    let (scheme, token) = text.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
