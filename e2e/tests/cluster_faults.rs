//! The full path (clients, web tier, gateways, a 3-node Aerospike cluster with
//! replication factor 2) through faults, with nobody to reconcile anything:
//! a node stopped and started again, a node killed with `kill -9` and started
//! again, a gateway killed and started again, a gateway frozen (SIGSTOP) past
//! the store deadline and thawed, and a node cut off from the other two and
//! healed.
//!
//! Load runs through the web tier (`GET /`, which talks to gateway A) and,
//! beside it, straight to gateway B with hit ids the test keeps, retried with the
//! same id on failure as the component does. Named counters get traffic through
//! the web tier too: page-API clients on 200 keys, each hit with its own
//! `Idempotency-Key`, retried with the same key and id after every failure until
//! it is acknowledged (also after the load stops), and badge clients on 100
//! other keys, not retried. After each fault, with no operator action: every
//! acknowledged N is distinct (per key, for the named counters), every
//! acknowledged hit is counted exactly once and has its hit record, each page-API
//! key's total is exactly its acknowledged hits, every key's days add up to its
//! total and all keys to the day's total, and `GET /v1/audit` (its named
//! counters too) becomes consistent within a few seconds. Each test prints what
//! it saw, for the tutorial's counter and for the named counters: acknowledged,
//! counted, hit records, errors by status, p99, and the time until the audit
//! was consistent.
//!
//! Each test starts its own cluster (`e2e::Cluster`: `asd` from `AEROSPIKE_ASD`,
//! each node in a network namespace); the tests take turns.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use counter_api::{Audit, Recorded};
use e2e::{
    Backend, Cluster, Gateway, PageAnswer, Web, badge_count, freeze, http_client, missing_records,
    post_page_hit_until_acknowledged, seen_by,
};
use serde_json::json;
use tokio::sync::Mutex;

/// Clients through the web tier (`GET /`), and straight to gateway B; the
/// named counters' clients, through the web tier: page API and badges. 20 in
/// all, for a 2-core machine that also runs the cluster, gateways and web tier.
const WEB_CLIENTS: usize = 8;
const DIRECT_CLIENTS: usize = 4;
const API_CLIENTS: usize = 4;
const BADGE_CLIENTS: usize = 4;
/// The named counters the page-API and badge clients hit, at random.
const API_KEYS: usize = 200;
const BADGE_KEYS: usize = 100;
/// How long a page-API client keeps retrying its last hit after the load ends.
const FINISH: Duration = Duration::from_secs(60);
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
    /// Page-API hits acknowledged: key, hit id, and the hit's number unless the
    /// answer was `duplicate: true`.
    api: Vec<(String, String, Option<u64>)>,
    /// Page-API hits still unacknowledged when their client gave up: key, id.
    api_gave_up: Vec<(String, String)>,
    /// Failed page-API requests (retried) by status (0: no answer).
    api_errors: BTreeMap<u16, u64>,
    /// Badges served: key and the count they showed.
    badges: Vec<(String, u64)>,
    /// Failed badges (not retried) by status, and by key.
    badge_errors: BTreeMap<u16, u64>,
    badge_errors_by_key: BTreeMap<String, u64>,
}

impl Seen {
    fn add(&mut self, part: Seen) {
        self.numbers.extend(part.numbers);
        self.direct_ids.extend(part.direct_ids);
        self.web_ms.extend(part.web_ms);
        self.api.extend(part.api);
        self.api_gave_up.extend(part.api_gave_up);
        self.badges.extend(part.badges);
        for (mine, theirs) in [
            (&mut self.errors, part.errors),
            (&mut self.api_errors, part.api_errors),
            (&mut self.badge_errors, part.badge_errors),
        ] {
            for (status, n) in theirs {
                *mine.entry(status).or_default() += n;
            }
        }
        for (key, n) in part.badge_errors_by_key {
            *self.badge_errors_by_key.entry(key).or_default() += n;
        }
    }
}

fn api_key(n: usize) -> String {
    format!("fault/api-{n}")
}

fn badge_key(n: usize) -> String {
    format!("fault/badge-{n}")
}

/// A number from 0 to `below` - 1, from a fresh random UUID.
fn pick(below: usize) -> usize {
    (uuid::Uuid::new_v4().as_u128() % below as u128) as usize
}

async fn run(fault: Fault) {
    let _turn = TURN.lock().await;
    let mut cluster = Cluster::start(3).await;
    let hosts = cluster.hosts();
    let dir = cluster.log_dir().to_owned();
    let env = [
        ("AEROSPIKE_HOSTS", hosts.as_str()),
        (
            "RUST_LOG",
            "info,aerospike_gateway=debug,store_aerospike=debug",
        ),
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
    for _ in 0..API_CLIENTS {
        load.push(tokio::spawn(api_client(web.url.clone(), stop.clone())));
    }
    for _ in 0..BADGE_CLIENTS {
        load.push(tokio::spawn(badge_client(web.url.clone(), stop.clone())));
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
    let stopped = Instant::now();
    let mut seen = Seen::default();
    for client in load {
        seen.add(client.await.expect("a load client"));
    }
    // The page-API clients finish their last hit first, retrying it.
    let load_over = Instant::now();
    let finished_in = stopped.elapsed();
    let mut said_split = false;
    for watch in readiness {
        said_split |= watch.await.expect("the readiness watch");
    }

    // With no one doing anything: the audit comes to agree, the tutorial's
    // counters and the named counters alike. If only the named counters still
    // disagree after SETTLE, the checks below go on with that audit, so that the
    // figures are printed before check_pages fails on it.
    let mut last = None;
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
            if audit.consistent && audit.pages.consistent {
                break audit;
            }
            last = Some(audit);
        }
        if load_over.elapsed() >= SETTLE {
            match last {
                Some(audit) if audit.summary.total_hits == audit.hit_records.total_hits => {
                    break audit;
                }
                _ => panic!(
                    "{fault:?}: the audit still disagrees {SETTLE:?} after the load: {status} {text}"
                ),
            }
        }
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
    let missing_hit_records = missing_records(&hosts, "hits", &seen.direct_ids).await;
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
         web p99 {p99:.1} ms, repaired in {repaired_in:.1?}, audit {} {settled_in:.1?} after the load, \
         batches swept {swept}, splits seen {splits}, hits repaired {repaired}, repeated N {}",
        audit.hit_records.total_hits - base,
        seen.errors,
        if audit.consistent && audit.pages.consistent {
            "consistent"
        } else {
            "NOT consistent"
        },
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
        missing_hit_records.is_empty(),
        "{fault:?}: acknowledged hits without a hit record: {missing_hit_records:?}"
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
    check_pages(
        fault,
        &gateway_b,
        &hosts,
        &seen,
        &audit,
        settled_in,
        finished_in,
    )
    .await;
    assert!(
        audit.consistent,
        "{fault:?}: the audit still disagrees {SETTLE:?} after the load: {audit:?}"
    );
    if fault == Fault::StopNode {
        assert_eq!(
            errors, 0,
            "{fault:?}: clients saw errors while a node left and came back"
        );
        assert!(
            seen.api_errors.is_empty() && seen.badge_errors.is_empty(),
            "{fault:?}: page clients saw errors while a node left and came back: API {:?}, badges {:?}",
            seen.api_errors,
            seen.badge_errors
        );
    }
    drop(web);
}

/// The named counters after the fault, once the audit agrees: prints what the
/// page-API and badge clients saw and what was counted, then checks it.
async fn check_pages(
    fault: Fault,
    gateway: &Gateway,
    hosts: &str,
    seen: &Seen,
    audit: &Audit,
    settled_in: Duration,
    finished_in: Duration,
) {
    // What each key holds: its total and its days (every hit of this run was
    // on one of the last two days, so 30 cover them all).
    let mut stored: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for key in (0..API_KEYS)
        .map(api_key)
        .chain((0..BADGE_KEYS).map(badge_key))
    {
        let stats = gateway.page_stats(&key, 30).await;
        let days: u64 = stats.days.iter().map(|d| d.hits).sum();
        stored.insert(key, (stats.total, days));
    }
    let day_totals: u64 = gateway
        .pages_overview(30)
        .await
        .days
        .iter()
        .map(|d| d.hits)
        .sum();

    // Page API: acknowledged and numbered, per key.
    let mut api_acknowledged: BTreeMap<&str, u64> = BTreeMap::new();
    let mut api_numbers: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (key, _, number) in &seen.api {
        *api_acknowledged.entry(key).or_default() += 1;
        if let Some(n) = number {
            api_numbers.entry(key).or_default().push(*n);
        }
    }
    let api_duplicates = seen.api.iter().filter(|(_, _, n)| n.is_none()).count();
    let api_ids: Vec<String> = seen.api.iter().map(|(_, id, _)| id.clone()).collect();
    let missing_page_records = missing_records(hosts, "page_hits", &api_ids).await;
    let api_counted: u64 = (0..API_KEYS).map(|n| stored[&api_key(n)].0).sum();
    let api_errors: u64 = seen.api_errors.values().sum();

    // Badges: shown, per key.
    let mut badge_numbers: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (key, n) in &seen.badges {
        badge_numbers.entry(key).or_default().push(*n);
    }
    let badge_counted: u64 = (0..BADGE_KEYS).map(|n| stored[&badge_key(n)].0).sum();
    let badge_errors: u64 = seen.badge_errors.values().sum();
    let all_counted = api_counted + badge_counted;

    eprintln!(
        "{fault:?} pages: API acknowledged {} ({api_duplicates} as duplicates), counted {api_counted}, \
         hit records of acknowledged hits missing {}, errors {api_errors} {:?}, unfinished {}, \
         last hits finished {finished_in:.1?} after the load; badges acknowledged {}, counted {badge_counted}, \
         errors {badge_errors} {:?}; all keys: counted {all_counted}, day totals {day_totals}; \
         audit: counted {}, hit records {}, day totals {}, drift {}, {} {settled_in:.1?} after the load",
        seen.api.len(),
        missing_page_records.len(),
        seen.api_errors,
        seen.api_gave_up.len(),
        seen.badges.len(),
        seen.badge_errors,
        audit.pages.counted,
        audit.pages.hit_records,
        audit.pages.day_totals,
        audit.pages.drift.len(),
        if audit.pages.consistent {
            "consistent"
        } else {
            "NOT consistent"
        },
    );

    assert!(
        seen.api.len() > 100 && seen.badges.len() > 100,
        "{fault:?}: the page load ran: {} API hits and {} badges acknowledged",
        seen.api.len(),
        seen.badges.len()
    );
    assert!(
        seen.api_gave_up.is_empty(),
        "{fault:?}: page hits still not acknowledged {FINISH:?} after the load, retried with their ids: {:?}",
        seen.api_gave_up
    );
    for n in 0..API_KEYS {
        let key = api_key(n);
        let (total, _) = stored[&key];
        let acknowledged = api_acknowledged.get(key.as_str()).copied().unwrap_or(0);
        assert_eq!(
            total, acknowledged,
            "{fault:?}: {key} counted {total}, but its clients, retrying every failure with the same id, \
             had {acknowledged} distinct hits acknowledged"
        );
    }
    assert_eq!(
        api_counted,
        seen.api.len() as u64,
        "{fault:?}: the page API's hits counted once each"
    );
    for (key, numbers) in api_numbers.iter().chain(&badge_numbers) {
        let total = stored[*key].0;
        let mut distinct = HashSet::new();
        let repeated: Vec<u64> = numbers
            .iter()
            .copied()
            .filter(|n| !distinct.insert(*n))
            .collect();
        assert!(
            repeated.is_empty(),
            "{fault:?}: {key}: acknowledged numbers given twice: {repeated:?}"
        );
        assert!(
            numbers.iter().all(|&n| n >= 1 && n <= total),
            "{fault:?}: {key}: an acknowledged number beyond the counted total {total}: {numbers:?}"
        );
    }
    assert!(
        missing_page_records.is_empty(),
        "{fault:?}: acknowledged page hits without a page_hits record: {missing_page_records:?}"
    );
    for n in 0..BADGE_KEYS {
        let key = badge_key(n);
        let (counted, _) = stored[&key];
        let shown = badge_numbers.get(key.as_str()).map_or(0, Vec::len) as u64;
        let failed = seen.badge_errors_by_key.get(&key).copied().unwrap_or(0);
        assert!(
            shown <= counted && counted <= shown + failed,
            "{fault:?}: {key}: counted {counted}, badges served {shown}, failed {failed}"
        );
    }
    for (key, (total, days)) in &stored {
        assert_eq!(
            days, total,
            "{fault:?}: {key}: the days add up to {days}, the total is {total}"
        );
    }
    assert_eq!(
        day_totals, all_counted,
        "{fault:?}: the day totals (GET /v1/pages) against the sum of every key's total"
    );
    assert!(
        audit.pages.consistent && audit.pages.drift.is_empty(),
        "{fault:?}: the named counters' audit: {:?}",
        audit.pages
    );
    assert_eq!(
        (
            audit.pages.counted,
            audit.pages.hit_records,
            audit.pages.day_totals
        ),
        (all_counted, all_counted, all_counted),
        "{fault:?}: the audit's counted, page hit records and day totals against the keys' totals"
    );
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

/// Page-API hits on random keys through the web tier, each with a fresh
/// `Idempotency-Key`, retried with the same key and id after every failure until
/// acknowledged: also once the load is over, for up to [`FINISH`], so that every
/// hit it started is acknowledged.
async fn api_client(web: String, stop: Arc<AtomicBool>) -> Seen {
    let client = http_client();
    let mut seen = Seen::default();
    while !stop.load(Ordering::SeqCst) {
        let key = api_key(pick(API_KEYS));
        let id = uuid::Uuid::new_v4().to_string();
        let answer = post_page_hit_until_acknowledged(
            &client,
            &web,
            &key,
            &id,
            FINISH,
            &mut seen.api_errors,
        )
        .await;
        match answer {
            PageAnswer::Counted(recorded) => seen.api.push((key, id, Some(recorded.total))),
            PageAnswer::Duplicate(_) => seen.api.push((key, id, None)),
            PageAnswer::GaveUp => seen.api_gave_up.push((key, id)),
        }
    }
    seen
}

/// Badges on random keys through the web tier; a failed one is not retried (it
/// may or may not be counted).
async fn badge_client(web: String, stop: Arc<AtomicBool>) -> Seen {
    let client = http_client();
    let mut seen = Seen::default();
    while !stop.load(Ordering::SeqCst) {
        let key = badge_key(pick(BADGE_KEYS));
        let status = match client.get(format!("{web}/badge/{key}.svg")).send().await {
            Ok(response) if response.status() == 200 => {
                let svg = response.text().await.expect("a badge");
                seen.badges.push((key, badge_count(&svg)));
                continue;
            }
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        };
        *seen.badge_errors.entry(status).or_default() += 1;
        *seen.badge_errors_by_key.entry(key).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
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
