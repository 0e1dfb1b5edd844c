//! Reading the Aerospike cluster under test directly, beside the gateway: what
//! the tests check the gateway's answers against.

use std::time::{Duration, Instant};

use aerospike::{
    BatchOperation, BatchPolicy, BatchReadPolicy, Bins, Client, ClientPolicy, Key, ResultCode,
    Value,
};

/// The namespace the gateway writes to (its default, which the tests keep).
pub const NAMESPACE: &str = "test";

/// A client of the cluster whose seeds are `hosts`. A node just started may not
/// serve its partitions for a moment yet: connecting is tried for up to 30 s.
pub async fn aerospike_client(hosts: &str) -> Client {
    let started = Instant::now();
    loop {
        match Client::new(&ClientPolicy::default(), &hosts.to_owned()).await {
            Ok(client) => return client,
            Err(error) if started.elapsed() < Duration::from_secs(30) => {
                eprintln!("connecting to the cluster: {error}; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => panic!("connecting to the cluster: {error}"),
        }
    }
}

/// The keys among `keys` that have no record in the set `set` (e.g. `hits`
/// for the tutorial's hit ids, `page_hits` for page hit ids).
pub async fn missing_records(hosts: &str, set: &str, keys: &[String]) -> Vec<String> {
    let client = aerospike_client(hosts).await;
    let mut missing = Vec::new();
    for chunk in keys.chunks(1000) {
        let mut rows: Vec<BatchOperation> = chunk
            .iter()
            .map(|id| {
                let key = Key::new(NAMESPACE, set, Value::from(id.clone())).unwrap();
                BatchOperation::read(&BatchReadPolicy::default(), key, Bins::None)
            })
            .collect();
        client
            .batch(&BatchPolicy::default(), &mut rows)
            .await
            .unwrap_or_else(|e| panic!("reading {set} records: {e}"));
        for (id, row) in chunk.iter().zip(&rows) {
            if row.result_code() != Some(ResultCode::Ok) {
                missing.push(id.clone());
            }
        }
    }
    client.close().await.ok();
    missing
}
