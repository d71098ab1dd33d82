//! A unary call's HTTP/2 bodies without tonic's codec, for the one path that gains by it: a
//! remembered GetCosts answer. The request's message is read off its body here ([`read_message`]),
//! and the answer goes out as the stored gRPC frame itself ([`StoredAnswer`]), so a cached call
//! neither copies its answer into an encode buffer nor allocates one. Whatever is not a plain
//! request (a compressed or oversized message, a body that fails or carries trailers) is handed to
//! tonic as it came: the frames read so far are replayed before the rest ([`Replayed`]).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use std::{
    collections::VecDeque,
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

/// A gRPC message's prefix: the compressed flag, then the length (big-endian u32).
const PREFIX_LEN: usize = 5;

/// `message` as one uncompressed gRPC frame; `None` past the prefix's 4 GiB.
pub fn framed(message: &impl prost::Message) -> Option<Bytes> {
    let len = message.encoded_len();
    let prefix_len = u32::try_from(len).ok()?;
    // Exactly the frame's length: what a remembered answer holds is what its weigher counts.
    let mut frame = Vec::with_capacity(PREFIX_LEN + len);
    frame.put_u8(0);
    frame.put_u32(prefix_len);
    message.encode(&mut frame).ok()?;
    Some(Bytes::from(frame))
}

/// The message of a frame [`framed`] made.
pub fn message_of(frame: &Bytes) -> Bytes {
    frame.slice(PREFIX_LEN.min(frame.len())..)
}

/// A request body, the frames already read off it first.
pub struct Replayed<B: Body> {
    read: VecDeque<Result<Frame<Bytes>, B::Error>>,
    rest: B,
    /// `rest` has ended (polled to `None`): it is not polled again.
    ended: bool,
}

// Nothing of it is pinned in place: `rest` is `Unpin`, and frames are moved out, never pinned.
impl<B: Body + Unpin> Unpin for Replayed<B> {}

impl<B> Body for Replayed<B>
where
    B: Body + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if let Some(frame) = this.read.pop_front() {
            return Poll::Ready(Some(frame));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        Pin::new(&mut this.rest)
            .poll_frame(cx)
            .map(|frame| frame.map(|frame| frame.map(as_bytes)))
    }

    fn is_end_stream(&self) -> bool {
        self.read.is_empty() && (self.ended || self.rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

fn as_bytes<F: Buf>(frame: Frame<F>) -> Frame<Bytes> {
    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
}

/// Reads `body` to its end: its one message when it holds exactly one uncompressed gRPC message of
/// at most `max_bytes` and nothing else; else `None`. Either way, the body to hand to tonic, which
/// then reads what this read (and finds what it would have found).
pub async fn read_message<B>(body: B, max_bytes: usize) -> (Option<Bytes>, Replayed<B>)
where
    B: Body + Unpin,
{
    let mut body = Replayed {
        read: VecDeque::new(),
        rest: body,
        ended: false,
    };
    let mut had = 0;
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body.rest).poll_frame(cx)).await;
        let Some(frame) = frame else {
            body.ended = true;
            return (whole_message(&body.read, had, max_bytes), body);
        };
        let frame = frame.map(as_bytes);
        let data_len = match &frame {
            Ok(frame) => frame.data_ref().map(Bytes::len),
            Err(_) => None,
        };
        body.read.push_back(frame);
        // An error or trailers: tonic reads them, as it would have.
        let Some(data_len) = data_len else {
            return (None, body);
        };
        had += data_len;
        if had > PREFIX_LEN + max_bytes {
            return (None, body);
        }
    }
}

/// The one message `frames` (`had` bytes of data in all) hold, when they hold exactly one,
/// uncompressed, of at most `max_bytes`.
fn whole_message<E>(
    frames: &VecDeque<Result<Frame<Bytes>, E>>,
    had: usize,
    max_bytes: usize,
) -> Option<Bytes> {
    let mut data = frames
        .iter()
        .filter_map(|frame| frame.as_ref().ok().and_then(Frame::data_ref))
        .filter(|data| !data.is_empty());
    let first = data.next()?;
    let all = match data.next() {
        None => first.clone(),
        // A message in several DATA frames: rare, so copied together.
        Some(second) => {
            let mut joined = BytesMut::with_capacity(had);
            for part in [first, second].into_iter().chain(data) {
                joined.extend_from_slice(part);
            }
            joined.freeze()
        }
    };
    let (&compressed, mut length) = all.get(..PREFIX_LEN)?.split_first()?;
    let len = usize::try_from(length.get_u32()).ok()?;
    (compressed == 0 && len <= max_bytes && all.len() == PREFIX_LEN + len)
        .then(|| all.slice(PREFIX_LEN..))
}

/// A remembered answer's response body: its stored frame, then trailers saying OK.
pub struct StoredAnswer {
    frame: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
}

impl StoredAnswer {
    pub fn new(frame: Bytes) -> Self {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        StoredAnswer {
            frame: Some(frame),
            trailers: Some(trailers),
        }
    }
}

impl Body for StoredAnswer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let frame = match self.frame.take() {
            Some(data) => Some(Frame::data(data)),
            None => self.trailers.take().map(Frame::trailers),
        };
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.frame.is_none() && self.trailers.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn frames(parts: &[&[u8]]) -> VecDeque<Result<Frame<Bytes>, Infallible>> {
        parts
            .iter()
            .map(|part| Ok(Frame::data(Bytes::copy_from_slice(part))))
            .collect()
    }

    #[test]
    fn a_framed_message_is_read_back_whole_or_in_parts() {
        let message = "a request".to_string();
        let frame = framed(&message).expect("small");
        assert_eq!(frame.len(), PREFIX_LEN + message.encoded_len());
        assert_eq!(message_of(&frame), message.encode_to_vec());
        let whole = whole_message(&frames(&[&frame]), frame.len(), 1024);
        assert_eq!(whole.as_deref(), Some(&frame[PREFIX_LEN..]));
        let (head, tail) = frame.split_at(3);
        let parts = whole_message(&frames(&[head, &[], tail]), frame.len(), 1024);
        assert_eq!(parts.as_deref(), Some(&frame[PREFIX_LEN..]));
    }

    #[test]
    fn only_one_plain_message_within_the_limit_is_read() {
        let frame = framed(&"a request".to_string()).expect("small");
        let mut compressed = frame.to_vec();
        compressed[0] = 1;
        let mut two = frame.to_vec();
        two.extend_from_slice(&frame);
        let cut = &frame[..frame.len() - 1];
        for (what, parts, max) in [
            ("compressed", vec![&compressed[..]], 1024),
            ("two messages", vec![&two[..]], 1024),
            ("cut short", vec![cut], 1024),
            ("a prefix only", vec![&frame[..3]], 1024),
            (
                "over the limit",
                vec![&frame[..]],
                frame.len() - PREFIX_LEN - 1,
            ),
            ("no data", vec![], 1024),
        ] {
            let had = parts.iter().map(|p| p.len()).sum();
            assert_eq!(whole_message(&frames(&parts), had, max), None, "{what}");
        }
    }
}
