//! The shipped deployments, run for real on this machine's Docker engine with
//! images built from this build's binaries (no registry can be reached here):
//! - the dev Compose file, with the gateway on its embedded store;
//! - the Swarm stack: HAProxy terminating TLS with a certificate made here,
//!   redirecting plain HTTP, refusing old protocols, finding replicas by DNS, the
//!   web tier scaled to 4, a replica killed under load, one client over the rate
//!   limit while another still counts;
//! - both files' Aerospike parts validated with `config`, since the Aerospike
//!   image cannot be pulled here.
//!
//! Everything a test creates (containers, networks, volumes, secrets, the swarm
//! itself if the test started it) is removed when it ends, pass or fail.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::docker::{
    Cleanup, TestCertificate, TestImages, compose_command, docker, in_network_of, repo_root,
    run_with, running_container,
};
use e2e::{free_port, http_client, https_client, seen_by};

const NO_DOCKER: &str = "no Docker engine answered `docker info` when the tests were built";

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    )
}

/// Polls `url` until it answers 200, or panics after `limit` with what went wrong.
async fn wait_for_200(client: &reqwest::Client, url: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < limit {
        match client.get(url).timeout(Duration::from_secs(2)).send().await {
            Ok(response) if response.status() == 200 => return started.elapsed(),
            Ok(response) => last = format!("status {}", response.status()),
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{url} did not answer 200 within {limit:?}; last: {last}");
}

/// `clients` concurrent clients make `hits` page hits in total; answers each N.
async fn hits(client: &reqwest::Client, url: &str, hits: usize, clients: usize) -> Vec<u64> {
    let url = format!("{url}/");
    let per_client = hits.div_ceil(clients);
    let tasks = (0..clients).map(|c| {
        let url = url.clone();
        let client = client.clone();
        let count = per_client.min(hits.saturating_sub(c * per_client));
        tokio::spawn(async move {
            let mut seen = Vec::with_capacity(count);
            for _ in 0..count {
                let response = client.get(&url).send().await.expect("GET /");
                let status = response.status();
                let body = response.text().await.unwrap();
                assert_eq!(status, 200, "{body}");
                seen.push(seen_by(&body));
            }
            seen
        })
    });
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .flat_map(|t| t.expect("client task"))
        .collect()
}

/// A header of `response`, as text.
fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().expect("a text header"))
}

async fn json_at(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn stats(client: &reqwest::Client, url: &str) -> serde_json::Value {
    json_at(client, &format!("{url}/api/stats")).await
}

fn servers(stats: &serde_json::Value) -> Vec<(String, u64)> {
    stats["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["server"].as_str().unwrap().to_owned(),
                s["total"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
#[cfg_attr(
    not(docker),
    ignore = "no Docker engine answered `docker info` when the tests were built"
)]
fn compose_and_stack_files_are_valid() {
    let deploy = repo_root().join("deploy");
    let config =
        run_with(
            compose_command()
                .current_dir(&deploy)
                .args(["-f", "compose.yaml", "config"]),
        )
        .unwrap_or_else(|e| panic!("compose.yaml: {e}"));
    for service in ["web:", "gateway:", "aerospike:"] {
        assert!(
            config.contains(service),
            "compose.yaml lacks {service}\n{config}"
        );
    }
    assert!(
        config.contains("aerospike/aerospike-server:8.1"),
        "a pinned Aerospike 8.1 image"
    );
    let stack = docker(&[
        "stack",
        "config",
        "-c",
        deploy.join("stack.yaml").to_str().unwrap(),
    ])
    .unwrap_or_else(|e| panic!("stack.yaml: {e}"));
    assert!(
        !config.contains("443") && !config.contains("haproxy"),
        "the dev file stays plain HTTP\n{config}"
    );
    for needle in [
        "aerospike/aerospike-server:8.1",
        "max_replicas_per_node: 1",
        "endpoint_mode: dnsrr",
        "haproxy_stats_users",
        "internal: true",
        // HTTPS from a secret named at deploy time, and a rate limit by default.
        "target: 443",
        "name: haproxy_tls",
        "RATE_LIMIT: \"100\"",
    ] {
        assert!(
            stack.contains(needle),
            "stack.yaml lacks {needle:?}\n{stack}"
        );
    }
    assert_eq!(
        services_with(&stack, "published:"),
        ["lb"],
        "only the load balancer publishes a port"
    );
}

/// The services of a rendered Compose file whose definition has a line with `key`.
fn services_with(config: &str, key: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut section = "";
    let mut service = String::new();
    for line in config.lines() {
        if !line.starts_with(' ') {
            section = line.trim_end_matches(':');
        } else if section == "services" && line.starts_with("  ") && !line.starts_with("   ") {
            service = line.trim().trim_end_matches(':').to_owned();
        } else if section == "services"
            && line.trim_start().starts_with(key)
            && !found.contains(&service)
        {
            found.push(service.clone());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(docker),
    ignore = "no Docker engine answered `docker info` when the tests were built"
)]
async fn dev_compose_counts_exactly() {
    let tag = unique("t");
    let images = TestImages::build("awesome-counter-test", &tag).expect(NO_DOCKER);
    let project = unique("acdev");
    let port = free_port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let override_file = dir.path().join("test.yaml");
    // The dev file as shipped, with this build's images and the gateway on its
    // embedded store (no Aerospike image can be pulled here).
    std::fs::write(
        &override_file,
        format!(
            "services:\n  web:\n    image: {}\n  gateway:\n    image: {}\n    environment:\n      AEROSPIKE_HOSTS: \"\"\n",
            images.web, images.gateway
        ),
    )
    .unwrap();
    let deploy = repo_root().join("deploy");
    let compose = |args: &[&str]| {
        let mut command = compose_command();
        command
            .current_dir(&deploy)
            .env("WEB_PORT", &port)
            .args([
                "-p",
                &project,
                "-f",
                "compose.yaml",
                "-f",
                override_file.to_str().unwrap(),
            ])
            .args(args);
        command
    };
    let mut cleanup = Cleanup::default();
    cleanup.push(compose(&[
        "down",
        "--volumes",
        "--remove-orphans",
        "--timeout",
        "5",
    ]));
    cleanup.show_on_failure(compose(&["ps"]));
    cleanup.show_on_failure(compose(&["logs", "--timestamps", "--tail", "100"]));

    let started = Instant::now();
    run_with(&mut compose(&["up", "-d", "--no-build", "web", "gateway"])).expect("compose up");
    let url = format!("http://127.0.0.1:{port}");
    let client = http_client();
    wait_for_200(&client, &format!("{url}/"), Duration::from_secs(60)).await;
    eprintln!("compose: first 200 on / {:?} after `up`", started.elapsed());
    // Waiting may have counted more than one hit (a timed-out try can still
    // land), so count from here.
    let base = stats(&client, &url).await["total_hits"].as_u64().unwrap();

    let mut counts = hits(&client, &url, 300, 8).await;
    counts.sort_unstable();
    assert_eq!(counts, (base + 1..=base + 300).collect::<Vec<_>>());
    let stats = stats(&client, &url).await;
    assert_eq!(stats["total_hits"], base + 300);
    let servers = servers(&stats);
    assert_eq!(servers.len(), 1, "one web container: {servers:?}");
    assert_eq!(servers[0].1, base + 300);

    drop(cleanup);
    drop(images);
}

/// Leaves the swarm on drop, if this test started it, and removes the bridge
/// network that `swarm init` created.
struct Swarm {
    started_here: bool,
    gwbridge_created: bool,
}

impl Swarm {
    fn join() -> Result<Swarm, String> {
        let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])?;
        if state.trim() == "active" {
            return Ok(Swarm {
                started_here: false,
                gwbridge_created: false,
            });
        }
        let gwbridge_existed = docker(&["network", "inspect", "docker_gwbridge"]).is_ok();
        docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
        Ok(Swarm {
            started_here: true,
            gwbridge_created: !gwbridge_existed,
        })
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let mut steps = Vec::new();
        if self.started_here {
            steps.push(["swarm", "leave", "--force"]);
        }
        if self.gwbridge_created {
            steps.push(["network", "rm", "docker_gwbridge"]);
        }
        for args in steps {
            if let Err(error) = docker(&args) {
                eprintln!("cleanup: {error}");
            }
        }
    }
}

fn running_tasks(service: &str) -> Vec<String> {
    docker(&[
        "service",
        "ps",
        service,
        "--filter",
        "desired-state=running",
        "--format",
        "{{.ID}} {{.CurrentState}}",
    ])
    .unwrap_or_default()
    .lines()
    .filter(|line| line.contains("Running"))
    .map(|line| line.split_whitespace().next().unwrap().to_owned())
    .collect()
}

async fn wait_for_tasks(service: &str, replicas: usize) {
    let started = Instant::now();
    while running_tasks(service).len() != replicas {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{service} did not reach {replicas} running tasks: {}",
            docker(&["service", "ps", "--no-trunc", service]).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(docker),
    ignore = "no Docker engine answered `docker info` when the tests were built"
)]
async fn swarm_stack_serves_https_and_scales_the_web_tier_behind_the_load_balancer() {
    let _swarm = match Swarm::join() {
        Ok(swarm) => swarm,
        Err(error) => {
            // Said, not hidden: the Compose test above still covers the images.
            panic!(
                "swarm mode is not available on this engine, so the stack cannot be tested here: {error}"
            );
        }
    };
    let tag = unique("t");
    let images = TestImages::build("awesome-counter-test", &tag).expect(NO_DOCKER);
    let stack = unique("acprod");
    let stats_secret = format!("{stack}_stats_users");
    let password = uuid::Uuid::new_v4().simple().to_string();
    let mut cleanup = Cleanup::default();

    let mut create_secret = Command::new("sh");
    create_secret.args(["-c", &format!("printf 'userlist stats_users\\n    user admin insecure-password {password}\\n' | docker secret create {stats_secret} -")]);
    run_with(&mut create_secret).expect("creating the stats secret");
    cleanup.docker(&["secret", "rm", &stats_secret]);
    // The certificate secret as the README has users make it: chain, then key.
    let certificate = TestCertificate::new().expect("making a test certificate with openssl");
    let tls_secret = format!("{stack}_tls");
    docker(&[
        "secret",
        "create",
        &tls_secret,
        certificate.bundle.to_str().unwrap(),
    ])
    .expect("creating the TLS secret");
    cleanup.docker(&["secret", "rm", &tls_secret]);

    let dir = tempfile::tempdir().unwrap();
    let override_file = dir.path().join("test.yaml");
    // The stack as shipped, with this build's images, the gateway on its embedded
    // store, no Aerospike tasks (its image cannot be pulled here) and the stats
    // secret under this test's name. `docker stack deploy` keeps the first file's
    // value where the second says "", so AEROSPIKE_HOSTS is a blank instead (the
    // gateway ignores blank hosts).
    std::fs::write(
        &override_file,
        format!(
            "services:\n  lb:\n    image: {lb}\n  web:\n    image: {web}\n  gateway:\n    image: {gateway}\n    environment:\n      AEROSPIKE_HOSTS: \" \"\n    deploy:\n      replicas: 1\n  aerospike:\n    deploy:\n      replicas: 0\nsecrets:\n  haproxy_stats_users:\n    external: true\n    name: {stats_secret}\n",
            lb = images.lb,
            web = images.web,
            gateway = images.gateway,
        ),
    )
    .unwrap();
    let http_port = free_port();
    let https_port = std::iter::repeat_with(free_port)
        .find(|port| *port != http_port)
        .unwrap();
    let mut deploy = Command::new("docker");
    deploy
        .env("LB_PORT", http_port.to_string())
        .env("LB_HTTPS_PORT", https_port.to_string())
        // The certificate secret is chosen the way a renewal names its new one.
        .env("TLS_SECRET", &tls_secret)
        // Every client of this test reaches the balancer from one address (Docker's
        // proxy for published ports on loopback), hundreds of hits a second: the
        // limit has its own test at the end.
        .env("RATE_LIMIT", "1000000")
        .args(["stack", "deploy", "--detach=true", "-c"])
        .arg(repo_root().join("deploy/stack.yaml"))
        .arg("-c")
        .arg(&override_file)
        .arg(&stack);
    let started = Instant::now();
    run_with(&mut deploy).expect("docker stack deploy");
    // Networks go once their last container is gone; wait for it after
    // `stack rm` (cleanup runs last added first) and before the swarm and the
    // secrets are removed.
    let mut wait_gone = Command::new("sh");
    wait_gone.args(["-c", &format!("for i in $(seq 60); do [ -z \"$(docker ps -aq --filter label=com.docker.stack.namespace={stack})\" ] && [ -z \"$(docker network ls -q --filter label=com.docker.stack.namespace={stack})\" ] && exit 0; sleep 1; done")]);
    cleanup.push(wait_gone);
    cleanup.docker(&["stack", "rm", &stack]);
    for service in ["lb", "web", "gateway"] {
        let service = format!("{stack}_{service}");
        cleanup.show_docker_on_failure(&["service", "ps", "--no-trunc", &service]);
        cleanup.show_docker_on_failure(&[
            "service",
            "logs",
            "--timestamps",
            "--tail",
            "100",
            &service,
        ]);
    }

    let url = format!("https://127.0.0.1:{https_port}");
    let plain = format!("http://127.0.0.1:{http_port}");
    let client = https_client(&certificate.ca_pem, None);
    wait_for_200(&client, &format!("{url}/"), Duration::from_secs(120)).await;
    eprintln!(
        "swarm: first 200 on / over HTTPS {:?} after `docker stack deploy`",
        started.elapsed()
    );

    check_https_front(&client, &url, &plain).await;
    check_tls_versions(https_port, &certificate);

    // The stats page wants the secret's credentials. A client each: HAProxy
    // closes the connection after its 401.
    let stats_url = format!("{url}/haproxy?stats");
    let anonymous = https_client(&certificate.ca_pem, None)
        .get(&stats_url)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(
        anonymous
            .headers()
            .contains_key("strict-transport-security"),
        "HSTS on HAProxy's own answers too"
    );
    let page = https_client(&certificate.ca_pem, None)
        .get(&stats_url)
        .basic_auth("admin", Some(&password))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text().await.unwrap().contains("web1"),
        "the stats page lists the web servers"
    );

    // Unique visitors behind the balancer: it replaces whatever X-Forwarded-For a
    // client sends with the address the client connected from, so two hits that
    // claim to come from two addresses are one visitor. A hit sent over plain
    // HTTP first is only redirected, and counts nothing.
    let key = unique("visitors");
    let redirected = client
        .post(format!("{plain}/api/pages/{key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(redirected.status(), 308, "a POST over plain HTTP");
    for claimed in ["203.0.113.1", "203.0.113.2"] {
        let response = client
            .post(format!("{url}/api/pages/{key}"))
            .header("x-forwarded-for", claimed)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let today = json_at(&client, &format!("{url}/api/pages/{key}?days=1")).await;
    assert_eq!(
        (&today["today"]["hits"], &today["today"]["visitors"]),
        (&serde_json::json!(2), &serde_json::json!(1)),
        "{today}"
    );

    // Scale the web tier to 4; the load balancer finds the new replicas by itself.
    let web = format!("{stack}_web");
    docker(&["service", "scale", "--detach", &format!("{web}=4")]).expect("scaling web");
    wait_for_tasks(&web, 4).await;
    // Waiting for the first 200 may have counted more than one hit (a timed-out
    // try can still land), so count from here.
    let base = stats(&client, &url).await["total_hits"].as_u64().unwrap();
    let started = Instant::now();
    let mut acknowledged = 0;
    loop {
        acknowledged += hits(&client, &url, 40, 4).await.len() as u64;
        let stats = stats(&client, &url).await;
        let servers = servers(&stats);
        if servers.len() == 4 {
            let sum: u64 = servers.iter().map(|(_, n)| n).sum();
            let total = stats["total_hits"].as_u64().unwrap();
            assert_eq!(sum, total, "the per-server totals add up: {servers:?}");
            assert_eq!(
                total - base,
                acknowledged,
                "every acknowledged hit is counted once"
            );
            eprintln!(
                "swarm: all 4 replicas served after {:?}: {servers:?}",
                started.elapsed()
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "after 60 s only {servers:?} served"
        );
    }

    // Kill a replica while hits flow: no acknowledged hit is lost.
    let before = stats(&client, &url).await["total_hits"].as_u64().unwrap();
    let load = tokio::spawn({
        let url = url.clone();
        let client = client.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(6);
            let (mut counts, mut failed) = (Vec::new(), 0);
            while Instant::now() < deadline {
                // A replica killed mid-answer cuts the body short: that hit was
                // not acknowledged, like one that got no answer.
                match client.get(format!("{url}/")).send().await {
                    Ok(r) if r.status() == 200 => match r.text().await {
                        Ok(body) => counts.push(seen_by(&body)),
                        Err(_) => failed += 1,
                    },
                    _ => failed += 1,
                }
            }
            (counts, failed)
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={web}"),
    ])
    .unwrap()
    .lines()
    .next()
    .expect("a running web container")
    .to_owned();
    docker(&["kill", &victim]).expect("killing a web replica");
    let (counts, failed) = load.await.unwrap();
    let after = stats(&client, &url).await["total_hits"].as_u64().unwrap();
    let distinct: BTreeSet<u64> = counts.iter().copied().collect();
    eprintln!(
        "swarm: killed a replica under load: {} hits acknowledged, {failed} failed, total {before} -> {after}",
        counts.len()
    );
    assert_eq!(
        distinct.len(),
        counts.len(),
        "two acknowledged hits share a count"
    );
    assert!(counts.iter().all(|n| *n > before && *n <= after));
    assert!(
        after - before >= counts.len() as u64,
        "an acknowledged hit was lost"
    );

    // Scale back down.
    docker(&["service", "scale", "--detach", &format!("{web}=1")]).expect("scaling web down");
    wait_for_tasks(&web, 1).await;
    wait_for_200(&client, &format!("{url}/healthz"), Duration::from_secs(30)).await;

    check_rate_limit(&stack, &client, &url, &certificate).await;

    drop(cleanup);
    drop(images);
}

/// Over HTTPS every answer carries HSTS; over plain HTTP pages are redirected to
/// the same URL on the HTTPS port (308, so a POST stays a POST) without HSTS,
/// and `/healthz` answers for health checkers.
async fn check_https_front(client: &reqwest::Client, url: &str, plain: &str) {
    let page = client.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(
        header(&page, "strict-transport-security"),
        Some("max-age=63072000"),
        "HSTS over HTTPS"
    );
    for path in ["/", "/stats?days=7", "/badge/a/b.svg", "/haproxy?stats"] {
        let response = client.get(format!("{plain}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 308, "GET {path} over plain HTTP");
        assert_eq!(
            header(&response, "location"),
            Some(format!("{url}{path}").as_str()),
            "GET {path} over plain HTTP"
        );
        assert!(
            header(&response, "strict-transport-security").is_none(),
            "HSTS only over HTTPS"
        );
    }
    // The redirect leads to the page.
    let followed = client
        .get(format!("{url}/stats?days=7"))
        .send()
        .await
        .unwrap();
    assert_eq!(followed.status(), 200);
    let health = client.get(format!("{plain}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "/healthz over plain HTTP");
}

/// Only TLS 1.2 and 1.3 with the profile's ciphers. What must be refused is
/// tried with a client that allows it (security level 0 lets it use the old
/// protocols' SHA-1 signatures), first shown to complete it with an `openssl
/// s_server` that speaks it.
fn check_tls_versions(port: u16, certificate: &TestCertificate) {
    let control_port = free_port().to_string();
    let mut control = tokio::process::Command::new("openssl");
    control
        .args(["s_server", "-accept", &format!("127.0.0.1:{control_port}")])
        .arg("-cert")
        .arg(&certificate.bundle)
        // -www: it answers by itself, and keeps serving after a connection.
        .args([
            "-min_protocol",
            "TLSv1",
            "-cipher",
            "ALL:@SECLEVEL=0",
            "-www",
        ]);
    let logs = tempfile::tempdir().unwrap();
    let control = e2e::Process::spawn("openssl-s_server", control, logs.path());
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", control_port.parse().unwrap())).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "openssl s_server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let port = port.to_string();
    for (refused, alert) in [
        (
            ["-tls1", "-cipher", "ALL:@SECLEVEL=0"],
            "alert protocol version",
        ),
        (
            ["-tls1_1", "-cipher", "ALL:@SECLEVEL=0"],
            "alert protocol version",
        ),
        // CBC with SHA-1: TLS 1.2 has it, the profile does not.
        (
            ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"],
            "alert handshake failure",
        ),
    ] {
        let (completed, output) = tls_handshake(&control_port, &refused);
        assert!(
            completed,
            "the client cannot do {refused:?} at all:\n{output}"
        );
        let (completed, output) = tls_handshake(&port, &refused);
        assert!(
            !completed,
            "the load balancer accepted {refused:?}:\n{output}"
        );
        assert!(
            output.contains(alert),
            "{refused:?} refused with {alert:?}:\n{output}"
        );
    }
    drop(control);
    for accepted in [
        &["-tls1_3"][..],
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"],
    ] {
        let (completed, output) = tls_handshake(&port, accepted);
        assert!(completed, "{accepted:?} refused:\n{output}");
    }
}

/// `openssl s_client` to 127.0.0.1:`port`: whether a handshake completed, and
/// what the client said.
fn tls_handshake(port: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running openssl s_client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let completed = output.status.success() && !text.contains("Cipher is (NONE)");
    (completed, text)
}

/// The limit a test sets, and the seconds a refused client is told to wait.
const TEST_RATE_LIMIT: u64 = 20;
const RETRY_AFTER: u64 = 20;

/// Lowers the stack's rate limit the way an operator changes it, then, from two
/// addresses of their own (in the balancer's network namespace, where the whole
/// loopback range is the balancer's), has one client go over the limit and
/// checks that it gets 429 with Retry-After while the other still counts, and
/// that the first counts again once it has waited that long.
async fn check_rate_limit(
    stack: &str,
    client: &reqwest::Client,
    url: &str,
    certificate: &TestCertificate,
) {
    let lb = format!("{stack}_lb");
    docker(&[
        "service",
        "update",
        "--quiet",
        "--detach=false",
        "--env-add",
        &format!("RATE_LIMIT={TEST_RATE_LIMIT}"),
        &lb,
    ])
    .expect("changing RATE_LIMIT");
    wait_for_200(client, &format!("{url}/healthz"), Duration::from_secs(60)).await;
    let container = running_container(&lb).expect("the load balancer's container");
    let ca_pem = certificate.ca_pem.clone();
    let key = unique("limited");
    let report = in_network_of(&container, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(two_clients_one_over_the_limit(ca_pem, key))
    })
    .expect("running clients in the load balancer's network namespace");
    eprintln!("swarm: rate limit {TEST_RATE_LIMIT} per 10 s: {report}");
}

async fn two_clients_one_over_the_limit(ca_pem: Vec<u8>, key: String) -> String {
    // HAProxy's own port, seen from inside its namespace.
    let url = "https://127.0.0.1:443";
    let hit_url = format!("{url}/api/pages/{key}");
    let eager = https_client(&ca_pem, Some([127, 0, 0, 2].into()));
    let other = https_client(&ca_pem, Some([127, 0, 0, 3].into()));
    let total = |response: reqwest::Response| async move {
        assert_eq!(response.status(), 201);
        response.json::<serde_json::Value>().await.unwrap()["total"]
            .as_u64()
            .unwrap()
    };

    // The eager client sends hits back to back: the first TEST_RATE_LIMIT count
    // (HAProxy's sliding average may let one more through when a 10 s period
    // turns over mid-burst), every later one is refused and counts nothing.
    let mut counted = Vec::new();
    let mut refused = 0;
    for _ in 0..TEST_RATE_LIMIT + 10 {
        let response = eager.post(&hit_url).send().await.unwrap();
        if response.status() == 201 && refused == 0 {
            counted.push(total(response).await);
            continue;
        }
        assert_eq!(response.status(), 429, "after a 429, only 429s");
        assert_eq!(
            header(&response, "retry-after"),
            Some(RETRY_AFTER.to_string().as_str())
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "too_many_requests", "{body}");
        refused += 1;
    }
    let allowed = counted.len() as u64;
    assert!(
        (TEST_RATE_LIMIT..=TEST_RATE_LIMIT + 1).contains(&allowed),
        "{allowed} hits counted before the first 429, with a limit of {TEST_RATE_LIMIT}"
    );
    assert_eq!(counted, (1..=allowed).collect::<Vec<_>>());
    // A page over the limit gets the same answer in text.
    let page = eager.get(format!("{url}/")).send().await.unwrap();
    assert_eq!(page.status(), 429);
    assert!(page.headers().contains_key("retry-after"));
    assert!(page.text().await.unwrap().starts_with("Too many requests"));

    // Another address still counts, and the refused hits were not counted.
    let next = total(other.post(&hit_url).send().await.unwrap()).await;
    assert_eq!(next, allowed + 1, "the other client's hit");

    // The eager client, having waited as long as it was told, counts again.
    tokio::time::sleep(Duration::from_millis(RETRY_AFTER * 1000 + 500)).await;
    let again = total(eager.post(&hit_url).send().await.unwrap()).await;
    assert_eq!(again, allowed + 2, "the eager client after Retry-After");
    format!(
        "127.0.0.2 had {allowed} hits counted and {refused} refused with 429, 127.0.0.3 counted hit {next}, 127.0.0.2 counted hit {again} after waiting {RETRY_AFTER} s"
    )
}
