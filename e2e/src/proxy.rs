use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A TCP proxy to put between the gateway and Aerospike, so a test can cut the
/// cluster off (and bring it back) without touching the cluster.
pub struct TcpProxy {
    pub listen: SocketAddr,
    target: String,
    tasks: Option<JoinSet<()>>,
}

impl TcpProxy {
    /// A proxy on a free port, not yet accepting: the cluster looks down.
    pub fn new(target: &str) -> TcpProxy {
        TcpProxy {
            listen: SocketAddr::from(([127, 0, 0, 1], crate::free_port())),
            target: target.to_owned(),
            tasks: None,
        }
    }

    /// Starts accepting and forwarding.
    pub async fn connect(&mut self) {
        assert!(self.tasks.is_none(), "already forwarding");
        let listener = TcpListener::bind(self.listen)
            .await
            .expect("binding the proxy port");
        let target = self.target.clone();
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
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
}
