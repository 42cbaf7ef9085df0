//! The request body type the benchmark sends: a queue of shared `Bytes` slices.
//!
//! A 1 GiB blob is streamed as slices of one pre-generated buffer, so sending it copies
//! nothing on the client side and the client spends its CPU on the socket, not on
//! building bodies. The exact length is known, so hyper sends `Content-Length`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Largest frame handed to hyper at once; hyper writes frames with vectored writes.
const FRAME: usize = 1 << 20;

#[derive(Debug, Default, Clone)]
pub struct ReqBody {
    parts: VecDeque<Bytes>,
    remaining: u64,
}

impl ReqBody {
    pub fn empty() -> Self {
        Self::default()
    }

    /// A body made of the given parts, each cut into frames of at most 1 MiB.
    pub fn from_parts(parts: impl IntoIterator<Item = Bytes>) -> Self {
        let mut body = Self::default();
        for part in parts {
            body.push(part);
        }
        body
    }

    pub fn push(&mut self, mut part: Bytes) {
        self.remaining += part.len() as u64;
        while part.len() > FRAME {
            self.parts.push_back(part.split_to(FRAME));
        }
        if !part.is_empty() {
            self.parts.push_back(part);
        }
    }

    pub fn len(&self) -> u64 {
        self.remaining
    }
}

impl From<Bytes> for ReqBody {
    fn from(b: Bytes) -> Self {
        Self::from_parts([b])
    }
}

impl From<Vec<u8>> for ReqBody {
    fn from(v: Vec<u8>) -> Self {
        Self::from(Bytes::from(v))
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        Poll::Ready(this.parts.pop_front().map(|b| {
            this.remaining -= b.len() as u64;
            Ok(Frame::data(b))
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.parts.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn frames_add_up() {
        let big = Bytes::from(vec![7u8; 3 * FRAME + 5]);
        let body = ReqBody::from_parts([big, Bytes::from_static(b"tail")]);
        assert_eq!(body.size_hint().exact(), Some(3 * FRAME as u64 + 9));
        let all = body.collect().await.map(|c| c.to_bytes());
        assert_eq!(all.map(|b| b.len()), Ok(3 * FRAME + 9));
    }
}
