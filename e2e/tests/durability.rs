//! `kill -9` of the gateway under load loses no acknowledged hit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use counter_api::Recorded;
use e2e::{Backend, Counter, http_client, on_every_backend};
use serde_json::json;

on_every_backend!(killed_under_load_loses_no_acknowledged_hit);

const CLIENTS: usize = 64;

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
    counter.gateway.settled_audit().await;
}
