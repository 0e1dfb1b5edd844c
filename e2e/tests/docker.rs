//! The shipped deployments, run for real on this machine's Docker engine with
//! images built from this build's binaries (no registry can be reached here):
//! - the dev Compose file, with the gateway on its embedded store;
//! - the Swarm stack: HAProxy finding replicas by DNS, the web tier scaled to 4,
//!   a replica killed under load;
//! - both files' Aerospike parts validated with `config`, since the Aerospike
//!   image cannot be pulled here.
//!
//! Everything a test creates (containers, networks, volumes, secrets, the swarm
//! itself if the test started it) is removed when it ends, pass or fail.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::docker::{Cleanup, TestImages, compose_command, docker, repo_root, run_with};
use e2e::{free_port, http_client, seen_by};

const NO_DOCKER: &str = "no Docker engine answered `docker info` when the tests were built";

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    )
}

/// Polls `url` until it answers 200, or panics after `limit` with what went wrong.
async fn wait_for_200(url: &str, limit: Duration) -> Duration {
    let client = http_client();
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
async fn hits(url: &str, hits: usize, clients: usize) -> Vec<u64> {
    let url = format!("{url}/");
    let per_client = hits.div_ceil(clients);
    let tasks = (0..clients).map(|c| {
        let url = url.clone();
        let count = per_client.min(hits.saturating_sub(c * per_client));
        tokio::spawn(async move {
            let client = http_client();
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

async fn stats(url: &str) -> serde_json::Value {
    http_client()
        .get(format!("{url}/api/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
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
    for needle in [
        "aerospike/aerospike-server:8.1",
        "max_replicas_per_node: 1",
        "endpoint_mode: dnsrr",
        "haproxy_stats_users",
        "internal: true",
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

/// The collector is there only when asked for: the `tracing` profile in the dev
/// file, one replica in the stack; and Spin and the gateway are pointed at it
/// only when OTEL_EXPORTER_OTLP_ENDPOINT is set.
#[test]
#[cfg_attr(
    not(docker),
    ignore = "no Docker engine answered `docker info` when the tests were built"
)]
fn tracing_collector_is_optional() {
    let deploy = repo_root().join("deploy");
    let endpoint = "http://otel-collector:4318";
    let compose = |profile: bool, endpoint: &str| {
        let mut command = compose_command();
        command
            .current_dir(&deploy)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .args(["-f", "compose.yaml"]);
        if profile {
            command.args(["--profile", "tracing"]);
        }
        run_with(command.arg("config")).unwrap_or_else(|e| panic!("compose.yaml: {e}"))
    };
    // Compose v2 leaves a service of a profile not asked for out; v1 shows it.
    let plain = compose(false, "");
    assert!(
        !plain.contains("otel-collector:")
            || services_with(&plain, "profiles:") == ["otel-collector"],
        "{plain}"
    );
    assert!(!plain.contains(endpoint), "{plain}");
    let traced = compose(true, endpoint);
    assert!(traced.contains("otel/opentelemetry-collector:"), "{traced}");
    assert_eq!(
        services_with(&traced, "profiles:"),
        ["otel-collector"],
        "{traced}"
    );
    assert_eq!(
        traced
            .matches(&format!("OTEL_EXPORTER_OTLP_ENDPOINT: {endpoint}"))
            .count(),
        2,
        "web (Spin) and gateway export to the collector\n{traced}"
    );
    let stack = |replicas: &str| {
        let mut command = std::process::Command::new("docker");
        command
            .env("OTEL_COLLECTOR_REPLICAS", replicas)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .args(["stack", "config", "-c"])
            .arg(deploy.join("stack.yaml"));
        run_with(&mut command).unwrap_or_else(|e| panic!("stack.yaml: {e}"))
    };
    let on = stack("1");
    assert!(on.contains("otel/opentelemetry-collector:"), "{on}");
    assert_eq!(services_with(&on, "published:"), ["lb"], "{on}");
    assert!(stack("").contains("replicas: 0"), "off by default");
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
    wait_for_200(&format!("{url}/"), Duration::from_secs(60)).await;
    eprintln!("compose: first 200 on / {:?} after `up`", started.elapsed());
    // Waiting may have counted more than one hit (a timed-out try can still
    // land), so count from here.
    let base = stats(&url).await["total_hits"].as_u64().unwrap();

    let mut counts = hits(&url, 300, 8).await;
    counts.sort_unstable();
    assert_eq!(counts, (base + 1..=base + 300).collect::<Vec<_>>());
    let stats = stats(&url).await;
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
async fn swarm_stack_scales_the_web_tier_behind_the_load_balancer() {
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
    let secret = format!("{stack}_stats_users");
    let password = uuid::Uuid::new_v4().simple().to_string();
    let mut cleanup = Cleanup::default();

    let mut create_secret = Command::new("sh");
    create_secret.args(["-c", &format!("printf 'userlist stats_users\\n    user admin insecure-password {password}\\n' | docker secret create {secret} -")]);
    run_with(&mut create_secret).expect("creating the stats secret");
    cleanup.docker(&["secret", "rm", &secret]);

    let dir = tempfile::tempdir().unwrap();
    let override_file = dir.path().join("test.yaml");
    // The stack as shipped, with this build's images, the gateway on its embedded
    // store, no Aerospike tasks (its image cannot be pulled here) and the secret
    // under this test's name. `docker stack deploy` keeps the first file's value
    // where the second says "", so AEROSPIKE_HOSTS is a blank instead (the gateway
    // ignores blank hosts).
    std::fs::write(
        &override_file,
        format!(
            "services:\n  lb:\n    image: {lb}\n  web:\n    image: {web}\n  gateway:\n    image: {gateway}\n    environment:\n      AEROSPIKE_HOSTS: \" \"\n    deploy:\n      replicas: 1\n  aerospike:\n    deploy:\n      replicas: 0\nsecrets:\n  haproxy_stats_users:\n    external: true\n    name: {secret}\n",
            lb = images.lb,
            web = images.web,
            gateway = images.gateway,
        ),
    )
    .unwrap();
    let port = free_port().to_string();
    let mut deploy = Command::new("docker");
    deploy
        .env("LB_PORT", &port)
        .args(["stack", "deploy", "--detach=true", "-c"])
        .arg(repo_root().join("deploy/stack.yaml"))
        .arg("-c")
        .arg(&override_file)
        .arg(&stack);
    let started = Instant::now();
    run_with(&mut deploy).expect("docker stack deploy");
    cleanup.docker(&["stack", "rm", &stack]);
    // Networks go once their last container is gone; wait for it before the
    // swarm (and the secret) are removed.
    let mut wait_gone = Command::new("sh");
    wait_gone.args(["-c", &format!("for i in $(seq 60); do [ -z \"$(docker ps -aq --filter label=com.docker.stack.namespace={stack})\" ] && [ -z \"$(docker network ls -q --filter label=com.docker.stack.namespace={stack})\" ] && exit 0; sleep 1; done")]);
    cleanup.push(wait_gone);
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

    let url = format!("http://127.0.0.1:{port}");
    wait_for_200(&format!("{url}/"), Duration::from_secs(120)).await;
    eprintln!(
        "swarm: first 200 on / {:?} after `docker stack deploy`",
        started.elapsed()
    );

    // The stats page wants the secret's credentials. A client each: HAProxy
    // closes the connection after its 401.
    let stats_url = format!("{url}/haproxy?stats");
    let anonymous = http_client().get(&stats_url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let page = http_client()
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
    // claim to come from two addresses are one visitor.
    let key = unique("visitors");
    for claimed in ["203.0.113.1", "203.0.113.2"] {
        let response = http_client()
            .post(format!("{url}/api/pages/{key}"))
            .header("x-forwarded-for", claimed)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let today: serde_json::Value = e2e::get_json(&format!("{url}/api/pages/{key}?days=1")).await;
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
    let base = stats(&url).await["total_hits"].as_u64().unwrap();
    let started = Instant::now();
    let mut acknowledged = 0;
    loop {
        acknowledged += hits(&url, 40, 4).await.len() as u64;
        let stats = stats(&url).await;
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
    let before = stats(&url).await["total_hits"].as_u64().unwrap();
    let load = tokio::spawn({
        let url = url.clone();
        async move {
            let client = http_client();
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
    let after = stats(&url).await["total_hits"].as_u64().unwrap();
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
    wait_for_200(&format!("{url}/healthz"), Duration::from_secs(30)).await;

    drop(cleanup);
    drop(images);
}
