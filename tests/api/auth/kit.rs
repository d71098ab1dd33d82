//! What the caller-identity tests make for themselves: a CA and certificates (rcgen), signing keys
//! and their JWK Set, tokens, and TLS channels to the real server.

use crate::helpers::*;
use base64::Engine as _;
use costd::{
    config::{AuthConfig, FileRef, GrantConfig, JobVisibility, JwtConfig, Settings, TlsConfig},
    domain::ProviderKind,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, SanType,
};
use std::{path::PathBuf, sync::Arc};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "costd";

/// A certificate authority made for one test.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
pub struct Pair {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("a key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("a CA"),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self, serial: u64) -> Pair {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("params");
        params.serial_number = Some(serial.into());
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate naming `names` (URI SANs for `spiffe://…`, DNS SANs otherwise).
    pub fn client(&self, names: &[&str]) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.contains("://") {
                true => SanType::URI((*name).try_into().expect("ia5")),
                false => SanType::DnsName((*name).try_into().expect("ia5")),
            })
            .collect();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Pair {
        let key = KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Pair {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// A JWT signing key and its public JWK.
pub struct Signer {
    pub kid: String,
    algorithm: Algorithm,
    encoding: EncodingKey,
    pub jwk: serde_json::Value,
}

impl Signer {
    pub fn es256(kid: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("a P-256 key");
        let raw = key.public_key_raw();
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        Signer {
            kid: kid.to_string(),
            algorithm: Algorithm::ES256,
            encoding: EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("pkcs8"),
            jwk: serde_json::json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
            }),
        }
    }

    pub fn ed25519(kid: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ED25519).expect("an Ed25519 key");
        Signer {
            kid: kid.to_string(),
            algorithm: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_pem(key.serialize_pem().as_bytes()).expect("pkcs8"),
            jwk: serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig",
                "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.public_key_raw()),
            }),
        }
    }

    /// A token with these claims, signed by this key, naming `kid` in its header.
    pub fn sign_as(&self, kid: &str, claims: &serde_json::Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(kid.to_string());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signed")
    }

    pub fn sign(&self, claims: &serde_json::Value) -> String {
        self.sign_as(&self.kid, claims)
    }
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims that verify: the right issuer and audience, valid for an hour.
pub fn claims(sub: &str) -> serde_json::Value {
    serde_json::json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "exp": now() + 3600, "iat": now() })
}

pub fn grant(principal: &str, accounts: &[&str], jobs: JobVisibility) -> GrantConfig {
    GrantConfig {
        principal: principal.to_string(),
        accounts: accounts.iter().map(|a| a.to_string()).collect(),
        jobs,
    }
}

/// Files a test writes (certificates, keys, JWK Sets), removed with it.
pub struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    pub fn new() -> Self {
        Files {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `name` by renaming a fresh file over it, as cert-manager's atomic updates do.
    pub fn write(&self, name: &str, text: &str) -> FileRef {
        let fresh = self.path(&format!(".{name}.new"));
        std::fs::write(&fresh, text).expect("written");
        std::fs::rename(&fresh, self.path(name)).expect("renamed");
        FileRef {
            file: self.path(name),
        }
    }
}

/// TLS settings with `server`'s pair, and with client certificates of `client_ca` required if given.
pub fn tls(files: &Files, server: &Pair, client_ca: Option<&Ca>) -> TlsConfig {
    TlsConfig {
        cert: files.write("tls.crt", &server.cert),
        key: files.write("tls.key", &server.key),
        client_ca: client_ca.map(|ca| files.write("ca.crt", &ca.pem())),
    }
}

/// JWT settings trusting `signers`' keys, from a JWK Set file.
pub fn jwt(files: &Files, signers: &[&Signer]) -> JwtConfig {
    let keys: Vec<&serde_json::Value> = signers.iter().map(|s| &s.jwk).collect();
    JwtConfig {
        jwks: Some(files.write(
            "jwks.json",
            &serde_json::json!({ "keys": keys }).to_string(),
        )),
        jwks_url: None,
        issuer: ISSUER.to_string(),
        audience: AUDIENCE.to_string(),
        algorithms: ["RS256", "ES256", "EdDSA"].map(String::from).to_vec(),
        leeway_seconds: 5,
        principal_claim: "sub".to_string(),
        jwks_refresh_seconds: 300,
    }
}

/// costd with every demo provider kind, `tls` and `auth` as given.
pub async fn spawn_with_auth(
    tls: Option<TlsConfig>,
    auth: Option<AuthConfig>,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    spawn_app_full(
        Arc::new(costd::clock::SystemClock),
        &[
            ProviderKind::TeamBilling,
            ProviderKind::Atlas,
            ProviderKind::Elastic,
        ],
        |settings, _| {
            settings.server.tls = tls;
            settings.auth = auth;
            adjust(settings);
        },
    )
    .await
}

/// A TLS channel trusting `ca`, presenting `client` when given.
pub async fn tls_channel(app: &TestApp, ca: &Ca, client: Option<&Pair>) -> Channel {
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    if let Some(client) = client {
        config = config.identity(Identity::from_pem(&client.cert, &client.key));
    }
    within(
        Channel::from_shared(format!("https://{}", app.addr))
            .expect("uri")
            .tls_config(config)
            .expect("tls config")
            .connect(),
    )
    .await
    .expect("the TLS handshake completes")
}

/// A request carrying `authorization: Bearer <token>`.
pub fn bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}
