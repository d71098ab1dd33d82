//! How the client commands reach a server: `http://` or `https://` (with `--ca-cert`, and a client
//! certificate for mTLS), and a bearer token from `--token-file` or `COSTD_TOKEN`, sent on every call.

use crate::config::ENV_CLIENT_TOKEN;
use std::path::PathBuf;
use tonic::{
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

/// A channel that sends the caller's token with every call.
pub type Connected = InterceptedService<Channel, Bearer>;

#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The costd server: `http://host:port`, or `https://host:port` for TLS.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub addr: String,
    /// PEM CA certificate the server's certificate must chain to (https; else the web's roots).
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for servers that require one (mTLS); with --client-key.
    #[arg(long, requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// A file holding a bearer JWT (else the COSTD_TOKEN environment variable).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// Adds `authorization: Bearer <token>` (marked sensitive) to every call.
#[derive(Clone)]
pub struct Bearer(Option<AsciiMetadataValue>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl Connection {
    pub async fn connect(&self) -> Result<Connected, String> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let mut endpoint = Channel::from_shared(self.addr.clone())
            .map_err(|e| format!("`{}` is not an address: {e}", self.addr))?;
        if self.addr.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            tls = match &self.ca_cert {
                Some(path) => tls.ca_certificate(Certificate::from_pem(read(path)?)),
                None => tls.with_webpki_roots(),
            };
            if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("cannot set up TLS: {e}"))?;
        } else if self.ca_cert.is_some() || self.client_cert.is_some() {
            return Err("--ca-cert and --client-cert need an https:// address".to_string());
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.addr))?;
        Ok(InterceptedService::new(channel, Bearer(self.token()?)))
    }

    fn token(&self) -> Result<Option<AsciiMetadataValue>, String> {
        let token = match &self.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            ),
            None => std::env::var(ENV_CLIENT_TOKEN).ok(),
        };
        let Some(token) = token
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
        else {
            return Ok(None);
        };
        // The error names the source, never the token.
        let mut value = AsciiMetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| "the token is not printable ASCII".to_string())?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}
