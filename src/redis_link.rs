//! One connection to the redis that replicas share, for every part that uses it (the job store, the
//! Atlas budgets): made on first use, so costd starts while redis is down; reconnecting by itself after
//! that; every call bounded by a timeout, so redis trouble is an error, never a hang. Errors carry only
//! their class: a redis error's text can name the server, and the URL is a secret.

use redis::aio::ConnectionManager;
use secrecy::{ExposeSecret, SecretString};
use std::{future::Future, time::Duration};

/// Why a call to redis did not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("redis unavailable: {0}")]
pub struct Unreachable(pub &'static str);

pub struct RedisLink {
    client: redis::Client,
    connection: tokio::sync::OnceCell<ConnectionManager>,
    timeout: Duration,
}

impl RedisLink {
    /// A link to `url` (`redis://` or `rediss://`, a password in it if any; for `rediss://`, the
    /// server's chain must lead to `ca_certificates` (PEM) when given, else to the web's roots) whose
    /// calls each give up after `timeout`, connecting included. Nothing is sent until the first call;
    /// the error names no part of the URL.
    pub fn new(
        url: &SecretString,
        ca_certificates: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, Unreachable> {
        let client = match ca_certificates {
            None => redis::Client::open(url.expose_secret())
                .map_err(|_| Unreachable("not a redis:// or rediss:// URL"))?,
            Some(pem) => redis::Client::build_with_tls(
                url.expose_secret(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                },
            )
            .map_err(|_| Unreachable("not a rediss:// URL with usable CA certificates"))?,
        };
        Ok(RedisLink {
            client,
            connection: tokio::sync::OnceCell::new(),
            timeout,
        })
    }

    /// A client for what a shared connection cannot do (a subscription).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// Runs `call` on the shared connection within the timeout, connecting first if needed.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, Unreachable>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let attempt = async {
            let connection = self
                .connection
                .get_or_try_init(|| {
                    // No retries inside a reconnect: its backoff starts at a second, longer than a
                    // call may wait, and calls would queue behind it after redis is back. Each failed
                    // call starts the next attempt instead.
                    let config = redis::aio::ConnectionManagerConfig::new()
                        .set_connection_timeout(self.timeout)
                        .set_response_timeout(self.timeout)
                        .set_number_of_retries(0);
                    ConnectionManager::new_with_config(self.client.clone(), config)
                })
                .await
                .map_err(class)?;
            match call(connection.clone()).await {
                // The connection failed before this call: the failure started a fresh connection,
                // which this call tries once, so the first call after redis returns succeeds.
                Err(error) if error.is_connection_refusal() || error.is_connection_dropped() => {
                    call(connection.clone()).await.map_err(class)
                }
                outcome => outcome.map_err(class),
            }
        };
        tokio::time::timeout(self.timeout, attempt)
            .await
            .unwrap_or(Err(Unreachable("timed out")))
    }
}

/// Only the error's class leaves: its text can name the server.
pub fn class(error: redis::RedisError) -> Unreachable {
    Unreachable(if error.is_timeout() {
        "timed out"
    } else if error.is_connection_refusal() {
        "connection refused"
    } else if error.is_connection_dropped() || error.is_io_error() {
        "connection lost"
    } else {
        "command failed"
    })
}
