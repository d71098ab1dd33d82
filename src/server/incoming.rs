//! The accept path: accepted TCP connections, each holding a place among `max_connections` (one
//! beyond it is closed as soon as it is accepted, so it never waits unanswered in the backlog), and
//! each closed unless the HTTP/2 preface arrives within the handshake timeout.
//!
//! [`accepted`] is the seam for TLS: wrap each `(TcpStream, Place)` in TLS (the handshake bounded by
//! the same timeout), then hand the TLS streams to [`with_preface`] so the preface is still awaited
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
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
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

/// [`accepted`] connections whose HTTP/2 preface has arrived, as tonic's server takes them.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
) -> impl Stream<Item = io::Result<Connection<TcpStream>>> + Send {
    with_preface(accepted(listener, limits.max_connections), limits)
}

/// The connections of `handshaken` that sent the HTTP/2 preface within the handshake timeout; the
/// others are closed. Until its preface is in, a connection is only its socket, a 24-byte buffer and
/// a timer: hyper's buffers and HTTP/2 state (tens of KB) are made for talkers only, so thousands of
/// silent peers cost little and give it all back when they go.
pub fn with_preface<IO, S>(
    handshaken: S,
    limits: ConnectionLimits,
) -> impl Stream<Item = io::Result<Connection<IO>>> + Send
where
    IO: AsyncRead + Unpin + Send + 'static,
    S: Stream<Item = io::Result<(IO, Place)>> + Send,
{
    handshaken
        .map(move |handshaken| async move {
            let (mut io, place) = match handshaken {
                Ok(handshaken) => handshaken,
                Err(error) => return Some(Err(error)),
            };
            let mut preface = [0u8; PREFACE_LEN];
            match tokio::time::timeout(limits.handshake_timeout, io.read_exact(&mut preface)).await
            {
                Ok(Ok(_)) => Some(Ok(Connection::new(io, place, preface))),
                Ok(Err(error)) => {
                    tracing::debug!(%error, "connection closed before its HTTP/2 preface");
                    None
                }
                Err(_) => {
                    tracing::debug!("no HTTP/2 preface within the handshake timeout");
                    None
                }
            }
        })
        // Every place may be waiting for its preface at once; the cap on places bounds them.
        .buffer_unordered(limits.max_connections as usize)
        .filter_map(std::future::ready)
}

/// A connection: its IO, its place, and the preface it sent, which hyper reads first.
pub struct Connection<IO> {
    // Fields drop in order: the place is free before the socket closes, so a peer that sees the
    // close can count on it.
    _place: Place,
    io: IO,
    preface: [u8; PREFACE_LEN],
    /// How much of `preface` hyper has read.
    replayed: usize,
    /// Cancels [`Connection::closed`] when the connection is dropped (hyper is done with it).
    _closing: DropGuard,
    closed: CancellationToken,
}

impl<IO> Connection<IO> {
    fn new(io: IO, place: Place, preface: [u8; PREFACE_LEN]) -> Self {
        let closed = CancellationToken::new();
        Connection {
            io,
            _place: place,
            preface,
            replayed: 0,
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
        if this.replayed < PREFACE_LEN {
            let left = &this.preface[this.replayed..];
            let n = left.len().min(buf.remaining());
            buf.put_slice(&left[..n]);
            this.replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
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
