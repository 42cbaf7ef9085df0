//! Response bodies: small ones in one buffer, blobs as a stream from the store.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;

pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// A body fed by a channel of chunks (the blob store's reader thread).
pub fn channel(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> Body {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item.map(Frame::data), rx))
    });
    StreamBody::new(stream).boxed()
}

/// A body made of ready chunks (slices of a memory-mapped blob).
pub fn chunks(pieces: Vec<Bytes>) -> Body {
    let stream = futures_util::stream::iter(pieces.into_iter().map(|b| Ok(Frame::data(b))));
    StreamBody::new(stream).boxed()
}
