//! A real redis-server per test: Debian's binary (installed by scripts/install-tools) on a free
//! loopback port, in a temporary directory of its own, without persistence, killed when dropped.
//! Readiness is read from its own log line, never waited for by time. Self-contained, so
//! `benches/replicas.rs` includes this same file.

use std::{net::TcpListener, process::Stdio, time::Duration};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// Longest a start may take before the caller fails instead of hanging.
const STARTUP_PATIENCE: Duration = Duration::from_secs(20);

pub struct RedisServer {
    port: u16,
    password: Option<String>,
    /// Serving TLS only (`--port 0`), with the certificate files in `dir`.
    tls: bool,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A server that asks every client for `password`.
    pub async fn start_with_password(password: &str) -> Self {
        Self::start_with(Some(password.to_string())).await
    }

    async fn start_with(password: Option<String>) -> Self {
        let mut server = Self::unstarted(password);
        server.run().await;
        server
    }

    /// A server speaking only TLS, with this certificate chain and key (PEM) for 127.0.0.1, and
    /// asking `password`; `ca` is written beside them, as redis-server wants one.
    pub async fn start_tls(cert: &str, key: &str, ca: &str, password: &str) -> Self {
        let mut server = Self::unstarted(Some(password.to_string()));
        server.tls = true;
        for (name, pem) in [("server.crt", cert), ("server.key", key), ("ca.crt", ca)] {
            std::fs::write(server.dir.path().join(name), pem).expect("written");
        }
        server.run().await;
        server
    }

    fn unstarted(password: Option<String>) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        RedisServer {
            port,
            password,
            tls: false,
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        }
    }

    /// `redis[s]://[:password@]127.0.0.1:port`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        match &self.password {
            Some(password) => format!("{scheme}://:{password}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// A plain connection of the test's own, to read or change what costd stored.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("a client")
            .get_multiplexed_async_connection()
            .await
            .expect("connected")
    }

    /// Kills the server (SIGKILL): its clients see the connection drop, as in a crash.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("killed");
        }
    }

    /// Starts the server again on the same port (and directory).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.run().await;
    }

    async fn run(&mut self) {
        let mut command = Command::new("redis-server");
        if self.tls {
            let file = |name: &str| self.dir.path().join(name);
            command
                .args(["--port", "0", "--tls-port"])
                .arg(self.port.to_string())
                .arg("--tls-cert-file")
                .arg(file("server.crt"))
                .arg("--tls-key-file")
                .arg(file("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(file("ca.crt"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            command.arg("--port").arg(self.port.to_string());
        }
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        if let Some(password) = &self.password {
            command.arg("--requirepass").arg(password);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server runs (scripts/install-tools installs it)");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = tokio::time::timeout(STARTUP_PATIENCE, async {
            while let Some(line) = lines.next_line().await.expect("readable") {
                if line.contains("Ready to accept connections") {
                    return;
                }
            }
            panic!("redis-server stopped before it was ready");
        })
        .await;
        ready.expect("redis-server ready in time");
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
    }
}
