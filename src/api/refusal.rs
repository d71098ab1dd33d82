//! What a layer does before it refuses a call without reading the request: reads the rest of it.
//!
//! Answered before its request has ended, a stream is reset (RST_STREAM) while the caller's frames
//! are still on their way. With greedy callers refused on one shared connection, the overload bench
//! saw that connection closed under them (broken pipe, in 3 runs of 3); reading the request first,
//! it stayed up in 6 runs of 6. Which h2 path closed it is not known: h2 logged no warning.

use bytes::Buf;
use http_body::Body;
use std::{pin::Pin, time::Duration};

/// Longest a refusal waits for the rest of its request, and most bytes of it read and dropped: a
/// unary request's last frame follows its headers at once, and a caller that stalls is answered anyway.
const REQUEST_END_WAIT: Duration = Duration::from_millis(5);
const REQUEST_READ_LIMIT: usize = 64 * 1024;

/// Reads and drops `body` to its end, within [`REQUEST_END_WAIT`] and [`REQUEST_READ_LIMIT`].
pub async fn read_to_end<B: Body + Unpin>(mut body: B) {
    let reading = async {
        let mut read = 0;
        while read < REQUEST_READ_LIMIT && !body.is_end_stream() {
            match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, Buf::remaining),
                // The end, or a broken request: nothing more will come.
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(REQUEST_END_WAIT, reading).await;
}
