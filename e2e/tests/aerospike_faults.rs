//! The gateway against a misbehaving Aerospike: a cluster that comes up late and
//! goes away, a network that stalls while writes are out (their outcome in
//! doubt), and a hot record that answers KEY_BUSY.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use e2e::{
    Backend, Gateway, PageAnswer, TcpProxy, Web, http_client, missing_records,
    post_page_hit_until_acknowledged,
};
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

/// Hits sent while the network to the cluster stalls: the gateway's writes for
/// them are out, and arrive after it gave up on them.
const IN_DOUBT_HITS: usize = 5;
/// Rounds of them at most, until one of their writes lands after its 503.
const IN_DOUBT_ROUNDS: usize = 10;
/// How long a client retries a hit with its id before the test fails.
const RETRY_FOR: Duration = Duration::from_secs(60);

/// Issue 18, item 4: `POST /api/pages/<key>` hits answered 503 across an
/// in-doubt write (the network to the cluster stalls: the gateway's writes are
/// sent, it gives up on them at its store deadline, and they are applied after
/// that), then retried with their `Idempotency-Key` until acknowledged, are
/// counted exactly once each: the key's total is the number of distinct hits,
/// and a hit answered `duplicate: true` has its `page_hits` record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(aerospike_single),
    ignore = "needs AEROSPIKE_HOSTS to name a single node: only then does a proxy in front of it carry all of the gateway's traffic, so stalling it stalls every write"
)]
async fn page_hits_retried_across_an_in_doubt_write_count_once() {
    let _turn = Backend::Aerospike.exclusive().await;
    let hosts = Backend::aerospike_hosts().expect(SKIP);
    let (mut proxy, gateway, dir) = gateway_behind_proxy().await;
    proxy.connect().await;
    wait_for_readyz(&gateway, StatusCode::OK).await;
    let web = Web::start(&gateway.url, &run_id("in-doubt"), dir.path(), &[]).await;
    let key = format!("{}/in-doubt", run_id("e2e"));
    let client = http_client();
    let mut errors = BTreeMap::new();

    // One hit before the stall: the key exists, the connections are up.
    let first = uuid::Uuid::new_v4().to_string();
    let answer =
        post_page_hit_until_acknowledged(&client, &web.url, &key, &first, RETRY_FOR, &mut errors)
            .await;
    let PageAnswer::Counted(recorded) = answer else {
        panic!("the first hit, with nothing wrong, was answered {answer:?}");
    };
    assert_eq!(recorded.total, 1);

    // Rounds of: stall, hits that answer 503, resume, retries. A write the
    // gateway gave up on may also never have left it (its client may drop a
    // node it cannot reach): the rounds go on until one landed after its 503,
    // which the retry of that hit shows as `duplicate: true`.
    let (mut numbers, mut duplicates, mut posted) = (vec![1], Vec::new(), 1_u64);
    let mut rounds = 0;
    while duplicates.is_empty() && rounds < IN_DOUBT_ROUNDS {
        rounds += 1;
        proxy.stall();
        let ids: Vec<String> = (0..IN_DOUBT_HITS)
            .map(|_| uuid::Uuid::new_v4().to_string())
            .collect();
        let answers = futures::future::join_all(ids.iter().map(|id| {
            let (client, url) = (client.clone(), format!("{}/api/pages/{key}", web.url));
            async move {
                let response = client
                    .post(url)
                    .header("Idempotency-Key", id)
                    .send()
                    .await
                    .expect("the web tier answers");
                let status = response.status();
                (status, response.text().await.unwrap_or_default())
            }
        }))
        .await;
        for (status, body) in &answers {
            assert_eq!(
                *status,
                StatusCode::SERVICE_UNAVAILABLE,
                "a page hit while the store stalls: {body}"
            );
        }
        // The gateway has given up on its writes; they are still on their way.
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.resume();

        for id in &ids {
            match post_page_hit_until_acknowledged(
                &client,
                &web.url,
                &key,
                id,
                RETRY_FOR,
                &mut errors,
            )
            .await
            {
                PageAnswer::Counted(recorded) => numbers.push(recorded.total),
                PageAnswer::Duplicate(_) => duplicates.push(id.clone()),
                PageAnswer::GaveUp => panic!("{id}: still not acknowledged after {RETRY_FOR:?}"),
            }
        }
        posted += IN_DOUBT_HITS as u64;
    }
    let total = gateway.page_stats(&key, 1).await.total;
    eprintln!(
        "{rounds} round(s) of {IN_DOUBT_HITS} page hits answered 503 across a stalled write, retried with \
         their ids: {} counted by the retry, {} answered as duplicates, retries failed {errors:?}; \
         {posted} distinct hits, the key's total {total}",
        numbers.len() - 1,
        duplicates.len()
    );
    assert_eq!(total, posted, "every distinct hit counted once");
    assert!(
        !duplicates.is_empty(),
        "in {rounds} rounds no write the gateway gave up on landed after its 503 (no retry was a \
         duplicate), so the in-doubt path did not run"
    );
    let distinct: HashSet<u64> = numbers.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        numbers.len(),
        "numbers given twice: {numbers:?}"
    );
    assert!(numbers.iter().all(|&n| n <= total), "{numbers:?}");
    let missing = missing_records(&hosts, "page_hits", &duplicates).await;
    assert!(
        missing.is_empty(),
        "hits answered duplicate: true without a page_hits record: {missing:?}"
    );
    // What the stall left to the sweeper is finished: the cluster is shared.
    let audit = gateway.settled_audit().await;
    assert!(audit.pages.consistent, "{:?}", audit.pages);
    web.stop().await;
}

/// The same for the tutorial's hits, `POST /v1/hits` with ids the test keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(aerospike_single),
    ignore = "needs AEROSPIKE_HOSTS to name a single node: only then does a proxy in front of it carry all of the gateway's traffic, so stalling it stalls every write"
)]
async fn tutorial_hits_retried_across_an_in_doubt_write_count_once() {
    let _turn = Backend::Aerospike.exclusive().await;
    let hosts = Backend::aerospike_hosts().expect(SKIP);
    let (mut proxy, gateway, _dir) = gateway_behind_proxy().await;
    proxy.connect().await;
    wait_for_readyz(&gateway, StatusCode::OK).await;
    let client = http_client();
    let server = run_id("in-doubt");

    // Rounds, as for the page hits, until a write landed after its 503.
    let (mut numbers, mut acknowledged, mut errors) = (Vec::new(), Vec::new(), BTreeMap::new());
    let (mut duplicates, mut rounds) = (0, 0);
    while duplicates == 0 && rounds < IN_DOUBT_ROUNDS {
        rounds += 1;
        proxy.stall();
        let hits: Vec<Value> = (0..IN_DOUBT_HITS).map(|_| hit(&server)).collect();
        let answers =
            futures::future::join_all(hits.iter().map(|hit| post(&client, &gateway, hit))).await;
        for (status, body, _) in &answers {
            assert_eq!(
                *status,
                StatusCode::SERVICE_UNAVAILABLE,
                "a hit while the store stalls: {body}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        proxy.resume();

        for hit in &hits {
            let started = Instant::now();
            loop {
                let (status, body, _) = post(&client, &gateway, hit).await;
                if status.is_success() {
                    if status == StatusCode::CREATED {
                        numbers.push(body["total_hits"].as_u64().expect("a total"));
                    } else {
                        duplicates += 1;
                    }
                    acknowledged.push(hit["id"].as_str().unwrap().to_owned());
                    break;
                }
                *errors.entry(status.as_u16()).or_insert(0_u64) += 1;
                assert!(
                    started.elapsed() < RETRY_FOR,
                    "{hit}: still not acknowledged after {RETRY_FOR:?}: {status} {body}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let total = server_total(&gateway, &server).await;
    let posted = acknowledged.len();
    eprintln!(
        "{rounds} round(s) of {IN_DOUBT_HITS} hits answered 503 across a stalled write, retried with their \
         ids: {} counted by the retry, {duplicates} answered as duplicates, retries failed {errors:?}; \
         {posted} distinct hits, the server's total {total}",
        numbers.len(),
    );
    assert_eq!(total, posted as u64, "every distinct hit counted once");
    assert!(
        duplicates > 0,
        "in {rounds} rounds no write the gateway gave up on landed after its 503 (no retry was a \
         duplicate), so the in-doubt path did not run"
    );
    let distinct: HashSet<u64> = numbers.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        numbers.len(),
        "numbers given twice: {numbers:?}"
    );
    let missing = missing_records(&hosts, "hits", &acknowledged).await;
    assert!(
        missing.is_empty(),
        "acknowledged hits without a hit record: {missing:?}"
    );
    gateway.settled_audit().await;
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
            (
                "RUST_LOG",
                "info,aerospike_gateway=debug,store_aerospike=debug",
            ),
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
