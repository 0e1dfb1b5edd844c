//! The tutorial's hits as a [`Kind`] of the engine: intents list `[id, server,
//! ts]`, each hit claims its record in `hits`, and a batch counts into
//! `total_hits` and each of its servers' counters in `summary`.

use std::collections::HashMap;

use aerospike::expressions as exp;
use aerospike::{Bin, Client, IndexMap, ResultCode, Value, WritePolicy, operations};
use counter_api::{Hit, ServerId, TOTAL_HITS_KEY};
use counter_store::StoreError;
use tokio::time::Instant;

use super::{
    BatchId, Claim, HitRecords, Kind, Writer, applied_entry, intent_entries, intent_entry, ts_value,
};
use crate::AerospikeStore;
use crate::client::{Retry, counter_value, retrying, unavailable_or_failed};
use crate::layout::{HITS_SET, INTENT_HITS_BIN, SERVER_BIN, SUMMARY_SET, TOTAL_BIN, TS_BIN};

pub(crate) struct TutorialHits;

/// `total_hits` and each server's counter after a batch.
pub(crate) type SummaryAfter = (u64, HashMap<ServerId, u64>);

impl Kind for TutorialHits {
    type Hit = Hit;
    type Counted = SummaryAfter;

    const INTENT_BIN: &'static str = INTENT_HITS_BIN;
    const RECORDS_SET: &'static str = HITS_SET;
    // So that `aql` shows `test.hits` with the tutorial's two bins.
    const CLEAR_MARKERS: bool = true;

    fn writer(store: &AerospikeStore) -> &std::sync::Mutex<Writer> {
        &store.inner.writer
    }

    fn intent_entry(hit: &Hit) -> Value {
        intent_entry(hit.id, hit.server.as_str(), hit.ts)
    }

    fn from_intent(intent: &IndexMap<String, Value>) -> Vec<Hit> {
        intent_entries(intent, INTENT_HITS_BIN)
            .filter_map(|(id, server, ts)| {
                Some(Hit {
                    id,
                    server: server.parse().ok()?,
                    ts,
                })
            })
            .collect()
    }

    /// The tutorial's hit records, as the tutorial writes them; each hit
    /// counts into its server's counter.
    fn hit_records(store: &AerospikeStore, hits: &[&Hit]) -> HitRecords {
        HitRecords {
            set: HITS_SET,
            expiration: store.hit_expiration(),
            bins: hits
                .iter()
                .map(|hit| {
                    let bins = vec![
                        Bin::new(SERVER_BIN, Value::from(hit.server.as_str().to_owned())),
                        Bin::new(TS_BIN, ts_value(hit.ts)),
                    ];
                    (hit.id, bins)
                })
                .collect(),
            counters: hits
                .iter()
                .map(|hit| store.key(SUMMARY_SET, hit.server.as_str()))
                .collect(),
        }
    }

    /// `total_hits` and each server's counter, concurrently.
    async fn write_counters(
        store: &AerospikeStore,
        client: &Client,
        batch: &BatchId,
        hits: &[&Hit],
        claims: &[Claim],
        deadline: Instant,
    ) -> Result<Option<SummaryAfter>, StoreError> {
        let owned = Claim::owned(claims);
        let added = owned.iter().filter(|&&o| o).count() as u64;
        let mut per_server: HashMap<&ServerId, u64> = HashMap::new();
        for (hit, &owned) in hits.iter().zip(&owned) {
            *per_server.entry(&hit.server).or_default() += u64::from(owned);
        }
        let total = count_once(store, client, TOTAL_HITS_KEY, batch, added, deadline);
        let servers = futures::future::join_all(per_server.iter().map(|(server, &n)| async move {
            let after = count_once(store, client, server.as_str(), batch, n, deadline).await;
            after.map(|after| after.map(|after| ((*server).clone(), after)))
        }));
        let (total, servers) = futures::join!(total, servers);
        let Some(total_after) = total? else {
            return Ok(None);
        };
        let mut server_after = HashMap::new();
        for server in servers {
            let Some((server, after)) = server? else {
                return Ok(None);
            };
            server_after.insert(server, after);
        }
        Ok(Some((total_after, server_after)))
    }
}

/// Adds `delta` to the `summary` counter `key` once for `batch`, however often
/// it is called: answers the counter right after the batch's addition, or
/// `None` if a later batch of the writer has been counted into it.
async fn count_once(
    store: &AerospikeStore,
    client: &Client,
    key: &str,
    batch: &BatchId,
    delta: u64,
    deadline: Instant,
) -> Result<Option<u64>, StoreError> {
    if delta == 0 {
        // Nothing to add; the batch's duplicates see the counter as it is.
        return store
            .add_to_counter(client, key, 0, deadline)
            .await
            .map(Some);
    }
    let key = store.key(SUMMARY_SET, key)?;
    let entry = batch.key();
    let add = Bin::new(TOTAL_BIN, Value::from(delta as i64));
    let mut ops = vec![operations::add(&add)];
    ops.extend(batch.record_applied([(entry.clone(), exp::int_bin(TOTAL_BIN))]));
    ops.push(operations::get_bin(TOTAL_BIN));
    let mut policy: WritePolicy = store.write_policy(deadline);
    policy.base_policy.filter_expression = Some(batch.not_counted_yet());
    let after = retrying(&store.inner.events, Retry::Idempotent, deadline, || async {
        match client.operate(&policy, &key, &ops).await {
            Ok(record) => Ok(Some(counter_value(&record.bins))),
            // Counted before: the number is in the map.
            Err(error) if error.matches(&[ResultCode::FilteredOut]) => {
                applied_entry(client, &key, &entry, deadline)
                    .await
                    .map(|after| after.map(Some))
            }
            Err(error) => Err(error),
        }
    })
    .await
    .map_err(|error| unavailable_or_failed(&error))?;
    match after {
        Some(Some(total)) => Ok(Some(total)),
        Some(None) => Err(StoreError::Failed(format!(
            "{key} has no integer bin {TOTAL_BIN:?}"
        ))),
        None => Ok(None),
    }
}
