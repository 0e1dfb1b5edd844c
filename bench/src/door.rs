//! The stack's load balancer on loopback: Debian's HAProxy with
//! deploy/haproxy/haproxy.cfg's HTTP settings, in front of one web runtime, for
//! the "behind HAProxy" row. What it leaves out: TLS and the redirect to it, the
//! Docker DNS resolvers (one fixed server instead), the stats page, and the rate
//! limit, which a benchmark's few client addresses would trip.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::{Process, free_port};

/// Debian's HAProxy: `HAPROXY`, else `haproxy` on PATH, else /usr/sbin/haproxy.
pub fn find() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HAPROXY") {
        return Some(path.into());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("haproxy"))
        .find(|path| path.is_file())
}

/// HAProxy on a free loopback port, sending everything to `web` (`host:port`);
/// answers the process and its base URL once `/healthz` answers through it.
pub async fn start(haproxy: &Path, web: &str, dir: &Path) -> (Process, String) {
    let port = free_port();
    let config = dir.join("haproxy.cfg");
    std::fs::write(
        &config,
        format!(
            "global\n    log stdout format raw local0 warning\n\n\
             defaults\n    mode http\n    log global\n    timeout connect 3s\n    \
             timeout client 30s\n    timeout server 30s\n    retries 3\n    \
             option redispatch 1\n\n\
             frontend counter\n    bind 127.0.0.1:{port}\n    default_backend web\n    \
             http-request set-header X-Forwarded-For %[src]\n    \
             http-request del-header spin-client-addr\n\n\
             backend web\n    balance roundrobin\n    option httpchk\n    \
             http-check send meth GET uri /healthz ver HTTP/1.1 hdr Host web\n    \
             http-check expect status 200\n    \
             server web1 {web} check inter 2s fall 3 rise 1\n"
        ),
    )
    .expect("writing the HAProxy configuration");
    let mut command = tokio::process::Command::new(haproxy);
    command.arg("-db").arg("-f").arg(&config);
    let mut process = Process::spawn("haproxy", command, dir);
    let url = format!("http://127.0.0.1:{port}");
    let client = e2e::http_client();
    let started = Instant::now();
    loop {
        process.assert_running();
        if let Ok(response) = client.get(format!("{url}/healthz")).send().await
            && response.status().is_success()
        {
            return (process, url);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "HAProxy did not answer within 30 s:\n{}",
            process.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
