//! A TCP listener whose connections a handler can cut, so a fault can drop a connection unanswered, or answer in raw bytes hyper would not send.

use crate::sync::lock;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Wraps the sandbox's TCP listener; every accepted stream carries a kill switch.
pub(crate) struct CuttableListener {
    inner: TcpListener,
}

/// A TCP stream that fails every I/O call once its kill switch is set.
pub(crate) struct CuttableStream {
    inner: TcpStream,
    killed: Arc<AtomicBool>,
    replacement: Replacement,
    /// Replacement bytes being written, and how many are out.
    replacing: Option<(Vec<u8>, usize)>,
}

/// Raw bytes to send instead of the next response hyper writes.
type Replacement = Arc<Mutex<Option<Vec<u8>>>>;

/// The kill switch of one connection, handed to handlers as connect info.
#[derive(Clone, Debug)]
pub(crate) struct ConnKill {
    killed: Arc<AtomicBool>,
    replacement: Replacement,
}

impl CuttableListener {
    pub(crate) fn new(inner: TcpListener) -> Self {
        Self { inner }
    }
}

impl Listener for CuttableListener {
    type Io = CuttableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((inner, addr)) => {
                    // Small test requests should not wait on Nagle.
                    let _ = inner.set_nodelay(true);
                    let stream = CuttableStream {
                        inner,
                        killed: Arc::new(AtomicBool::new(false)),
                        replacement: Replacement::default(),
                        replacing: None,
                    };
                    return (stream, addr);
                }
                Err(e) => {
                    // As axum's own TcpListener does: per-connection errors are
                    // harmless, others (e.g. EMFILE) get a short pause.
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) {
                        tracing::warn!(error = %e, "sandbox accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl Connected<IncomingStream<'_, CuttableListener>> for ConnKill {
    fn connect_info(stream: IncomingStream<'_, CuttableListener>) -> Self {
        ConnKill {
            killed: stream.io().killed.clone(),
            replacement: stream.io().replacement.clone(),
        }
    }
}

impl ConnKill {
    /// Makes the connection fail on its next I/O, so hyper drops it without
    /// writing the response the handler returns afterwards.
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
    }

    /// Makes the connection send `raw` instead of the next response hyper writes, then
    /// close; for answers hyper refuses to send, such as a final-looking 1xx.
    pub(crate) fn replace_response(&self, raw: Vec<u8>) {
        *lock(&self.replacement) = Some(raw);
    }
}

impl CuttableStream {
    fn check(&self) -> io::Result<()> {
        if self.killed.load(Ordering::SeqCst) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "sandbox fault: connection dropped",
            ))
        } else {
            Ok(())
        }
    }

    /// Writes pending replacement bytes, then shuts the stream and fails it; `None` when
    /// no replacement is armed, so hyper's own bytes go out.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Option<Poll<io::Result<()>>> {
        if self.replacing.is_none() {
            let armed = lock(&self.replacement).take();
            self.replacing = Some((armed?, 0));
        }
        let Self {
            inner, replacing, ..
        } = self;
        let (raw, sent) = replacing.as_mut()?;
        while *sent < raw.len() {
            match Pin::new(&mut *inner).poll_write(cx, &raw[*sent..]) {
                Poll::Ready(Ok(0)) => break,
                Poll::Ready(Ok(n)) => *sent += n,
                Poll::Ready(Err(e)) => return Some(Poll::Ready(Err(e))),
                Poll::Pending => return Some(Poll::Pending),
            }
        }
        // A FIN after the bytes: the client reads them, then sees the connection end.
        if Pin::new(&mut *inner).poll_shutdown(cx).is_pending() {
            return Some(Poll::Pending);
        }
        self.killed.store(true, Ordering::SeqCst);
        Some(Poll::Ready(self.check()))
    }
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        if let Some(replaced) = self.poll_replacement(cx) {
            return replaced.map(|r| r.map(|()| buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        if let Some(replaced) = self.poll_replacement(cx) {
            return replaced;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        if let Some(replaced) = self.poll_replacement(cx) {
            return replaced;
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
