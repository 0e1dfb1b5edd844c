//! The embedded store: one redb file in the data directory.
//!
//! redb is a maintained, pure-Rust, ACID key-value store with copy-on-write B-trees:
//! a committed transaction survives a crash or `kill -9`, and a second gateway on
//! the same directory is refused instead of corrupting it. A group commit is one
//! write transaction and one fsync, however many hits it holds.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use counter_api::{
    EpochMillis, Hit, HitId, Recorded, ServerId, ServerTotal, Summary, TOTAL_HITS_KEY,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{
    Store, StoreError, added_per_server, first_occurrences, number_batch, summary_from_counts,
};

/// `hits`: hit id → (server, ts), as in the tutorial's `test.hits`.
const HITS: TableDefinition<u128, (&str, u64)> = TableDefinition::new("hits");
/// (ts, hit id) → server: the same hits in time order, for the latest-hits view.
const HITS_BY_TIME: TableDefinition<(u64, u128), &str> = TableDefinition::new("hits_by_time");
/// `summary`: `total_hits` and one counter per server, as in `test.summary`.
const SUMMARY: TableDefinition<&str, u64> = TableDefinition::new("summary");

/// New hits append at the end of both hit tables (their keys are time-ordered), so
/// a small page cache holds the hot pages; redb's default would grow to 1 GiB.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The file name inside the data directory.
pub const FILE_NAME: &str = "counter.redb";

#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
}

impl EmbeddedStore {
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        let path = data_dir.join(FILE_NAME);
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .with_context(|| {
                format!(
                    "opening the embedded store {} (is another gateway using this data directory?)",
                    path.display()
                )
            })?;
        let txn = db.begin_write()?;
        txn.open_table(HITS)?;
        txn.open_table(HITS_BY_TIME)?;
        txn.open_table(SUMMARY)?;
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    fn record_hits_now(&self, hits: &[Hit]) -> Result<Vec<Recorded>, redb::Error> {
        let txn = self.db.begin_write()?;
        let recorded = {
            let mut hit_table = txn.open_table(HITS)?;
            let mut by_time = txn.open_table(HITS_BY_TIME)?;
            let mut summary = txn.open_table(SUMMARY)?;

            let mut counted = first_occurrences(hits);
            for (hit, counted) in hits.iter().zip(&mut counted) {
                let id = hit.id.as_u128();
                if !*counted {
                    continue;
                }
                if hit_table.get(id)?.is_some() {
                    *counted = false;
                    continue;
                }
                hit_table.insert(id, (hit.server.as_str(), hit.ts.as_u64()))?;
                by_time.insert((hit.ts.as_u64(), id), hit.server.as_str())?;
            }

            let added: u64 = counted.iter().filter(|&&c| c).count() as u64;
            let total_after = read_counter(&summary, TOTAL_HITS_KEY)? + added;
            if added > 0 {
                summary.insert(TOTAL_HITS_KEY, total_after)?;
            }
            let mut server_after = HashMap::new();
            for (server, added) in added_per_server(hits, &counted) {
                let after = read_counter(&summary, server.as_str())? + added;
                if added > 0 {
                    summary.insert(server.as_str(), after)?;
                }
                server_after.insert(server, after);
            }
            number_batch(hits, &counted, total_after, &server_after)
        };
        txn.commit()?;
        Ok(recorded)
    }

    fn summary_now(&self) -> Result<Summary, StoreError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let table = txn.open_table(SUMMARY).map_err(failed)?;
        let mut summary = Summary::default();
        for entry in table.iter().map_err(failed)? {
            let (key, total) = entry.map_err(failed)?;
            let (key, total) = (key.value(), total.value());
            if key == TOTAL_HITS_KEY {
                summary.total_hits = total;
            } else {
                summary.servers.push(ServerTotal {
                    server: stored(key.parse::<ServerId>())?,
                    total,
                });
            }
        }
        Ok(summary)
    }

    fn latest_hits_now(&self, limit: usize) -> Result<Vec<Hit>, StoreError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let table = txn.open_table(HITS_BY_TIME).map_err(failed)?;
        let mut hits = Vec::with_capacity(limit);
        for entry in table.iter().map_err(failed)?.rev().take(limit) {
            let (key, server) = entry.map_err(failed)?;
            let (ts, id) = key.value();
            hits.push(Hit {
                id: stored(HitId::from_u128(id))?,
                server: stored(server.value().parse())?,
                ts: stored(EpochMillis::new(ts.into()))?,
            });
        }
        Ok(hits)
    }

    fn count_hit_records_now(&self) -> Result<Summary, StoreError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let table = txn.open_table(HITS).map_err(failed)?;
        let mut counts = std::collections::BTreeMap::new();
        for entry in table.iter().map_err(failed)? {
            let (_, value) = entry.map_err(failed)?;
            let (server, _ts) = value.value();
            *counts.entry(stored(server.parse())?).or_insert(0) += 1;
        }
        Ok(summary_from_counts(counts))
    }

    /// redb blocks on disk I/O; keep it off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(Self) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(store))
            .await
            .map_err(|e| StoreError::Failed(format!("store task failed: {e}")))?
    }
}

impl Store for EmbeddedStore {
    async fn record_hits(&self, hits: Vec<Hit>) -> Vec<Result<Recorded, StoreError>> {
        let count = hits.len();
        // One transaction: the whole batch is counted, or none of it.
        match self
            .blocking(move |store| store.record_hits_now(&hits).map_err(failed))
            .await
        {
            Ok(recorded) => recorded.into_iter().map(Ok).collect(),
            Err(error) => vec![Err(error); count],
        }
    }

    async fn summary(&self) -> Result<Summary, StoreError> {
        self.blocking(|store| store.summary_now()).await
    }

    async fn latest_hits(&self, limit: usize) -> Result<Vec<Hit>, StoreError> {
        self.blocking(move |store| store.latest_hits_now(limit))
            .await
    }

    async fn count_hit_records(&self) -> Result<Summary, StoreError> {
        self.blocking(|store| store.count_hit_records_now()).await
    }

    async fn adjust_counter(&self, key: &str, delta: i64) -> Result<u64, StoreError> {
        let key = key.to_owned();
        self.blocking(move |store| {
            let txn = store.db.begin_write().map_err(failed)?;
            let after = {
                let mut summary = txn.open_table(SUMMARY).map_err(failed)?;
                let before = read_counter(&summary, &key).map_err(failed)?;
                let after = before.saturating_add_signed(delta);
                summary.insert(key.as_str(), after).map_err(failed)?;
                after
            };
            txn.commit().map_err(failed)?;
            Ok(after)
        })
        .await
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        self.blocking(|store| {
            let txn = store.db.begin_read().map_err(failed)?;
            txn.open_table(SUMMARY).map_err(failed)?;
            Ok(())
        })
        .await
    }
}

fn read_counter(
    table: &impl ReadableTable<&'static str, u64>,
    key: &str,
) -> Result<u64, redb::StorageError> {
    Ok(table.get(key)?.map_or(0, |v| v.value()))
}

fn failed(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Failed(format!("embedded store: {}", error.into()))
}

/// Only valid values are ever written, so an invalid one means the file was damaged.
fn stored<T>(parsed: Result<T, counter_api::InvalidField>) -> Result<T, StoreError> {
    parsed.map_err(|e| StoreError::Failed(format!("embedded store holds an invalid value: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(server: &str) -> Hit {
        Hit {
            id: HitId::from_uuid(uuid::Uuid::now_v7()).unwrap(),
            server: server.parse().unwrap(),
            ts: EpochMillis::new(1_732_000_000_000).unwrap(),
        }
    }

    #[tokio::test]
    async fn counts_survive_reopening_and_duplicates_do_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let first = hit("a");
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            let recorded = store
                .record_hits(vec![first.clone(), hit("b"), hit("a")])
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let totals: Vec<u64> = recorded.iter().map(|r| r.total_hits).collect();
            assert_eq!(totals, [1, 2, 3]);
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let again = store
            .record_hits(vec![first, hit("b")])
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert!(again[0].duplicate);
        assert_eq!(
            again[0].total_hits, 4,
            "duplicates see the totals after the batch"
        );
        assert_eq!(
            (
                again[1].total_hits,
                again[1].server_hits,
                again[1].duplicate
            ),
            (4, 2, false)
        );

        let summary = store.summary().await.unwrap();
        assert_eq!(summary.total_hits, 4);
        let servers: Vec<(&str, u64)> = summary
            .servers
            .iter()
            .map(|s| (s.server.as_str(), s.total))
            .collect();
        assert_eq!(servers, [("a", 2), ("b", 2)]);
        assert_eq!(store.latest_hits(10).await.unwrap().len(), 4);
        assert_eq!(store.count_hit_records().await.unwrap(), summary);
    }

    #[test]
    fn a_second_gateway_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = EmbeddedStore::open(dir.path()).unwrap();
        let error = EmbeddedStore::open(dir.path()).err().unwrap();
        assert!(
            format!("{error:#}").contains("another gateway"),
            "{error:#}"
        );
    }
}
