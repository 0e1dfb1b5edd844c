//! The gateway against a misbehaving Aerospike: a cluster that comes up late and
//! goes away, and a hot record that answers KEY_BUSY.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e::{Backend, Gateway, TcpProxy, http_client};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SKIP: &str = "AEROSPIKE_HOSTS is not set, so there is no Aerospike cluster to run against";

fn hit(server: &str) -> Value {
    json!({"id": uuid::Uuid::now_v7().to_string(), "server": server, "ts": 1_732_000_000_000_u64})
}

fn run_id(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

async fn post(
    client: &reqwest::Client,
    gateway: &Gateway,
    body: &Value,
) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let response = client
        .post(format!("{}/v1/hits", gateway.url))
        .json(body)
        .send()
        .await
        .expect("the gateway answers");
    let status = response.status();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        assert_eq!(response.headers()["retry-after"], "1");
    }
    (
        status,
        response.json().await.expect("JSON"),
        started.elapsed(),
    )
}

async fn wait_for_readyz(gateway: &Gateway, want: StatusCode) {
    let client = http_client();
    let started = Instant::now();
    loop {
        let status = client
            .get(format!("{}/readyz", gateway.url))
            .send()
            .await
            .unwrap()
            .status();
        if status == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "readyz stayed {status}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(aerospike),
    ignore = "AEROSPIKE_HOSTS is not set, so there is no Aerospike cluster to run against"
)]
async fn gateway_waits_for_a_cluster_that_comes_up_late() {
    let _turn = Backend::Aerospike.exclusive().await;
    let (mut proxy, gateway, _dir) = gateway_behind_proxy().await;
    let client = http_client();
    let server = run_id("late");

    // The cluster is not there yet: the gateway runs, says so, and does not hang.
    wait_for_readyz(&gateway, StatusCode::SERVICE_UNAVAILABLE).await;
    let (status, error, took) = post(&client, &gateway, &hit(&server)).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("store_unavailable"))
    );
    assert!(
        error["message"].as_str().unwrap().contains("not connected"),
        "{error}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // It comes up: the gateway connects by itself and counts.
    proxy.connect().await;
    wait_for_readyz(&gateway, StatusCode::OK).await;
    assert_eq!(
        post(&client, &gateway, &hit(&server)).await.0,
        StatusCode::CREATED
    );
    assert_eq!(server_total(&gateway, &server).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(aerospike_single),
    ignore = "needs AEROSPIKE_HOSTS to name a single node: only then does a proxy in front of it carry all of the gateway's traffic, so cutting it is an outage"
)]
async fn gateway_rides_out_a_cluster_outage() {
    let _turn = Backend::Aerospike.exclusive().await;
    let (mut proxy, gateway, _dir) = gateway_behind_proxy().await;
    let client = http_client();
    let server = run_id("outage");
    proxy.connect().await;
    wait_for_readyz(&gateway, StatusCode::OK).await;
    assert_eq!(
        post(&client, &gateway, &hit(&server)).await.0,
        StatusCode::CREATED
    );

    // It goes away: every hit is refused within the store timeout, never hangs.
    proxy.cut().await;
    for _ in 0..5 {
        let (status, error, took) = post(&client, &gateway, &hit(&server)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{error}");
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }
    wait_for_readyz(&gateway, StatusCode::SERVICE_UNAVAILABLE).await;

    // It comes back: so does the gateway, and nothing refused was counted.
    proxy.connect().await;
    wait_for_readyz(&gateway, StatusCode::OK).await;
    let started = Instant::now();
    loop {
        let (status, _, _) = post(&client, &gateway, &hit(&server)).await;
        if status == StatusCode::CREATED {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "hits still refused after the cluster came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        server_total(&gateway, &server).await,
        2,
        "only the two acknowledged hits were counted"
    );
}

/// A gateway whose only way to the cluster is a proxy that is not forwarding yet.
async fn gateway_behind_proxy() -> (TcpProxy, Gateway, tempfile::TempDir) {
    let seed = Backend::aerospike_hosts().expect(SKIP);
    let proxy = TcpProxy::new(seed.split(',').next().unwrap().trim());
    let dir = tempfile::tempdir().unwrap();
    let listen = proxy.listen.to_string();
    let gateway = Gateway::start_alive(
        Backend::Aerospike,
        dir.path(),
        dir.path(),
        &[("AEROSPIKE_HOSTS", &listen), ("STORE_TIMEOUT_MS", "1000")],
    )
    .await;
    (proxy, gateway, dir)
}

async fn server_total(gateway: &Gateway, server: &str) -> u64 {
    let summary = gateway.summary().await;
    summary
        .servers
        .iter()
        .find(|s| s.server.as_str() == server)
        .map_or(0, |s| s.total)
}

/// Sets a namespace setting on every node for the test's duration.
struct ServerSetting {
    hosts: String,
    name: &'static str,
    original: String,
}

fn asinfo(hosts: &str, command: &str) -> String {
    let python = std::env::var("AEROSPIKE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/asinfo.py");
    let output = std::process::Command::new(&python)
        .args([script, hosts, command])
        .output()
        .expect("running asinfo.py");
    assert!(
        output.status.success(),
        "asinfo {command}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

impl ServerSetting {
    fn set(hosts: &str, name: &'static str, value: &str) -> ServerSetting {
        let config = asinfo(hosts, "get-config:context=namespace;id=test");
        let original = config
            .split(';')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} not in the namespace config"))
            .trim()
            .to_owned();
        asinfo(
            hosts,
            &format!("set-config:context=namespace;id=test;{name}={value}"),
        );
        ServerSetting {
            hosts: hosts.to_owned(),
            name,
            original,
        }
    }
}

impl Drop for ServerSetting {
    fn drop(&mut self) {
        asinfo(
            &self.hosts,
            &format!(
                "set-config:context=namespace;id=test;{}={}",
                self.name, self.original
            ),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(aerospike),
    ignore = "AEROSPIKE_HOSTS is not set, so there is no Aerospike cluster to run against"
)]
async fn key_busy_on_the_hot_counter_is_retried_not_shown() {
    const GATEWAYS: usize = 3;
    const HITS: usize = 600;
    // Rounds stop at the first KEY_BUSY (usually within 20); on a busy machine
    // one fresh-clone run met none in 50, so there is room for more.
    const ROUNDS: usize = 200;
    let _turn = Backend::Aerospike.exclusive().await;
    let hosts = Backend::aerospike_hosts().expect(SKIP);
    // One pending transaction per record, so contention turns into KEY_BUSY fast.
    let _setting = ServerSetting::set(&hosts, "transaction-pending-limit", "1");
    let dir = tempfile::tempdir().unwrap();
    let mut gateways = Vec::new();
    for _ in 0..GATEWAYS {
        let env = [
            ("RUST_LOG", "info,aerospike_gateway=debug"),
            ("MAX_BATCH", "4"),
        ];
        gateways.push(Gateway::start_with(Backend::Aerospike, dir.path(), dir.path(), &env).await);
    }
    let base = gateways[0].summary().await.total_hits;
    let server = run_id("busy");
    // Another writer keeps both hot records busy while the hits arrive.
    let stop = Arc::new(AtomicBool::new(false));
    let contender = tokio::spawn(contend(
        hosts.clone(),
        vec!["total_hits".into(), server.clone()],
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = http_client();
    // KEY_BUSY is a race: send rounds of hits until the gateways have met it.
    let mut counts = Vec::new();
    let mut retries = 0;
    for _round in 0..ROUNDS {
        let answers = futures::future::join_all((0..HITS).map(|i| {
            let (client, gateway, hit) = (client.clone(), &gateways[i % GATEWAYS], hit(&server));
            async move { post(&client, gateway, &hit).await }
        }))
        .await;
        for (status, body, _) in answers {
            assert_eq!(status, StatusCode::CREATED, "{body}");
            counts.push(body["total_hits"].as_u64().unwrap());
        }
        retries = gateways
            .iter()
            .map(|g| g.log_text().matches("retrying a counter update").count())
            .sum();
        if retries > 0 {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let contender_busy = contender.await.unwrap();
    counts.sort_unstable();
    let hits = counts.len() as u64;
    assert_eq!(counts, (base + 1..=base + hits).collect::<Vec<_>>());
    assert!(
        retries > 0,
        "the gateways never got KEY_BUSY (the other writer got it {contender_busy} times), so the retry path did not run"
    );
    eprintln!(
        "{hits} hits through {GATEWAYS} gateways: {retries} KEY_BUSY retries, none shown (the other writer got {contender_busy})"
    );
}

/// Another writer on the hot records: 32 concurrent `operate(add 0, get)` per key,
/// the load at which Aerospike answers KEY_BUSY. Adding 0 leaves every count exact.
/// Answers how often the server said busy to it.
///
/// On one node a write holds its record for only microseconds, and KEY_BUSY needs
/// two writes already queued behind it, so the race is rare. The last key (this
/// test's own server record) gets a 256 KiB ballast bin for the duration: every
/// write of it then copies the whole record, holding it long enough for a queue
/// to form. The ballast goes again at the end, leaving the tutorial's layout.
async fn contend(hosts: String, keys: Vec<String>, stop: Arc<AtomicBool>) -> u64 {
    use aerospike::{Bin, Client, ClientPolicy, Key, ResultCode, Value, WritePolicy, operations};
    let client = Arc::new(
        Client::new(&ClientPolicy::default(), &hosts)
            .await
            .expect("connecting the contender"),
    );
    let ballast_key =
        Key::new("test", "summary", Value::from(keys.last().unwrap().clone())).unwrap();
    client
        .put(
            &WritePolicy::default(),
            &ballast_key,
            &[Bin::new("ballast", Value::Blob(vec![0x5a; 256 * 1024]))],
        )
        .await
        .expect("writing the ballast bin");
    let busy = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for key in keys {
        for _ in 0..32 {
            let (client, stop, busy) = (client.clone(), stop.clone(), busy.clone());
            let key = Key::new("test", "summary", Value::from(key.clone())).unwrap();
            tasks.push(tokio::spawn(async move {
                let ops = [
                    operations::add(&Bin::new("total", Value::from(0))),
                    operations::get_bin("total"),
                ];
                while !stop.load(Ordering::SeqCst) {
                    if let Err(e) = client.operate(&WritePolicy::default(), &key, &ops).await {
                        if e.matches(&[ResultCode::KeyBusy]) {
                            busy.fetch_add(1, Ordering::Relaxed);
                        }
                        // Some errors come back without waiting; let the test run.
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
    }
    futures::future::join_all(tasks).await;
    // KEY_BUSY answers count against the client's per-node error breaker, which
    // may still be open for a moment.
    let ballast_removed = Instant::now() + Duration::from_secs(10);
    while let Err(e) = client
        .put(
            &WritePolicy::default(),
            &ballast_key,
            &[Bin::new("ballast", Value::Nil)],
        )
        .await
    {
        assert!(
            Instant::now() < ballast_removed,
            "removing the ballast bin: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    busy.load(Ordering::Relaxed)
}
