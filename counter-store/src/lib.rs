//! What every store of the hit counter is: the interface the gateway counts and
//! reads through, the layout's vocabulary both stores share, and the rules both
//! follow, so that a store is one crate that implements these traits and passes
//! [`contract`].
//!
//! The layout is the tutorial's: `hits` (hit id → server, ts) and `summary`
//! (`total_hits` and one counter per server), and beside it the named counters
//! ([`pages`]): one total per key, its history per day and its unique visitors
//! per day.
//!
//! The interface is split by who calls it: the gateway's group commit counts
//! through [`Counts`], its pages read through [`Reads`], its audit and the
//! operator's recount through [`Audit`], its visitor hashing through
//! [`VisitorSalts`]; [`Store`] is all of them and the readiness probe. A store
//! reports what happens inside it (retries, faults, timings) to the [`Events`]
//! it was built with, never to a global.

pub mod audit;
#[cfg(feature = "contract")]
pub mod contract;
mod events;
mod faults;
pub mod numbering;
pub mod pages;
pub mod tops;

use std::future::Future;

use counter_api::{
    Day, Hit, ImportOutcome, PageImport, PageKey, PageRecorded, PageStats, PagesOverview, Recorded,
    Summary,
};

use self::audit::PageTallies;
pub use self::events::{Events, SPANS, StoreEvents};
pub use self::faults::WriteFaults;
use self::pages::{DayRange, PageHitToCount, VisitorSalt};

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

/// Counting: what the gateway's group commit writes through.
pub trait Counts: Send + Sync + 'static {
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

    /// Records a batch of page hits as one group commit, with the same guarantees
    /// as [`Counts::record_hits`]: each new hit adds one to its key's total and to
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
}

/// Reading: what the gateway's pages and the web tier's stats views show.
pub trait Reads: Send + Sync + 'static {
    /// The grand total and every server's total, servers sorted by id.
    fn summary(&self) -> impl Future<Output = Result<Summary, StoreError>> + Send;

    /// Up to `limit` of the newest hits, newest first.
    fn latest_hits(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Hit>, StoreError>> + Send;

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
}

/// Auditing: what `GET /v1/audit` and the operator's recount compare and mend.
pub trait Audit: Send + Sync + 'static {
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

    /// The named counters' hits per counter and day, and the day totals, for
    /// the days from `since` on, beside the page hit records of those days:
    /// what the audit compares. Reads every counter and every such record, so
    /// it is for operators and tests, not for pages.
    fn page_tallies(
        &self,
        since: Day,
    ) -> impl Future<Output = Result<PageTallies, StoreError>> + Send;

    /// The audit of the named counters over the days from `since` on: by
    /// default [`compare_pages`](audit::compare_pages) of
    /// [`Audit::page_tallies`], exact; a store too big to hold every counter
    /// in memory compares grouped sums instead
    /// ([`compare_grouped`](audit::compare_grouped)).
    fn page_audit(
        &self,
        since: Day,
    ) -> impl Future<Output = Result<counter_api::PagesAudit, StoreError>> + Send {
        async move { Ok(audit::compare_pages(&self.page_tallies(since).await?)) }
    }

    /// How long page hit records are kept (`PAGE_HIT_RETENTION`): the audit
    /// compares only the days whose records are all still there.
    fn page_hit_retention(&self) -> Retention {
        Retention::FOREVER
    }

    /// How long the tutorial's hit records are kept: forever unless the
    /// operator opted in to expiring them, after which they no longer add up
    /// to the counters.
    fn hit_retention(&self) -> Retention {
        Retention::FOREVER
    }

    /// What is wrong with the store now, in words (a split cluster, batches left
    /// unfinished, a repair waiting, writes that failed), for `GET /v1/audit`.
    fn findings(&self) -> impl Future<Output = Vec<String>> + Send {
        async { Vec::new() }
    }

    /// An audit found the counters off the hit records: a store that can repair
    /// them on its own should.
    fn suspect_drift(&self) {}
}

/// Visitor secrets: what the gateway hashes each day's visitors with.
pub trait VisitorSalts: Send + Sync + 'static {
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
}

/// A whole store: every part of the interface, and whether it can serve now.
pub trait Store: Counts + Reads + Audit + VisitorSalts {
    /// Ok while the store can serve reads and writes.
    fn check_ready(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}
