//! Connection hygiene through the real server, from raw TCP so the test sees every frame: a peer that
//! never sends the HTTP/2 preface is closed unserved after the handshake timeout and never holds back
//! one that talks, one that stops answering
//! PINGs after the keepalive timeout, an old connection is sent GOAWAY (and closed after the grace
//! when it ignores it), and a connection beyond the cap is closed before it is served, while the open
//! ones still work.

use crate::helpers::*;
use std::time::Duration;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tonic_health::pb::health_check_response::ServingStatus;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
const EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const SETTINGS: u8 = 0x4;

/// What a client sends first: the preface and its (empty) SETTINGS.
fn hello() -> Vec<u8> {
    [PREFACE, EMPTY_SETTINGS].concat()
}

/// The types of the HTTP/2 frames in `bytes`, in order.
fn frame_types(bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 9 {
        let length = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        types.push(rest[3]);
        rest = &rest[(9 + length).min(rest.len())..];
    }
    types
}

/// Everything the server sends until it closes the connection, sending `first` and nothing after.
async fn read_until_closed(app: &TestApp, first: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(app.addr).await.expect("connects");
    stream.write_all(first).await.expect("writes");
    let mut received = Vec::new();
    // A reset instead of a clean close ends the read too; what came before it is kept.
    let _ = within(stream.read_to_end(&mut received)).await;
    received
}

#[tokio::test]
async fn a_connection_that_never_sends_the_preface_is_closed_unserved_after_the_handshake_timeout()
{
    let app = spawn_app_with(|settings| settings.server.handshake_timeout_ms = 100).await;
    let started = std::time::Instant::now();

    let silent = read_until_closed(&app, b"").await;
    let half_a_preface = read_until_closed(&app, &PREFACE[..12]).await;

    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "closed by the timeout, not before"
    );
    // Nothing of HTTP/2 (not even SETTINGS) is set up for a peer until its preface is in.
    assert!(silent.is_empty(), "closed unserved: {silent:?}");
    assert!(
        half_a_preface.is_empty(),
        "closed unserved: {half_a_preface:?}"
    );
    assert_eq!(
        serving(&app).await,
        ServingStatus::Serving,
        "a connection that sent its preface in time is kept"
    );
}

#[tokio::test]
async fn silent_peers_never_hold_back_one_that_talks() {
    // A timeout longer than the test's patience: a talker queued behind silent peers would fail.
    let app = spawn_app_with(|settings| settings.server.handshake_timeout_ms = 600_000).await;
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(
            within(TcpStream::connect(app.addr))
                .await
                .expect("connects"),
        );
    }

    let mut talker = TcpStream::connect(app.addr).await.expect("connects");
    talker.write_all(&hello()).await.expect("writes");
    let mut header = [0u8; 9];
    within(talker.read_exact(&mut header))
        .await
        .expect("served while 300 peers stay silent");

    assert_eq!(header[3], SETTINGS);
    assert_eq!(silent.len(), 300);
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_closed_after_the_keepalive_timeout() {
    let app = spawn_app_with(|settings| {
        settings.server.keepalive_interval_ms = 50;
        settings.server.keepalive_timeout_ms = 50;
    })
    .await;

    let received = read_until_closed(&app, &hello()).await;

    let types = frame_types(&received);
    assert!(types.contains(&PING), "pinged: {types:?}");
    assert_eq!(serving(&app).await, ServingStatus::Serving);
}

#[tokio::test]
async fn a_connection_older_than_the_max_age_is_sent_goaway_and_closed_after_the_grace() {
    let app = spawn_app_with(|settings| {
        settings.server.max_connection_age_ms = 100;
        // The grace a connection that ignores GOAWAY gets.
        settings.server.drain_timeout_ms = 200;
    })
    .await;

    let received = read_until_closed(&app, &hello()).await;

    let types = frame_types(&received);
    let go_away = types.iter().position(|t| *t == GOAWAY);
    let ping = types.iter().position(|t| *t == PING);
    assert!(go_away.is_some(), "asked to go away: {types:?}");
    // h2 follows its GOAWAY with a PING; a keepalive close would have pinged first.
    assert!(ping.is_none_or(|ping| go_away < Some(ping)), "{types:?}");
}

#[tokio::test]
async fn a_connection_beyond_the_cap_is_closed_unserved_while_the_open_one_still_works() {
    // The test's own channel holds the one place.
    let app = spawn_app_with(|settings| settings.server.max_connections = 1).await;
    assert_eq!(serving(&app).await, ServingStatus::Serving);

    let received = read_until_closed(&app, &hello()).await;

    assert!(received.is_empty(), "closed before any frame: {received:?}");
    assert_eq!(serving(&app).await, ServingStatus::Serving);
}

#[tokio::test]
async fn a_connection_closed_by_the_handshake_timeout_gives_its_place_back() {
    // The test's own channel holds one place, an idle peer the other.
    let app = spawn_app_with(|settings| {
        settings.server.max_connections = 2;
        settings.server.handshake_timeout_ms = 100;
    })
    .await;

    let idle = read_until_closed(&app, b"").await;
    let mut next = TcpStream::connect(app.addr).await.expect("connects");
    next.write_all(&hello()).await.expect("writes");
    let mut header = [0u8; 9];
    within(next.read_exact(&mut header))
        .await
        .expect("served: the idle connection's place was given back");

    assert!(idle.is_empty(), "closed unserved: {idle:?}");
    assert_eq!(header[3], SETTINGS);
}
