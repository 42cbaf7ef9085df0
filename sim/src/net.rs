//! The node's network inside the simulation: turmoil listeners as accept streams, accepted
//! turmoil connections as streams tonic can serve, and the dialer nodes reach each other with.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use keelson_raft::network::Dialer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use turmoil::net::{TcpListener, TcpStream};

/// Port of every node's registry API.
pub const API_PORT: u16 = 5000;
/// Port of every node's peer endpoint (Raft, blob transfer).
pub const PEER_PORT: u16 = 7000;

/// An accepted simulated connection.
pub struct SimConn(pub TcpStream);

impl tonic::transport::server::Connected for SimConn {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl keelson_api::server::RemoteAddr for SimConn {
    fn remote_ip(&self) -> Option<std::net::IpAddr> {
        self.0.peer_addr().ok().map(|a| a.ip())
    }
}

impl AsyncRead for SimConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The connections `listener` accepts, as the stream a node serves.
pub fn incoming(listener: TcpListener) -> Pin<Box<dyn Stream<Item = io::Result<SimConn>> + Send>> {
    Box::pin(futures_util::stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(stream, _)| SimConn(stream));
        Some((next, listener))
    }))
}

/// Dials `host:port` over the simulated network.
pub fn dialer() -> Dialer {
    Dialer::new(|addr: String| async move { TcpStream::connect(addr).await })
}
