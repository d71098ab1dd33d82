//! The serving loop: each accepted connection is served by tonic on its own, so that it can be told to
//! go away on its own — at its maximum age (jittered, so clients do not all reconnect at once) or
//! when the server closes — with HTTP/2 GOAWAY, its calls finishing first.
//!
//! tonic 0.14's own `max_connection_age` cannot be used for the GOAWAY: with a grace period it never
//! sends one (it only closes the connection at age + grace), and without one the connection's task
//! polls its finished timer again and panics. Its grace-period close is kept as the hard bound.

use super::Connection;
use futures::{Stream, StreamExt};
use std::{io, time::Duration};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use tonic::{
    body::Body,
    service::Routes,
    transport::{Server, server::Connected},
};
use tower::{Layer, Service};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves every connection `incoming` yields until `stop`; each gets GOAWAY at its (jittered) age or
/// at `stop`, whichever comes first. Returns when every connection has closed.
pub async fn serve<L, IO, ResBody>(
    server: Server<L>,
    routes: Routes,
    incoming: impl Stream<Item = io::Result<Connection<IO>>>,
    max_connection_age: Duration,
    stop: CancellationToken,
) where
    L: Layer<Routes> + Clone + Send + Sync + 'static,
    L::Service:
        Service<http::Request<Body>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    <L::Service as Service<http::Request<Body>>>::Future: Send,
    <L::Service as Service<http::Request<Body>>>::Error: Into<BoxError> + Send,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let mut incoming = std::pin::pin!(incoming);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            // Finished connections are reaped as they end, so the set holds only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = incoming.next() => match accepted {
                Some(Ok(io)) => {
                    let closed = io.closed();
                    // tonic ends a server whose incoming stream ends: this one yields its
                    // connection, then waits.
                    let one = futures::stream::once(std::future::ready(Ok::<_, io::Error>(io)))
                        .chain(futures::stream::pending());
                    let age = jittered(max_connection_age);
                    let stop = stop.clone();
                    // tonic's loop ends only at its signal, so a connection that closed by itself
                    // (peer gone, timeout) signals too: its serving ends with it.
                    let go_away = async move {
                        tokio::select! {
                            () = stop.cancelled() => {}
                            () = tokio::time::sleep(age) => {}
                            () = closed.cancelled() => {}
                        }
                    };
                    let connection = server.clone().serve_with_incoming_shutdown(
                        routes.clone(),
                        one,
                        go_away,
                    );
                    connections.spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%error, "connection failed");
                        }
                    });
                }
                Some(Err(error)) => tracing::debug!(%error, "cannot accept a connection"),
                None => break,
            },
        }
    }
    while connections.join_next().await.is_some() {}
}

/// `age` less up to a tenth, at random (gRPC's advice for MAX_CONNECTION_AGE).
fn jittered(age: Duration) -> Duration {
    age.mul_f64(1.0 - rand::random::<f64>() / 10.0)
}
