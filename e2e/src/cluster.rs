//! A throwaway Aerospike cluster for the fault suite: local `asd` nodes started
//! by the deployment's own `deploy/aerospike/entrypoint.sh` and `aerospike.conf`,
//! each in a network namespace of its own, so that a test can stop, kill and
//! restart a node, and cut one off from the others while the gateway (in the
//! host's namespace) still reaches every node.
//!
//! The namespaces hang off one bridge on a /24 of their own: node `i` is
//! `10.213.<net>.<i+1>`, the host `10.213.<net>.254`. A partition drops, inside
//! the node's namespace, its traffic with the other nodes, and nothing else.
//! Everything (processes, namespaces, links, the firewall rule that lets the
//! bridge forward) is removed when the [`Cluster`] is dropped, pass or fail.
//!
//! Needs root (network namespaces) and an `asd` in `AEROSPIKE_ASD`;
//! `scripts/test` passes the one it finds.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;

use crate::Process;

const SERVICE_PORT: u16 = 3000;
/// The name every node's `/etc/hosts` (in its namespace) resolves to all nodes:
/// the entrypoint's seed name, as `tasks.aerospike` is in Swarm.
const SEED_NAME: &str = "aerospike.cluster.test";

/// Nodes of one cluster on loopback-free addresses of their own.
pub struct Cluster {
    net: u8,
    asd: PathBuf,
    dir: tempfile::TempDir,
    nodes: Vec<Option<Process>>,
}

impl Cluster {
    /// The `asd` binary the fault suite runs, from `AEROSPIKE_ASD`.
    pub fn asd() -> Option<PathBuf> {
        std::env::var_os("AEROSPIKE_ASD")
            .map(PathBuf::from)
            .filter(|p| p.is_file())
    }

    /// Starts `size` nodes with replication factor 2 and waits until they form
    /// one cluster.
    pub async fn start(size: usize) -> Cluster {
        let asd = Self::asd().expect("AEROSPIKE_ASD names an asd binary");
        // A subnet per cluster: a cluster's links may outlive it for a moment.
        static CLUSTERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let nth = CLUSTERS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let net = ((std::process::id() % 50) * 4 + nth) % 200 + 20;
        let net = net as u8;
        let cluster = Cluster {
            net,
            asd,
            dir: tempfile::tempdir().expect("a directory for the cluster"),
            nodes: (0..size).map(|_| None).collect(),
        };
        cluster.create_network();
        let mut cluster = cluster;
        for i in 0..size {
            cluster.spawn(i);
        }
        cluster.wait_for_size(size, Duration::from_secs(60)).await;
        cluster
    }

    fn bridge(&self) -> String {
        format!("acbr{}", self.net)
    }

    fn namespace(&self, i: usize) -> String {
        format!("ac{}n{i}", self.net)
    }

    pub fn node_ip(&self, i: usize) -> String {
        format!("10.213.{}.{}", self.net, i + 1)
    }

    /// The seed list for `AEROSPIKE_HOSTS`: every node.
    pub fn hosts(&self) -> String {
        (0..self.nodes.len())
            .map(|i| format!("{}:{SERVICE_PORT}", self.node_ip(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn log_dir(&self) -> &Path {
        self.dir.path()
    }

    fn create_network(&self) {
        let bridge = self.bridge();
        let host = format!("10.213.{}.254/24", self.net);
        run("ip", &["link", "add", &bridge, "type", "bridge"]);
        run("ip", &["addr", "add", &host, "dev", &bridge]);
        run("ip", &["link", "set", &bridge, "up"]);
        // Docker's FORWARD policy is DROP, and with br_netfilter loaded bridged
        // frames pass through it: let this bridge forward between its ports.
        run(
            "iptables",
            &[
                "-I", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT",
            ],
        );
        let hosts: String = (0..self.nodes.len())
            .map(|i| format!("{} {SEED_NAME}\n", self.node_ip(i)))
            .collect();
        for i in 0..self.nodes.len() {
            let ns = self.namespace(i);
            let veth = format!("acv{}n{i}", self.net);
            run("ip", &["netns", "add", &ns]);
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            );
            run("ip", &["link", "set", &veth, "master", &bridge, "up"]);
            let addr = format!("{}/24", self.node_ip(i));
            run_in(&ns, "ip", &["addr", "add", &addr, "dev", "eth0"]);
            run_in(&ns, "ip", &["link", "set", "eth0", "up"]);
            run_in(&ns, "ip", &["link", "set", "lo", "up"]);
            // `ip netns exec` mounts /etc/netns/<ns>/hosts over /etc/hosts.
            let etc = Path::new("/etc/netns").join(&ns);
            std::fs::create_dir_all(&etc).expect("creating /etc/netns/<ns>");
            std::fs::write(etc.join("hosts"), format!("127.0.0.1 localhost\n{hosts}"))
                .expect("writing the namespace's hosts file");
        }
    }

    fn spawn(&mut self, i: usize) {
        let node_dir = self.dir.path().join(format!("node{i}"));
        std::fs::create_dir_all(&node_dir).expect("a directory for the node");
        let entrypoint =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/aerospike/entrypoint.sh");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace(i), "bash"])
            .arg(entrypoint)
            .env("ASD", &self.asd)
            // No asinfo here: the seeds in the hosts file are all there at start.
            .env("ASINFO", "true")
            .env("AEROSPIKE_SEED_NAME", SEED_NAME)
            .env("AEROSPIKE_ACCESS_ADDRESS", self.node_ip(i))
            .env(
                "AEROSPIKE_CLUSTER_NAME",
                format!("fault-suite-{}", self.net),
            )
            .env("AEROSPIKE_NODE_ID", format!("a{}", i + 1))
            .env("AEROSPIKE_REPLICATION_FACTOR", "2")
            .env("AEROSPIKE_CONF", node_dir.join("aerospike.conf"))
            .env("AEROSPIKE_WORK_DIR", node_dir.join("work"))
            .env("AEROSPIKE_STORAGE_FILE", node_dir.join("test.dat"))
            .env("AEROSPIKE_STORAGE_SIZE", "1G");
        self.nodes[i] = Some(Process::spawn(
            &format!("aerospike-{i}"),
            command,
            self.dir.path(),
        ));
    }

    /// SIGTERM to node `i`, as `docker stop` does, and waits for it to exit.
    pub async fn stop(&mut self, i: usize) {
        let node = self.nodes[i].take().expect("the node is running");
        node.terminate(Duration::from_secs(30)).await;
    }

    /// `kill -9` of node `i` (and its entrypoint).
    pub async fn kill(&mut self, i: usize) {
        self.nodes[i]
            .take()
            .expect("the node is running")
            .kill()
            .await;
    }

    /// Starts node `i` again on its data and waits until the cluster has all
    /// its nodes.
    pub async fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is running");
        self.spawn(i);
        self.wait_for_size(self.nodes.len(), Duration::from_secs(60))
            .await;
    }

    /// Cuts node `i` off from the other nodes (both ways); the host still
    /// reaches it, as a client beside a split network would.
    pub fn partition(&self, i: usize) {
        let ns = self.namespace(i);
        for j in (0..self.nodes.len()).filter(|&j| j != i) {
            let other = self.node_ip(j);
            run_in(
                &ns,
                "iptables",
                &["-A", "INPUT", "-s", &other, "-j", "DROP"],
            );
            run_in(
                &ns,
                "iptables",
                &["-A", "OUTPUT", "-d", &other, "-j", "DROP"],
            );
        }
    }

    /// Undoes [`Cluster::partition`] of node `i`.
    pub fn heal(&self, i: usize) {
        run_in(&self.namespace(i), "iptables", &["-F"]);
    }

    /// The cluster size each running node reports, in node order.
    pub fn sizes(&self) -> Vec<Option<u64>> {
        (0..self.nodes.len())
            .map(|i| {
                let stats = info(&self.node_address(i), "statistics").ok()?;
                stats
                    .split(';')
                    .find_map(|kv| kv.strip_prefix("cluster_size="))
                    .and_then(|n| n.trim().parse().ok())
            })
            .collect()
    }

    fn node_address(&self, i: usize) -> SocketAddr {
        format!("{}:{SERVICE_PORT}", self.node_ip(i))
            .parse()
            .expect("an address")
    }

    /// Waits until every running node sees the same cluster of `size` nodes
    /// (partitions may still be migrating, as they would in production).
    pub async fn wait_for_size(&self, size: usize, timeout: Duration) {
        let started = Instant::now();
        loop {
            let running: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].is_some())
                .collect();
            let settled = running.iter().all(|&i| {
                info(
                    &self.node_address(i),
                    &format!("cluster-stable:size={size};ignore-migrations=true"),
                )
                .is_ok_and(|answer| !answer.trim().is_empty() && !answer.contains("ERROR"))
            });
            if settled {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "the cluster did not settle at {size} nodes within {timeout:?} (sizes {:?}); logs in {}",
                self.sizes(),
                self.dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The log of node `i`.
    pub fn node_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("aerospike-{i}.log")))
            .unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut().filter_map(Option::take) {
            drop(node); // SIGKILL to its process group
        }
        for i in 0..self.nodes.len() {
            let ns = self.namespace(i);
            quietly("ip", &["link", "del", &format!("acv{}n{i}", self.net)]);
            quietly("ip", &["netns", "del", &ns]);
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&ns));
        }
        let bridge = self.bridge();
        quietly(
            "iptables",
            &[
                "-D", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT",
            ],
        );
        quietly("ip", &["link", "del", &bridge]);
        if std::thread::panicking() {
            // Keep the nodes' logs for the failure report.
            let kept = self.dir.path().to_owned();
            eprintln!("cluster logs kept in {}", kept.display());
            std::mem::forget(std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().expect("a temp dir"),
            ));
        }
    }
}

fn run(program: &str, args: &[&str]) {
    let output = StdCommand::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn run_in(namespace: &str, program: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", namespace, program];
    all.extend_from_slice(args);
    run("ip", &all);
}

fn quietly(program: &str, args: &[&str]) {
    let _ = StdCommand::new(program).args(args).output();
}

/// One Aerospike info command to the node's service port, as the gateway's
/// split watch sends it.
pub fn info(node: &SocketAddr, command: &str) -> std::io::Result<String> {
    store_aerospike::info::ask_blocking(node, command, Duration::from_secs(2))
}

/// Freezes (SIGSTOP) and thaws (SIGCONT) a process, e.g. a gateway.
pub fn freeze(pid: i32, frozen: bool) {
    let signal = if frozen {
        Signal::SIGSTOP
    } else {
        Signal::SIGCONT
    };
    kill(Pid::from_raw(pid), signal).expect("signalling the process");
}
