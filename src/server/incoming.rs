//! The accept path: accepted TCP connections, each holding a place among `max_connections` (one
//! beyond it is closed as soon as it is accepted, so it never waits unanswered in the backlog), and
//! each closed unless the HTTP/2 preface arrives within the handshake timeout.
//!
//! [`accepted`] is the seam for TLS: wrap each `(TcpStream, Place)` in TLS (the handshake bounded by
//! the same deadline), then hand the TLS stream to [`Connection::new`] so the preface is still awaited
//! on the decrypted bytes.

use futures::{Stream, StreamExt};
use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::server::Connected;

/// The client's first bytes on an HTTP/2 connection (RFC 9113 §3.4).
const PREFACE_LEN: usize = 24;

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: u32,
    pub handshake_timeout: Duration,
}

/// A place among the open connections, given back when the connection it belongs to is dropped.
#[derive(Debug)]
pub struct Place(#[allow(dead_code)] OwnedSemaphorePermit);

/// Accepted TCP connections (TCP_NODELAY set: a response of a few frames would otherwise wait on the
/// peer's delayed ACK, ~40 ms), each with its place; one beyond `max_connections` is closed at once.
pub fn accepted(
    listener: TcpListener,
    max_connections: u32,
) -> impl Stream<Item = io::Result<(TcpStream, Place)>> + Send {
    let places = Arc::new(Semaphore::new(max_connections as usize));
    futures::stream::unfold((listener, places), move |(listener, places)| async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => return Some((Err(error), (listener, places))),
            };
            let Ok(place) = places.clone().try_acquire_owned() else {
                tracing::debug!(%peer, max_connections, "connection refused: at the cap");
                drop(stream);
                continue;
            };
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
            }
            return Some((Ok((stream, Place(place))), (listener, places)));
        }
    })
}

/// [`accepted`] connections, each with its preface deadline, as tonic's server takes them.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
) -> impl Stream<Item = io::Result<Connection<TcpStream>>> + Send {
    accepted(listener, limits.max_connections).map(move |accepted| {
        accepted.map(|(stream, place)| {
            Connection::new(stream, place, Instant::now() + limits.handshake_timeout)
        })
    })
}

/// A connection: its IO, its place, and until the preface has been read, the deadline for it.
pub struct Connection<IO> {
    // Fields drop in order: the place is free before the socket closes, so a peer that sees the
    // close can count on it.
    _place: Place,
    io: IO,
    preface: Option<Preface>,
    /// Cancels [`Connection::closed`] when the connection is dropped (hyper is done with it).
    _closing: DropGuard,
    closed: CancellationToken,
}

struct Preface {
    left: usize,
    deadline: Pin<Box<Sleep>>,
}

impl<IO> Connection<IO> {
    pub fn new(io: IO, place: Place, preface_deadline: Instant) -> Self {
        let closed = CancellationToken::new();
        Connection {
            io,
            _place: place,
            preface: Some(Preface {
                left: PREFACE_LEN,
                deadline: Box::pin(tokio::time::sleep_until(preface_deadline)),
            }),
            _closing: closed.clone().drop_guard(),
            closed,
        }
    }

    /// Cancelled once the connection is closed and dropped.
    pub fn closed(&self) -> CancellationToken {
        self.closed.clone()
    }
}

impl<IO: Connected> Connected for Connection<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Connection<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        let Some(preface) = this.preface.as_mut() else {
            return polled;
        };
        match polled {
            Poll::Ready(Ok(())) => {
                preface.left = preface.left.saturating_sub(buf.filled().len() - before);
                if preface.left == 0 {
                    this.preface = None;
                }
                Poll::Ready(Ok(()))
            }
            // Polling the deadline here registers this task's waker with it: hyper reads until the
            // preface is in, so a silent peer wakes it when the time is up.
            Poll::Pending if preface.deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 preface within the handshake timeout",
                )))
            }
            other => other,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Connection<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
