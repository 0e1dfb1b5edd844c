//! Where hits and totals live, behind one interface with the tutorial's layout:
//! `hits` (hit id → server, ts) and `summary` (`total_hits` and one counter per
//! server), and beside it the named counters ([`pages`]): one total per key, its
//! history per day and its unique visitors per day.

mod aerospike;
mod embedded;
pub mod pages;

use std::future::Future;

use std::collections::HashMap;

use counter_api::{
    Day, Hit, ImportOutcome, PageImport, PageKey, PageRecorded, PageStats, PagesOverview, Recorded,
    ServerId, Summary,
};

use self::pages::{DayRange, PageHitToCount, PageTallies, VisitorSalt};

pub use self::aerospike::AerospikeStore;
pub use self::embedded::EmbeddedStore;

/// The most hits one `latest_hits` call returns.
pub const MAX_LATEST_HITS: usize = 1000;

/// A failure of the store, as the gateway's callers need to see it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Worth retrying soon: the store is unreachable, busy or timed out.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store failed in a way a retry will not mend.
    #[error("the store failed: {0}")]
    Failed(String),
}

/// How long records that only serve to recognise retried hits are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<std::time::Duration>);

impl Retention {
    pub const FOREVER: Self = Self(None);
}

/// How long after a write failed for good the gateway answers `/readyz` with
/// that failure.
const FAULT_READY_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// Writes of counters that failed and that no retry made, per set: logged,
/// and also counted in `/metrics` (`gateway_store_write_faults`), listed in the
/// audit's findings and, for a failure no retry can mend (a record too big,
/// say) in the last [`FAULT_READY_WINDOW`], answered by `/readyz`.
#[derive(Default)]
pub struct WriteFaults {
    by_set: std::sync::Mutex<std::collections::BTreeMap<String, Fault>>,
}

struct Fault {
    count: u64,
    last_error: StoreError,
    last_at: std::time::SystemTime,
    last_failed_at: Option<std::time::Instant>,
}

impl WriteFaults {
    pub fn record(&self, set: &str, error: &StoreError) {
        let failed = matches!(error, StoreError::Failed(_));
        crate::metrics::METRICS.write_fault(set, failed);
        let mut by_set = self.lock();
        let fault = by_set.entry(set.to_owned()).or_insert_with(|| Fault {
            count: 0,
            last_error: error.clone(),
            last_at: std::time::SystemTime::now(),
            last_failed_at: None,
        });
        fault.count += 1;
        fault.last_error = error.clone();
        fault.last_at = std::time::SystemTime::now();
        if failed {
            fault.last_failed_at = Some(std::time::Instant::now());
        }
    }

    /// One line per set with faults since the gateway started.
    pub fn findings(&self) -> Vec<String> {
        self.lock()
            .iter()
            .map(|(set, fault)| {
                let ago = fault.last_at.elapsed().unwrap_or_default().as_secs();
                format!(
                    "{} write(s) to set {set} failed and were not retried (counts there may be short); the last, {ago} s ago: {}",
                    fault.count, fault.last_error
                )
            })
            .collect()
    }

    /// The last write that failed for good, if it was recent.
    pub fn check(&self) -> Result<(), StoreError> {
        let by_set = self.lock();
        match by_set.iter().find(|(_, fault)| {
            fault
                .last_failed_at
                .is_some_and(|at| at.elapsed() < FAULT_READY_WINDOW)
        }) {
            Some((set, fault)) => Err(StoreError::Failed(format!(
                "a write to set {set} failed and no retry can mend it: {}",
                fault.last_error
            ))),
            None => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, Fault>> {
        self.by_set
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub trait Store: Send + Sync + 'static {
    /// Records a batch of hits as one group commit and answers, in order, what each
    /// hit was counted as, or why it was not.
    ///
    /// Each new hit adds one to `total_hits` and to its server's counter; the n-th
    /// new hit of the batch sees the totals as they were after it, so every counted
    /// hit gets a distinct `total_hits`. A hit whose id is already recorded, in the
    /// store or earlier in the batch, is not counted again and is answered as a
    /// duplicate with the current totals. Answers only once the counts are durable.
    fn record_hits(
        &self,
        hits: Vec<Hit>,
    ) -> impl Future<Output = Vec<Result<Recorded, StoreError>>> + Send;

    /// The grand total and every server's total, servers sorted by id.
    fn summary(&self) -> impl Future<Output = Result<Summary, StoreError>> + Send;

    /// Up to `limit` of the newest hits, newest first.
    fn latest_hits(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Hit>, StoreError>> + Send;

    /// Counts the hit records themselves, per server: what the `summary` counters
    /// should say. Reads every hit record, so it is for operators and tests, not
    /// for pages.
    fn count_hit_records(&self) -> impl Future<Output = Result<Summary, StoreError>> + Send;

    /// Adds `delta` (which may be negative) to the `summary` counter `key` and
    /// answers its new value: the reconciler's one write.
    fn adjust_counter(
        &self,
        key: &str,
        delta: i64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Records a batch of page hits as one group commit, with the same guarantees
    /// as [`Store::record_hits`]: each new hit adds one to its key's total and to
    /// the key's count for the hit's UTC day (atomically together, so a key's days
    /// always sum to its total), and its visitor, if known, to that day's
    /// HyperLogLog; the n-th new hit on a key gets the key's total after it. A hit
    /// id already recorded is answered as a duplicate and not counted again.
    fn record_page_hits(
        &self,
        hits: Vec<PageHitToCount>,
    ) -> impl Future<Output = Vec<Result<PageRecorded, StoreError>>> + Send;

    /// Starts the counter `import.key` at `import.count`, once: the count joins
    /// its total (so its next hit follows it) and is kept as the counter's base,
    /// in none of its days, so the audit reads the total as base plus days. The
    /// same import (its id) again answers a duplicate with the counter as it is;
    /// another import on a counter that has a base answers `AlreadyImported`.
    fn import_page_base(
        &self,
        import: PageImport,
    ) -> impl Future<Output = Result<ImportOutcome, StoreError>> + Send;

    /// One counter over `days` (a key never hit reads as zeros).
    fn page_stats(
        &self,
        key: &PageKey,
        days: DayRange,
    ) -> impl Future<Output = Result<PageStats, StoreError>> + Send;

    /// The `limit` counters with the highest totals, the `limit` with the most
    /// hits on `days.last`, and all counters' hits on each of `days`.
    fn pages_overview(
        &self,
        limit: usize,
        days: DayRange,
    ) -> impl Future<Output = Result<PagesOverview, StoreError>> + Send;

    /// The secret for hashing `day`'s visitors: made at random by the first
    /// gateway that needs it, the same for every gateway, and forgotten once the
    /// day is over: making one deletes the secrets of the days before
    /// `forget_before` (the day before the gateway's today, never relative to
    /// `day`, which a skewed clock may put in the future).
    fn visitor_salt(
        &self,
        day: Day,
        forget_before: Day,
    ) -> impl Future<Output = Result<VisitorSalt, StoreError>> + Send;

    /// The named counters' hits per counter and day, and the day totals, for
    /// the days from `since` on, beside the page hit records of those days:
    /// what the audit compares. Reads every counter and every such record, so
    /// it is for operators and tests, not for pages.
    fn page_tallies(
        &self,
        since: Day,
    ) -> impl Future<Output = Result<PageTallies, StoreError>> + Send;

    /// How long page hit records are kept (`PAGE_HIT_RETENTION`): the audit
    /// compares only the days whose records are all still there.
    fn page_hit_retention(&self) -> Retention {
        Retention::FOREVER
    }

    /// What is wrong with the store now, in words (a split cluster, batches left
    /// unfinished, a repair waiting), for `GET /v1/audit`.
    fn findings(&self) -> impl Future<Output = Vec<String>> + Send {
        async { Vec::new() }
    }

    /// An audit found the counters off the hit records: a store that can repair
    /// them on its own should.
    fn suspect_drift(&self) {}

    /// How long the tutorial's hit records are kept: forever unless the
    /// operator opted in to expiring them, after which they no longer add up
    /// to the counters.
    fn hit_retention(&self) -> Retention {
        Retention::FOREVER
    }

    /// Ok while the store can serve reads and writes.
    fn check_ready(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Marks the first occurrence of each hit id in a batch; later ones are duplicates
/// whatever the store says.
fn first_occurrences(hits: &[Hit]) -> Vec<bool> {
    let mut seen = std::collections::HashSet::with_capacity(hits.len());
    hits.iter().map(|hit| seen.insert(hit.id)).collect()
}

/// Gives each hit of a group commit its own totals.
///
/// `counted[i]` says whether hit `i` was counted; `total_after` and `server_after`
/// are the counters once the whole batch was added. Counted hits are numbered in
/// batch order, so the last counted hit sees `total_after`; duplicates see the
/// totals after the batch.
fn number_batch(
    hits: &[Hit],
    counted: &[bool],
    total_after: u64,
    server_after: &HashMap<ServerId, u64>,
) -> Vec<Recorded> {
    let mut total = total_after - counted.iter().filter(|&&c| c).count() as u64;
    let mut running: HashMap<&ServerId, u64> = server_after.iter().map(|(s, n)| (s, *n)).collect();
    for (hit, _) in hits.iter().zip(counted).filter(|(_, c)| **c) {
        *running
            .get_mut(&hit.server)
            .expect("every server of the batch has a total") -= 1;
    }
    hits.iter()
        .zip(counted)
        .map(|(hit, &counted)| {
            if counted {
                total += 1;
                let server = running.get_mut(&hit.server).expect("checked above");
                *server += 1;
                Recorded {
                    total_hits: total,
                    server_hits: *server,
                    duplicate: false,
                }
            } else {
                Recorded {
                    total_hits: total_after,
                    server_hits: server_after[&hit.server],
                    duplicate: true,
                }
            }
        })
        .collect()
}

/// Builds a [`Summary`] from per-server counts; the grand total is their sum.
fn summary_from_counts(counts: std::collections::BTreeMap<ServerId, u64>) -> Summary {
    Summary {
        total_hits: counts.values().sum(),
        servers: counts
            .into_iter()
            .map(|(server, total)| counter_api::ServerTotal { server, total })
            .collect(),
    }
}

/// How many hits of the batch each server adds (0 for servers with only duplicates).
fn added_per_server(hits: &[Hit], counted: &[bool]) -> HashMap<ServerId, u64> {
    let mut added = HashMap::new();
    for (hit, &counted) in hits.iter().zip(counted) {
        *added.entry(hit.server.clone()).or_insert(0) += u64::from(counted);
    }
    added
}

#[cfg(test)]
mod tests {
    use counter_api::{EpochMillis, HitId};

    use super::*;

    fn hit(id: u128, server: &str) -> Hit {
        Hit {
            id: HitId::from_u128(id).unwrap(),
            server: server.parse().unwrap(),
            ts: EpochMillis::new(1_732_000_000_000).unwrap(),
        }
    }

    #[test]
    fn batch_numbering() {
        let hits = [
            hit(1, "a"),
            hit(2, "b"),
            hit(1, "a"),
            hit(3, "a"),
            hit(4, "b"),
        ];
        let mut counted = first_occurrences(&hits);
        assert_eq!(counted, [true, true, false, true, true]);
        counted[4] = false; // already in the store
        let added = added_per_server(&hits, &counted);
        assert_eq!(added[&"a".parse().unwrap()], 2);
        assert_eq!(added[&"b".parse().unwrap()], 1);

        // Before the batch: total 10, a had 4, b had 6.
        let after: HashMap<ServerId, u64> =
            [("a".parse().unwrap(), 6), ("b".parse().unwrap(), 7)].into();
        let recorded = number_batch(&hits, &counted, 13, &after);
        let view: Vec<(u64, u64, bool)> = recorded
            .iter()
            .map(|r| (r.total_hits, r.server_hits, r.duplicate))
            .collect();
        assert_eq!(
            view,
            [
                (11, 5, false),
                (12, 7, false),
                (13, 6, true),
                (13, 6, false),
                (13, 7, true)
            ]
        );
    }
}
