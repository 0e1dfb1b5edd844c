//! The gateway's TCP listener: connections that never make a caller wait on a
//! delayed ACK.
//!
//! Web runtimes keep connections to the gateway open, and some write a request
//! in two parts with Nagle's algorithm on: Spin 4.0.2's outgoing client connects
//! without `TCP_NODELAY` and sends a request's head and its body (or the end of
//! a chunked body) in two writes. Nagle holds the second write until the first
//! is acknowledged, and Linux delays that acknowledgement by up to 40 ms once a
//! connection looks interactive. The caller cannot be fixed from here, so the
//! gateway acknowledges at once: `TCP_QUICKACK` on every accepted connection,
//! set again after every read, because the kernel clears it (it re-enters
//! delayed-ACK mode as soon as the gateway answers). Setting it also sends an
//! acknowledgement that is already pending. `TCP_NODELAY` keeps the gateway's
//! own answers from waiting in the same way.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A [`TcpListener`] whose connections acknowledge at once; serve it with
/// `axum::serve`.
pub struct QuickAckListener(TcpListener);

impl QuickAckListener {
    pub fn new(listener: TcpListener) -> Self {
        Self(listener)
    }
}

impl axum::serve::Listener for QuickAckListener {
    type Io = QuickAck;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // axum's accept loop for a TcpListener: it rides out EMFILE and friends.
        let (stream, addr) = axum::serve::Listener::accept(&mut self.0).await;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY");
        }
        let stream = QuickAck(stream);
        stream.acknowledge_at_once();
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// An accepted connection that puts `TCP_QUICKACK` back after every read.
pub struct QuickAck(TcpStream);

impl QuickAck {
    fn acknowledge_at_once(&self) {
        // Best effort: on a socket that is closing this fails, harmlessly.
        let _ = SockRef::from(&self.0).set_tcp_quickack(true);
    }

    /// Whether the socket acknowledges at once right now (the kernel's view).
    pub fn acknowledges_at_once(&self) -> io::Result<bool> {
        SockRef::from(&self.0).tcp_quickack()
    }
}

impl AsyncRead for QuickAck {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.0).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.acknowledge_at_once();
        }
        read
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use axum::serve::Listener;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const REQUEST: &[u8] = b"GET /v1/summary HTTP/1.1\r\nhost: gateway\r\n\r\n";
    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    /// The guard against the delayed-ACK stall: on a kept-alive connection,
    /// after the gateway has answered (which puts Linux back into delayed-ACK
    /// mode) and read the next request, its socket acknowledges at once again.
    #[tokio::test]
    async fn a_kept_alive_connection_acknowledges_at_once_after_every_read() {
        let mut listener = QuickAckListener::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let mut caller = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut gateway, _) = listener.accept().await;
        assert!(gateway.acknowledges_at_once().unwrap(), "after accept");
        let mut buf = vec![0; 1024];
        for exchange in 1..=5 {
            caller.write_all(REQUEST).await.unwrap();
            let mut read = 0;
            while read < REQUEST.len() {
                read += gateway.read(&mut buf[read..]).await.unwrap();
            }
            assert!(
                gateway.acknowledges_at_once().unwrap(),
                "after reading request {exchange}"
            );
            gateway.write_all(ANSWER).await.unwrap();
            caller.read_exact(&mut buf[..ANSWER.len()]).await.unwrap();
        }
    }
}
