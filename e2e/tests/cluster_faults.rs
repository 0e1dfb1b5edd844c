//! The full path (clients, web tier, gateways, a 3-node Aerospike cluster with
//! replication factor 2) through faults, with nobody to reconcile anything:
//! a node stopped and started again, a node killed with `kill -9` and started
//! again, a gateway killed and started again, a gateway frozen (SIGSTOP) past
//! the store deadline and thawed, and a node cut off from the other two and
//! healed.
//!
//! Load runs through the web tier (`GET /`, which talks to gateway A) and,
//! beside it, straight to gateway B with hit ids the test keeps, retried with the
//! same id on failure as the component does. After each fault, with no operator
//! action: every acknowledged N is distinct, every acknowledged hit is counted
//! and has its hit record, and `GET /v1/audit` becomes consistent within a few
//! seconds. Each test prints what it saw: acknowledged, counted, hit records,
//! errors by status, p99, and the time until the audit was consistent.
//!
//! Each test starts its own cluster (`e2e::Cluster`: `asd` from `AEROSPIKE_ASD`,
//! each node in a network namespace); the tests take turns.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use counter_api::{Audit, Recorded};
use e2e::{Backend, Cluster, Gateway, Web, freeze, http_client, seen_by};
use serde_json::json;
use tokio::sync::Mutex;

/// Clients through the web tier, and straight to gateway B.
const WEB_CLIENTS: usize = 12;
const DIRECT_CLIENTS: usize = 4;
/// The fault comes after this much load, the repair after this much more, and
/// the load goes on for this long after the repair.
const BEFORE: Duration = Duration::from_secs(4);
const DURING: Duration = Duration::from_secs(6);
const AFTER: Duration = Duration::from_secs(5);
/// The longest the audit may take to agree once the load is over.
const SETTLE: Duration = Duration::from_secs(30);

static TURN: Mutex<()> = Mutex::const_new(());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    StopNode,
    KillNode,
    KillGateway,
    FreezeGateway,
    PartitionNode,
}

/// One test per fault, each shown as ignored, with the reason, where the suite
/// cannot start a cluster.
macro_rules! fault_tests {
    ($($test:ident => $fault:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(
                not(aerospike_cluster),
                ignore = "needs root (network namespaces) and an Aerospike server binary in AEROSPIKE_ASD; scripts/test passes the one it finds"
            )]
            async fn $test() {
                run(Fault::$fault).await;
            }
        )*
    };
}

fault_tests! {
    a_node_stopped_and_started_again => StopNode,
    a_node_killed_and_started_again => KillNode,
    a_gateway_killed_and_started_again => KillGateway,
    a_gateway_frozen_past_the_deadline_and_thawed => FreezeGateway,
    a_node_partitioned_from_the_others_and_healed => PartitionNode,
}

/// What the clients saw.
#[derive(Default)]
struct Seen {
    /// Every acknowledged N (`total_hits` after the hit), web and direct.
    numbers: Vec<u64>,
    /// The ids of the hits gateway B acknowledged.
    direct_ids: Vec<String>,
    /// Failed requests by status (0: no answer).
    errors: BTreeMap<u16, u64>,
    /// Latencies of the web tier's answers, in ms.
    web_ms: Vec<f64>,
}

async fn run(fault: Fault) {
    let _turn = TURN.lock().await;
    let mut cluster = Cluster::start(3).await;
    let hosts = cluster.hosts();
    let dir = cluster.log_dir().to_owned();
    let env = [
        ("AEROSPIKE_HOSTS", hosts.as_str()),
        ("RUST_LOG", "info,aerospike_gateway=debug"),
    ];
    for sub in ["a", "b"] {
        std::fs::create_dir_all(dir.join(sub)).expect("a log directory");
    }
    let mut gateway_a = Gateway::start_with(Backend::Aerospike, &dir, &dir.join("a"), &env).await;
    let gateway_b = Gateway::start_with(Backend::Aerospike, &dir, &dir.join("b"), &env).await;
    let web = Web::start(&gateway_a.url, "fault-web", &dir, &[]).await;
    let base = gateway_b.summary().await.total_hits;

    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..WEB_CLIENTS {
        load.push(tokio::spawn(web_client(web.url.clone(), stop.clone())));
    }
    for _ in 0..DIRECT_CLIENTS {
        load.push(tokio::spawn(direct_client(
            gateway_b.url.clone(),
            stop.clone(),
        )));
    }

    // Either gateway may be the one to see a short split (`splits` below counts
    // both), so both are watched.
    let readiness = [&gateway_a, &gateway_b]
        .map(|gateway| tokio::spawn(watch_readyz(gateway.url.clone(), stop.clone())));
    tokio::time::sleep(BEFORE).await;
    let victim = 1; // a node, or gateway A
    match fault {
        Fault::StopNode => cluster.stop(victim).await,
        Fault::KillNode => cluster.kill(victim).await,
        Fault::KillGateway => gateway_a.kill().await,
        Fault::FreezeGateway => freeze(gateway_a.pid(), true),
        Fault::PartitionNode => cluster.partition(victim),
    }
    tokio::time::sleep(DURING).await;
    let repair = Instant::now();
    match fault {
        Fault::StopNode | Fault::KillNode => cluster.restart(victim).await,
        Fault::KillGateway => gateway_a.restart().await,
        Fault::FreezeGateway => freeze(gateway_a.pid(), false),
        Fault::PartitionNode => {
            cluster.heal(victim);
            cluster.wait_for_size(3, Duration::from_secs(60)).await;
        }
    }
    let repaired_in = repair.elapsed();
    tokio::time::sleep(AFTER).await;
    stop.store(true, Ordering::SeqCst);
    let mut seen = Seen::default();
    for client in load {
        let part = client.await.expect("a load client");
        seen.numbers.extend(part.numbers);
        seen.direct_ids.extend(part.direct_ids);
        seen.web_ms.extend(part.web_ms);
        for (status, n) in part.errors {
            *seen.errors.entry(status).or_default() += n;
        }
    }
    let load_over = Instant::now();
    let mut said_split = false;
    for watch in readiness {
        said_split |= watch.await.expect("the readiness watch");
    }

    // With no one doing anything: the audit comes to agree.
    let audit = loop {
        // While partitions still migrate, a recount may be refused (503); ask again.
        let answer = http_client()
            .get(format!("{}/v1/audit", gateway_b.url))
            .send()
            .await
            .expect("the gateway answers");
        let status = answer.status();
        let text = answer.text().await.unwrap_or_default();
        if status == 200 {
            let audit: Audit = serde_json::from_str(&text).expect("an Audit");
            if audit.consistent {
                break audit;
            }
        }
        assert!(
            load_over.elapsed() < SETTLE,
            "{fault:?}: the audit still disagrees {SETTLE:?} after the load: {status} {text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let settled_in = load_over.elapsed();

    let acknowledged = seen.numbers.len() as u64;
    let errors: u64 = seen.errors.values().sum();
    let counted = audit.summary.total_hits - base;
    let mut distinct = HashSet::new();
    let repeated: Vec<u64> = seen
        .numbers
        .iter()
        .copied()
        .filter(|n| !distinct.insert(*n))
        .collect();
    let missing_records = missing_hit_records(&hosts, &seen.direct_ids).await;
    seen.web_ms.sort_by(f64::total_cmp);
    let p99 = seen
        .web_ms
        .get(seen.web_ms.len() * 99 / 100)
        .copied()
        .unwrap_or(0.0);
    let both = |name| {
        let (a, b) = (&gateway_a, &gateway_b);
        async move { metric(a, name).await + metric(b, name).await }
    };
    let swept = both("gateway_swept_batches_total").await;
    let splits = both("gateway_cluster_splits_total").await;
    let repaired = both("gateway_repaired_hits_total").await;
    eprintln!(
        "{fault:?}: acknowledged {acknowledged}, counted {counted}, hit records {}, errors {errors} {:?}, \
         web p99 {p99:.1} ms, repaired in {repaired_in:.1?}, audit consistent {settled_in:.1?} after the load, \
         batches swept {swept}, splits seen {splits}, hits repaired {repaired}, repeated N {}",
        audit.hit_records.total_hits - base,
        seen.errors,
        repeated.len(),
    );

    assert!(
        acknowledged > 1000,
        "{fault:?}: the load ran: {acknowledged} acknowledged"
    );
    assert_eq!(
        audit.summary.total_hits, audit.hit_records.total_hits,
        "{fault:?}: every counted hit has its hit record"
    );
    assert!(
        missing_records.is_empty(),
        "{fault:?}: acknowledged hits without a hit record: {missing_records:?}"
    );
    assert!(
        counted >= acknowledged,
        "{fault:?}: {counted} counted < {acknowledged} acknowledged"
    );
    assert!(
        counted <= acknowledged + errors,
        "{fault:?}: {counted} counted > {acknowledged} acknowledged + {errors} unanswered"
    );
    assert!(
        repeated.is_empty(),
        "{fault:?}: acknowledged N given twice: {repeated:?}"
    );
    assert!(
        seen.numbers
            .iter()
            .all(|&n| n > base && n <= base + counted),
        "{fault:?}: an acknowledged N beyond the counted total"
    );
    if fault == Fault::PartitionNode {
        assert!(
            splits > 0,
            "{fault:?}: no gateway saw the cluster split in two"
        );
        assert!(
            said_split,
            "{fault:?}: /readyz never answered 503 naming the split"
        );
    }
    if fault == Fault::StopNode {
        assert_eq!(
            errors, 0,
            "{fault:?}: clients saw errors while a node left and came back"
        );
    }
    drop(web);
}

async fn web_client(url: String, stop: Arc<AtomicBool>) -> Seen {
    let client = http_client();
    let mut seen = Seen::default();
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        match client.get(format!("{url}/")).send().await {
            Ok(response) if response.status() == 200 => {
                let body = response.text().await.expect("a page");
                seen.numbers.push(seen_by(&body));
                seen.web_ms.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            Ok(response) => {
                *seen.errors.entry(response.status().as_u16()).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(_) => {
                *seen.errors.entry(0).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    seen
}

/// Posts hits to a gateway, retrying a failed hit with the same id (a retry
/// counts once) until it is acknowledged or the load ends.
async fn direct_client(gateway: String, stop: Arc<AtomicBool>) -> Seen {
    let client = http_client();
    let mut seen = Seen::default();
    while !stop.load(Ordering::SeqCst) {
        let id = uuid::Uuid::now_v7().to_string();
        let hit = json!({"id": id, "server": "fault-direct", "ts": 1_732_000_000_000_u64});
        while !stop.load(Ordering::SeqCst) {
            match client
                .post(format!("{gateway}/v1/hits"))
                .json(&hit)
                .send()
                .await
            {
                Ok(response) if response.status().is_success() => {
                    let recorded: Recorded = response.json().await.expect("a Recorded");
                    if !recorded.duplicate {
                        seen.numbers.push(recorded.total_hits);
                    }
                    seen.direct_ids.push(id);
                    break;
                }
                Ok(response) => {
                    *seen.errors.entry(response.status().as_u16()).or_default() += 1;
                }
                Err(_) => *seen.errors.entry(0).or_default() += 1,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    seen
}

/// The ids among `ids` that have no record in `test.hits`.
async fn missing_hit_records(hosts: &str, ids: &[String]) -> Vec<String> {
    use aerospike::{
        BatchOperation, BatchPolicy, BatchReadPolicy, Bins, Client, ClientPolicy, Key, ResultCode,
        Value,
    };
    // A node just started may not serve its partitions for a moment yet.
    let started = Instant::now();
    let client = loop {
        match Client::new(&ClientPolicy::default(), &hosts.to_owned()).await {
            Ok(client) => break client,
            Err(error) if started.elapsed() < Duration::from_secs(30) => {
                eprintln!("connecting to the cluster: {error}; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => panic!("connecting to the cluster: {error}"),
        }
    };
    let mut missing = Vec::new();
    for chunk in ids.chunks(1000) {
        let mut rows: Vec<BatchOperation> = chunk
            .iter()
            .map(|id| {
                let key = Key::new("test", "hits", Value::from(id.clone())).unwrap();
                BatchOperation::read(&BatchReadPolicy::default(), key, Bins::None)
            })
            .collect();
        client
            .batch(&BatchPolicy::default(), &mut rows)
            .await
            .expect("reading hit records");
        for (id, row) in chunk.iter().zip(&rows) {
            if row.result_code() != Some(ResultCode::Ok) {
                missing.push(id.clone());
            }
        }
    }
    client.close().await.ok();
    missing
}

/// A counter from a gateway's metrics (0 if it is down).
async fn metric(gateway: &Gateway, name: &str) -> u64 {
    let Ok(response) = http_client()
        .get(format!("{}/metrics", gateway.url))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    else {
        return 0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Polls a gateway's `/readyz` until `stop`; true if it ever answered 503
/// because the cluster was split.
async fn watch_readyz(gateway: String, stop: Arc<AtomicBool>) -> bool {
    let client = http_client();
    let mut said_split = false;
    while !stop.load(Ordering::SeqCst) {
        // A frozen gateway answers nothing; the watch asks again.
        let ask = client
            .get(format!("{gateway}/readyz"))
            .timeout(Duration::from_secs(1));
        if let Ok(response) = ask.send().await
            && response.status() == 503
        {
            said_split |= response.text().await.unwrap_or_default().contains("split");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    said_split
}
