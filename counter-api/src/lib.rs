//! The vocabulary of the hit counter and the wire format of the gateway's HTTP API.
//!
//! Both sides of the `component → gateway` call compile against this crate, so a
//! hit that the web component can build is exactly a hit the gateway accepts.
//! Every value that crosses the wire is parsed into a type that cannot hold bad
//! input ([`HitId`], [`ServerId`], [`EpochMillis`]); the gateway never has to
//! re-check a field once it holds one of these.

mod hit;
mod import;
mod page;
mod wire;

pub use hit::{EpochMillis, Hit, HitId, InvalidField, ServerId};
pub use import::{BaseCount, ImportOutcome, InvalidBase, PageBase, PageImport, PageImported};
pub use page::{
    Day, DayCount, DayHits, InvalidPage, PageHit, PageKey, PageRecorded, PageStats, PageTotal,
    PagesOverview, UserAgent, Visitor,
};
pub use wire::{
    ApiError, Audit, Batch, BatchOutcomes, LatestHits, Outcome, PageDrift, PagesAudit,
    PagesAuditCoverage, Recorded, ServerTotal, Summary,
};

/// The key of the grand-total counter in the `summary` set, as in the tutorial.
///
/// Per-server counters live in the same set keyed by the server id, which is why
/// [`ServerId`] refuses this exact string.
pub const TOTAL_HITS_KEY: &str = "total_hits";

/// The most hits one [`Batch`] may carry: a web instance serves a few dozen
/// requests at once, so its batches stay far below this.
pub const MAX_BATCH_HITS: usize = 256;

/// Paths of the gateway's HTTP API.
pub mod paths {
    /// `POST` a [`Hit`](crate::Hit) as JSON; answers [`Recorded`](crate::Recorded).
    pub const HITS: &str = "/v1/hits";
    /// `POST` a [`Batch`](crate::Batch) of 1 to [`MAX_BATCH_HITS`](crate::MAX_BATCH_HITS)
    /// hits; answers [`BatchOutcomes`](crate::BatchOutcomes), one per hit.
    pub const HIT_BATCHES: &str = "/v1/hits/batch";
    /// `GET` the [`Summary`](crate::Summary).
    pub const SUMMARY: &str = "/v1/summary";
    /// `GET ?limit=N` the newest hits as [`LatestHits`](crate::LatestHits).
    pub const LATEST_HITS: &str = "/v1/hits/latest";
    /// `GET` an [`Audit`](crate::Audit): the counters next to a recount of the hit
    /// records. Reads every hit record: for operators, not for pages.
    pub const AUDIT: &str = "/v1/audit";
    /// `POST` a [`PageHit`](crate::PageHit) as JSON; answers
    /// [`PageRecorded`](crate::PageRecorded).
    pub const PAGE_HITS: &str = "/v1/page-hits";
    /// `POST` a [`Batch`](crate::Batch) of page hits, as [`HIT_BATCHES`].
    pub const PAGE_HIT_BATCHES: &str = "/v1/page-hits/batch";
    /// `GET ?limit=N&days=D` the [`PagesOverview`](crate::PagesOverview);
    /// `GET /v1/pages/<key>?days=D` one counter's [`PageStats`](crate::PageStats).
    pub const PAGES: &str = "/v1/pages";
    /// `POST` a [`PageImport`](crate::PageImport): a counter's starting count,
    /// set once; answers [`PageImported`](crate::PageImported), or `409
    /// already_imported` when the counter has a base from another import.
    pub const PAGE_IMPORTS: &str = "/v1/page-imports";
    /// `GET` the gateway's metrics in the Prometheus (OpenMetrics) text format.
    pub const METRICS: &str = "/metrics";
    /// `GET`: 200 while the process is alive.
    pub const HEALTHZ: &str = "/healthz";
    /// `GET`: 200 while the store can be used, 503 otherwise.
    pub const READYZ: &str = "/readyz";
}
