//! Brings the `summary` counters back in line with the hit records.
//!
//! The hit records are the truth: one per counted hit. On the embedded store a
//! batch is one transaction, so the two always agree. On Aerospike every batch is
//! counted exactly once through faults, and after a split cluster the gateway
//! repairs the counters by itself (`store/aerospike/split.rs`, which uses
//! [`compare`]); what is left here is the operator's manual recount, for a store
//! edited by hand: `GET /v1/audit` shows the difference, `aerospike-gateway
//! reconcile --apply` removes it.
//!
//! Run it while no hits flow (web tier scaled to 0): a hit whose record is written
//! but not yet counted would otherwise be counted twice.

use std::collections::BTreeMap;

use counter_api::{Summary, TOTAL_HITS_KEY};

use crate::store::{Store, StoreError};

/// A `summary` counter that does not match the hit records it counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// `total_hits` or a server id.
    pub key: String,
    pub counter: u64,
    pub hit_records: u64,
}

impl Difference {
    pub fn delta(&self) -> i64 {
        self.hit_records as i64 - self.counter as i64
    }
}

/// Every counter that differs from its hit records.
pub async fn differences<S: Store>(store: &S) -> Result<Vec<Difference>, StoreError> {
    let hit_records = store.count_hit_records().await?;
    let summary = store.summary().await?;
    Ok(compare(&summary, &hit_records))
}

/// Adds each difference to its counter; answers the counters' new values.
pub async fn apply<S: Store>(
    store: &S,
    differences: &[Difference],
) -> Result<Vec<u64>, StoreError> {
    let mut after = Vec::with_capacity(differences.len());
    for difference in differences {
        after.push(
            store
                .adjust_counter(&difference.key, difference.delta())
                .await?,
        );
    }
    Ok(after)
}

/// The counters of `summary` that differ from `hit_records`.
pub(crate) fn compare(summary: &Summary, hit_records: &Summary) -> Vec<Difference> {
    let mut keys: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    keys.insert(
        TOTAL_HITS_KEY.to_owned(),
        (summary.total_hits, hit_records.total_hits),
    );
    for server in &summary.servers {
        keys.entry(server.server.to_string()).or_default().0 = server.total;
    }
    for server in &hit_records.servers {
        keys.entry(server.server.to_string()).or_default().1 = server.total;
    }
    keys.into_iter()
        .filter(|(_, (counter, records))| counter != records)
        .map(|(key, (counter, hit_records))| Difference {
            key,
            counter,
            hit_records,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use counter_api::{EpochMillis, Hit, HitId, ServerId};

    use super::*;
    use crate::store::EmbeddedStore;

    #[tokio::test]
    async fn counters_are_brought_back_to_the_hit_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let hits: Vec<Hit> = ["a", "a", "b"]
            .iter()
            .map(|server| Hit {
                id: HitId::from_uuid(uuid::Uuid::now_v7()).unwrap(),
                server: server.parse::<ServerId>().unwrap(),
                ts: EpochMillis::new(1_732_000_000_000).unwrap(),
            })
            .collect();
        store.record_hits(hits).await;
        assert_eq!(differences(&store).await.unwrap(), []);

        // As a dead gateway or an in-doubt update would leave them.
        store.adjust_counter(TOTAL_HITS_KEY, -2).await.unwrap();
        store.adjust_counter("b", 3).await.unwrap();
        let found = differences(&store).await.unwrap();
        let view: Vec<(&str, u64, u64)> = found
            .iter()
            .map(|d| (d.key.as_str(), d.counter, d.hit_records))
            .collect();
        assert_eq!(view, [("b", 4, 1), ("total_hits", 1, 3)]);

        assert_eq!(apply(&store, &found).await.unwrap(), [1, 3]);
        assert_eq!(differences(&store).await.unwrap(), []);
    }
}
