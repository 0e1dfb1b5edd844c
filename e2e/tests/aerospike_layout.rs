//! The tutorial's data layout, checked with an independent client: Aerospike's own
//! Python client reads back what the gateway wrote, as `aql` would show it.

use std::collections::BTreeMap;

use e2e::{Backend, Counter, http_client, seen_by};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(aerospike),
    ignore = "AEROSPIKE_HOSTS is not set, so there is no Aerospike cluster to run against"
)]
async fn python_client_sees_the_tutorials_layout() {
    let python = std::env::var("AEROSPIKE_PYTHON").unwrap_or_else(|_| "python3".into());
    let counter = Counter::start(Backend::Aerospike, 2).await;
    let client = http_client();
    let mut last = 0;
    for web in &counter.webs {
        for _ in 0..2 {
            let page = client
                .get(format!("{}/", web.url))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            last = seen_by(&page);
        }
    }
    let latest = counter.gateway.latest_hits(100).await;

    let servers: Vec<&str> = counter.webs.iter().map(|w| w.server_id.as_str()).collect();
    // The `batch` bin of a hit record goes once its batch is counted, just after
    // the hit is answered: look until it is gone.
    let started = std::time::Instant::now();
    let view = loop {
        let view = aerospike_view(&python, &servers).await;
        let transient = view["hits"]
            .as_object()
            .is_some_and(|hits| hits.values().any(|row| row.get("batch").is_some()));
        if !transient || started.elapsed() > std::time::Duration::from_secs(10) {
            break view;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };

    // select * from test.summary: key "total_hits" and one key per server, bin total.
    assert_eq!(
        view["key_types"],
        serde_json::json!(["str"]),
        "every summary key is a stored string"
    );
    let summary: BTreeMap<String, Value> = serde_json::from_value(view["summary"].clone()).unwrap();
    assert!(summary["total_hits"]["total"].as_u64().unwrap() >= last);
    for server in &servers {
        let row = summary[*server].as_object().unwrap();
        assert_eq!(row["total"], 2, "{server}");
        // Beside `total`, only the exactly-once bookkeeping: this gateway's latest
        // batch and the total it left, never more than the total.
        let applied = row["applied"].as_object().expect("an applied map");
        assert_eq!(applied.len(), 1, "{server}: {applied:?}");
        assert!(applied.values().all(|after| after.as_u64().unwrap() <= 2));
        assert_eq!(row.len(), 2, "only the bins total and applied: {row:?}");
    }

    // select * from test.hits: key = the hit's UUID string, bins server and ts.
    let hits: BTreeMap<String, Value> = serde_json::from_value(view["hits"].clone()).unwrap();
    assert_eq!(hits.len(), 4, "{hits:?}");
    let ours: Vec<_> = latest
        .hits
        .iter()
        .filter(|h| servers.contains(&h.server.as_str()))
        .collect();
    assert_eq!(ours.len(), 4, "the gateway's latest hits hold our four");
    for hit in ours {
        let row = &hits[&hit.id.to_string()];
        assert_eq!(row["server"], hit.server.as_str());
        assert_eq!(row["ts"].as_u64(), Some(hit.ts.as_u64()));
        assert_eq!(
            row.as_object().unwrap().len(),
            2,
            "only the bins server and ts: {row}"
        );
    }
}

/// What `aql` would show of `test.summary` and our hits, read by Aerospike's
/// Python client (`python/aerospike_view.py`).
async fn aerospike_view(python: &str, servers: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/aerospike_view.py");
    let output = tokio::process::Command::new(python)
        .args([script, &Backend::aerospike_hosts().unwrap(), "test", &servers.join(",")])
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {python} (set AEROSPIKE_PYTHON to a Python with the aerospike package): {e}"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}
