//! `kill -9` of the gateway under load loses no acknowledged hit, of the
//! tutorial's counter or of a named counter.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use counter_api::{PageRecorded, Recorded};
use e2e::{Backend, Counter, http_client, on_every_backend};
use serde_json::json;

on_every_backend!(killed_under_load_loses_no_acknowledged_hit);

const CLIENTS: usize = 64;
/// Beside them, clients posting page hits (`POST /v1/page-hits`) on a few keys.
const PAGE_CLIENTS: usize = 16;
const PAGE_KEYS: usize = 8;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as u64
}

async fn killed_under_load_loses_no_acknowledged_hit(backend: Backend) {
    let mut counter = Counter::start(backend, 0).await;
    let base = counter.baseline.total_hits;
    let gateway = counter.gateway.url.clone();
    let server = format!("kill9-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let killed = Arc::new(AtomicBool::new(false));

    // Each client posts hits back to back and stops at its first failure, so at
    // most one hit per client is in flight when the gateway dies.
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (gateway, server, killed) = (gateway.clone(), server.clone(), killed.clone());
            tokio::spawn(async move {
                let client = http_client();
                let mut acknowledged = Vec::new();
                let mut failed = 0_u64;
                loop {
                    let hit = json!({"id": uuid::Uuid::now_v7().to_string(), "server": server, "ts": 1_732_000_000_000_u64});
                    let answer = client.post(format!("{gateway}/v1/hits")).json(&hit).send().await;
                    match answer {
                        Ok(response) if response.status() == 201 => {
                            let recorded: Recorded = response.json().await.expect("a Recorded");
                            acknowledged.push((hit["id"].as_str().unwrap().to_owned(), recorded.total_hits));
                        }
                        _ => {
                            failed += 1;
                            assert!(killed.load(Ordering::SeqCst), "a hit failed before the kill");
                            return (acknowledged, failed);
                        }
                    }
                }
            })
        })
        .collect();

    // The same for page hits, on keys of this run; a client also says which
    // key its unanswered hit was on.
    let keys: Arc<Vec<String>> = Arc::new(
        (0..PAGE_KEYS)
            .map(|k| format!("{server}/page-{k}"))
            .collect(),
    );
    let page_clients: Vec<_> = (0..PAGE_CLIENTS)
        .map(|c| {
            let (gateway, keys, killed) = (gateway.clone(), keys.clone(), killed.clone());
            tokio::spawn(async move {
                let client = http_client();
                let mut acknowledged = Vec::new();
                for i in c.. {
                    let key = keys[i % keys.len()].clone();
                    let id = uuid::Uuid::now_v7().to_string();
                    let hit = json!({"id": id, "key": key, "ts": now_ms()});
                    let answer = client
                        .post(format!("{gateway}/v1/page-hits"))
                        .json(&hit)
                        .send()
                        .await;
                    match answer {
                        Ok(response) if response.status() == 201 => {
                            let recorded: PageRecorded =
                                response.json().await.expect("a PageRecorded");
                            assert!(
                                !recorded.duplicate,
                                "a new page hit answered as a duplicate"
                            );
                            acknowledged.push((key, id, recorded.total));
                        }
                        _ => {
                            assert!(
                                killed.load(Ordering::SeqCst),
                                "a page hit failed before the kill"
                            );
                            return (acknowledged, key);
                        }
                    }
                }
                unreachable!("the clients run until the kill")
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    killed.store(true, Ordering::SeqCst);
    counter.gateway.kill().await;

    let mut acknowledged = Vec::new();
    let mut in_flight = 0;
    for client in clients {
        let (acked, failed) = client.await.expect("client task");
        acknowledged.extend(acked);
        in_flight += failed;
    }
    assert!(
        acknowledged.len() > 100,
        "the gateway was under load: {} hits acknowledged",
        acknowledged.len()
    );
    let mut page_hits = Vec::new();
    let mut page_in_flight: BTreeMap<String, u64> = BTreeMap::new();
    for client in page_clients {
        let (acked, unanswered) = client.await.expect("page client task");
        page_hits.extend(acked);
        *page_in_flight.entry(unanswered).or_default() += 1;
    }
    assert!(
        page_hits.len() > 50,
        "the gateway was under page load: {} page hits acknowledged",
        page_hits.len()
    );

    counter.gateway.restart().await;
    let summary = counter.gateway.summary().await;
    let counted = summary.total_hits - base;
    let acked = acknowledged.len() as u64;
    eprintln!(
        "kill -9 under load ({backend:?}): {acked} acknowledged, {in_flight} in flight, {counted} counted after restart"
    );
    assert!(counted >= acked, "{counted} counted < {acked} acknowledged");
    assert!(
        counted - acked <= in_flight,
        "{counted} counted > {acked} acknowledged + {in_flight} in flight"
    );

    // Every acknowledged hit is on record: posting it again is a duplicate.
    let client = http_client();
    for (id, _) in acknowledged.iter().step_by(97) {
        let retry = json!({"id": id, "server": server, "ts": 1_732_000_000_000_u64});
        let response = client
            .post(format!("{gateway}/v1/hits"))
            .json(&retry)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "acknowledged hit {id} is missing after the restart"
        );
    }
    // And the counts they were given were distinct and within the total.
    let mut seen: Vec<u64> = acknowledged.iter().map(|(_, n)| *n).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen.len(),
        acknowledged.len(),
        "two acknowledged hits share a count"
    );
    assert!(*seen.last().unwrap() <= summary.total_hits);

    // What the kill left half done (on Aerospike, a batch between its counters)
    // is finished by the restarted gateway's sweeper, with nobody acting; the
    // suites after this one share the cluster and must find it settled.
    let audit = counter.gateway.settled_audit().await;

    // The named counters: every acknowledged page hit counted once, a hit the
    // kill cut off at most once, the numbers distinct per key, the days adding
    // up to the totals, and the audit of the named counters consistent (on
    // Aerospike: the sweeper finished the killed gateway's page batch).
    let mut per_key: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (key, _, total) in &page_hits {
        per_key.entry(key).or_default().push(*total);
    }
    let mut page_counted = 0;
    for key in keys.iter() {
        let stats = counter.gateway.page_stats(key, 30).await;
        let numbers = per_key.get(key.as_str()).cloned().unwrap_or_default();
        let acked = numbers.len() as u64;
        let cut_off = page_in_flight.get(key).copied().unwrap_or(0);
        assert!(
            acked <= stats.total && stats.total <= acked + cut_off,
            "{key}: {} counted, {acked} acknowledged, {cut_off} cut off by the kill",
            stats.total
        );
        assert_eq!(
            stats.days.iter().map(|d| d.hits).sum::<u64>(),
            stats.total,
            "{key}: the days add up to the total"
        );
        let distinct: HashSet<u64> = numbers.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            numbers.len(),
            "{key}: two acknowledged page hits share a number"
        );
        assert!(
            numbers.iter().all(|&n| n <= stats.total),
            "{key}: {numbers:?}"
        );
        page_counted += stats.total;
    }
    eprintln!(
        "kill -9 under load ({backend:?}), named counters: {} acknowledged, {} in flight, {page_counted} counted \
         after restart; audit: counted {}, hit records {}, day totals {}, consistent {}",
        page_hits.len(),
        page_in_flight.values().sum::<u64>(),
        audit.pages.counted,
        audit.pages.hit_records,
        audit.pages.day_totals,
        audit.pages.consistent
    );
    assert!(
        audit.pages.consistent,
        "the named counters' audit after the restart: {:?}",
        audit.pages
    );
    if backend == Backend::Embedded {
        // A store of this test's own: the audit covers exactly its page hits.
        assert_eq!(
            (
                audit.pages.counted,
                audit.pages.hit_records,
                audit.pages.day_totals
            ),
            (page_counted, page_counted, page_counted),
            "the audit of the named counters against the keys' totals"
        );
    }
    for (key, id, _) in page_hits.iter().step_by(37) {
        let retry = json!({"id": id, "key": key, "ts": now_ms()});
        let response = client
            .post(format!("{gateway}/v1/page-hits"))
            .json(&retry)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "acknowledged page hit {id} is not on record after the restart"
        );
    }
}
