use serde::{Deserialize, Serialize};

use crate::{Day, Hit, PageKey, ServerId};

/// The gateway's answer to a recorded hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// The grand total right after this hit was counted: the N of
    /// "I have been seen by N". Distinct for every counted hit.
    pub total_hits: u64,
    /// The hit's server total right after this hit was counted.
    pub server_hits: u64,
    /// True when a hit with this id had already been recorded: nothing was counted
    /// this time, and the totals are the current ones.
    pub duplicate: bool,
}

/// Hits that arrived together at one web replica, sent in one call
/// (`POST /v1/hits/batch` of [`Hit`]s, `POST /v1/page-hits/batch` of
/// [`PageHit`](crate::PageHit)s): each is counted, or refused, on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch<H> {
    pub hits: Vec<H>,
    /// Each hit's W3C `traceparent`, in the order of `hits`, or none at all: the
    /// call's own `traceparent` header can carry only one hit's trace, and each
    /// hit's trace should hold the gateway's spans for it. An entry that is
    /// `null` or not a valid `traceparent` leaves that hit in the call's trace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traceparents: Vec<Option<String>>,
}

/// The answer to a [`Batch`]: one outcome per hit, in the batch's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOutcomes<A> {
    pub outcomes: Vec<Outcome<A>>,
}

/// What became of one hit of a batch: its answer ([`Recorded`] or
/// [`PageRecorded`](crate::PageRecorded)), or a refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome<A> {
    Recorded(A),
    /// Not confirmed: the same refusal a single hit would get (`store_unavailable`
    /// and the like). The hit may still be counted, once, like any unconfirmed hit.
    Failed(ApiError),
}

/// The `summary` set: the grand total and one total per server.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Summary {
    pub total_hits: u64,
    /// Sorted by server id.
    pub servers: Vec<ServerTotal>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerTotal {
    pub server: ServerId,
    pub total: u64,
}

/// The newest hit records, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LatestHits {
    pub hits: Vec<Hit>,
}

/// The `summary` counters next to what the hit records add up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    pub summary: Summary,
    /// Hit records counted per server; `total_hits` is the number of hit records.
    pub hit_records: Summary,
    /// True when the two agree, and so do the named counters
    /// ([`PagesAudit::consistent`]).
    pub consistent: bool,
    /// What the store knows is wrong now, in words: a split cluster, batches
    /// still being counted, a repair waiting for a pause in hits.
    #[serde(default)]
    pub findings: Vec<String>,
    /// The named counters next to their page hit records.
    #[serde(default)]
    pub pages: PagesAudit,
}

/// The named counters next to what their page hit records add up to, over the
/// days whose page hit records are all still kept (`PAGE_HIT_RETENTION`): one
/// counter's hits on a day against its records of that day, and each day's
/// hits on all counters (`page_days`) against all records of that day.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PagesAudit {
    /// The days compared, oldest first: every day that has page hit records
    /// and whose records cannot have expired yet.
    pub days: Vec<Day>,
    /// Counters with hits on those days.
    pub counters: u64,
    /// Their hits on those days, as the counters hold them.
    pub counted: u64,
    /// The page hit records of those days.
    pub hit_records: u64,
    /// Hits on all counters on those days, as the day totals hold them.
    pub day_totals: u64,
    /// Counters whose total is not their imported base plus the sum of their
    /// days (0 unless a record was edited by hand: both change in one write).
    pub totals_off_days: u64,
    /// Where they differ, at most [`PagesAudit::MAX_DRIFT`] entries.
    pub drift: Vec<PageDrift>,
    /// True when nothing differs.
    pub consistent: bool,
    /// What the audit read and how it compared it (absent from gateways
    /// older than it: all zero).
    #[serde(default)]
    pub coverage: PagesAuditCoverage,
}

/// What an audit of the named counters covered. An exact audit compares
/// every counter and day one by one; a grouped one sums counters and records
/// into [`PagesAuditCoverage::groups`] hashed groups per day, compares the
/// groups, and reads again only the counters of the groups that differ, to
/// name them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PagesAuditCoverage {
    /// `exact` or `grouped`.
    pub method: String,
    /// Counter records read: on a grouped audit, those changed since the
    /// first day compared.
    pub counters_read: u64,
    /// Page hit records read.
    pub hit_records_read: u64,
    /// (group, day) pairs compared: 0 on an exact audit.
    pub groups: u64,
    /// Of those, the pairs whose counts or fingerprints differ.
    pub groups_differing: u64,
    /// Of those, the pairs read again counter by counter to name the drift
    /// (at most a bound, so a store off everywhere costs no more than an
    /// exact audit).
    pub groups_named: u64,
}

impl PagesAudit {
    /// The most [`PageDrift`] entries an audit lists.
    pub const MAX_DRIFT: usize = 100;
}

/// One count that differs from the page hit records it counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageDrift {
    /// The counter, or none for the day's hits on all counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PageKey>,
    pub day: Day,
    pub counted: u64,
    pub hit_records: u64,
}

/// Every 4xx and 5xx answer of the gateway carries this body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// A stable, machine-readable reason such as `invalid_hit` or `store_unavailable`.
    pub error: String,
    /// What went wrong and what to do about it, for a person.
    pub message: String,
}
