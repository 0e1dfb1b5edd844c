use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A TCP proxy to put between the gateway and Aerospike, so a test can cut the
/// cluster off (and bring it back), or stall it (hold every byte, both ways,
/// with every connection kept open) and resume it, without touching the cluster.
pub struct TcpProxy {
    pub listen: SocketAddr,
    target: String,
    tasks: Option<JoinSet<()>>,
    stalled: watch::Sender<bool>,
}

impl TcpProxy {
    /// A proxy on a free port, not yet accepting: the cluster looks down.
    pub fn new(target: &str) -> TcpProxy {
        TcpProxy {
            listen: SocketAddr::from(([127, 0, 0, 1], crate::free_port())),
            target: target.to_owned(),
            tasks: None,
            stalled: watch::channel(false).0,
        }
    }

    /// Starts accepting and forwarding.
    pub async fn connect(&mut self) {
        assert!(self.tasks.is_none(), "already forwarding");
        let listener = TcpListener::bind(self.listen)
            .await
            .expect("binding the proxy port");
        let target = self.target.clone();
        let stalled = self.stalled.subscribe();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                let target = target.clone();
                let stalled = stalled.clone();
                connections.spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(&target).await {
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let (in_read, in_write) = inbound.into_split();
                        let (out_read, out_write) = outbound.into_split();
                        tokio::join!(
                            pump(in_read, out_write, stalled.clone()),
                            pump(out_read, in_write, stalled),
                        );
                    }
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// Stops listening and drops every forwarded connection.
    pub async fn cut(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.shutdown().await;
        }
    }

    /// Holds every byte, in both directions, on every connection (new ones too),
    /// until [`TcpProxy::resume`]: the connections stay open, and what was sent
    /// arrives late rather than never, as on a network that stalls. A write the
    /// gateway gives up on in the meantime is applied after it gave up: its
    /// outcome was in doubt.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Forwards again, held bytes first.
    pub fn resume(&self) {
        self.stalled.send_replace(false);
    }
}

/// Copies `from` to `to`, holding what it read while `stalled` says so. An end
/// of `from` is passed on (after what was held) as an end of `to`.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut stalled: watch::Receiver<bool>,
) {
    let mut buffer = vec![0_u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if stalled.wait_for(|stalled| !stalled).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
    let _ = stalled.wait_for(|stalled| !stalled).await;
    let _ = to.shutdown().await;
}
