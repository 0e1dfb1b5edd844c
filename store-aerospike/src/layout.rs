//! Every set and bin this store writes, in one place: the data layout `aql`
//! shows. Every key is sent with its record, but `page_visitors`'.
//!
//! The tutorial's sets, exactly as its app lays them out, so that
//! `select * from test.hits` and `select * from test.summary` read the same:
//!
//! - set `hits`: key = the hit id as a string, bins `server` (string) and `ts`
//!   (integer milliseconds), and while its batch is not released `batch`.
//! - set `summary`: keys `total_hits` and each server id, bin `total`
//!   (integer), and `applied` (the batches counted into it lately, see
//!   [`once`](crate::once)).
//!
//! The named counters:
//!
//! - set `page_hits`: key = the hit id, bins `page` (the counter key) and `ts`
//!   (integer milliseconds), and `batch`, the batch that created it. An
//!   existing record marks a retried hit. Kept `PAGE_HIT_RETENTION`.
//! - set `pages`: key = the counter key, bins `total` (integer), `days` (a
//!   K-ordered map `"YYYY-MM-DD"` → hits that day) and `applied`. All change in
//!   one operate, so a key's days always sum to its total, less its imported
//!   base: `base`, `base_id` and `base_ts`, written once by an import
//!   ([`imports`](crate::imports)) with the count it added to `total`; and
//!   `repairs` (integer, absent = 0), raised by every repair of the counter
//!   ([`repair`](crate::cluster)), so that two repairs from the same read
//!   cannot both apply.
//! - set `page_visitors`: key = `"<counter key>@<YYYY-MM-DD>"` (`@` cannot occur
//!   in a counter key), one bin: `hashes`, the day's visitor hashes as an
//!   ordered list of unique integers while there are at most
//!   [`EXACT_VISITORS_MAX`](crate::visitors::EXACT_VISITORS_MAX), else
//!   `visitors`, a HyperLogLog with
//!   [`HLL_INDEX_BITS`](counter_store::pages::HLL_INDEX_BITS) index bits and no
//!   min-hash bits fed them ([`visitors`](crate::visitors)). The one set
//!   whose key is not sent: it would take a third of a record of a few
//!   visitors. Records written before the list hold their key and bins `page`
//!   and `day` too. Kept `VISITOR_RETENTION` after their last write.
//! - set `page_days`: key = `"YYYY-MM-DD"`, bins `day`, `hits` (all counters
//!   together that day, with its own `applied` map and `repairs`), `keep` and
//!   `top`, the day's top list: the overview's daily chart and today's top
//!   keys.
//! - set `page_tops`: key `all-time`, bin `top`: the all-time top list.
//! - set `visitor_salts`: key = `"YYYY-MM-DD"`, bins `day` and `salt` (32 random
//!   bytes): the day's secret for visitor hashes.
//!
//! And the exactly-once machinery's own:
//!
//! - set `batches`: key = the batch id `<writer>:<seq>`, bin `hits` (the
//!   tutorial's hits, `[id, server, ts]` each) or `pages` (page hits, `[id,
//!   key, ts]` each): the intent of a batch not yet released.

pub(crate) const HITS_SET: &str = "hits";
pub(crate) const SUMMARY_SET: &str = "summary";
pub(crate) const PAGE_HITS_SET: &str = "page_hits";
pub(crate) const PAGES_SET: &str = "pages";
pub(crate) const PAGE_VISITORS_SET: &str = "page_visitors";
pub(crate) const PAGE_DAYS_SET: &str = "page_days";
pub(crate) const PAGE_TOPS_SET: &str = "page_tops";
pub(crate) const VISITOR_SALTS_SET: &str = "visitor_salts";
/// The intents of unfinished batches.
pub(crate) const BATCHES_SET: &str = "batches";

/// The `page_tops` record of the all-time top list.
pub(crate) const ALL_TIME_KEY: &str = "all-time";

/// In `summary` and `pages`: the counter.
pub(crate) const TOTAL_BIN: &str = "total";
/// In `hits`: the app server that served the hit.
pub(crate) const SERVER_BIN: &str = "server";
/// In `hits` and `page_hits`: when the hit happened, integer milliseconds.
pub(crate) const TS_BIN: &str = "ts";
/// In `page_hits`, `page_visitors`: the counter key.
pub(crate) const PAGE_BIN: &str = "page";
/// In `pages`: the count an import started the counter at, in `total` and in
/// none of its days.
pub(crate) const BASE_BIN: &str = "base";
/// In `pages`: the import's id (its `Idempotency-Key`), which tells a repeat of
/// it from another import.
pub(crate) const BASE_ID_BIN: &str = "base_id";
/// In `pages`: when the base was imported, integer milliseconds.
pub(crate) const BASE_TS_BIN: &str = "base_ts";
/// In `pages`: the counter's hits per day.
pub(crate) const DAYS_BIN: &str = "days";
/// In `page_days`, `page_visitors`, `visitor_salts`: the day, `YYYY-MM-DD`.
pub(crate) const DAY_BIN: &str = "day";
/// In `page_visitors`: the day's HyperLogLog.
pub(crate) const VISITORS_BIN: &str = "visitors";
/// In `page_visitors`: the day's visitor hashes, exactly, while they are few.
pub(crate) const HASHES_BIN: &str = "hashes";
/// In `page_days`: all counters' hits that day.
pub(crate) const HITS_BIN: &str = "hits";
/// In a `page_days` record: the shortest page hit retention, in seconds, of
/// any gateway that counted hits of that day (`i64::MAX`: forever).
pub(crate) const KEEP_BIN: &str = "keep";
/// The unbounded map of every counter of a day that `page_days` records held
/// before the top lists: deleted by the next write of the day.
pub(crate) const OLD_PAGES_BIN: &str = "pages";
/// In `page_days` and `page_tops`: a top list.
pub(crate) const TOP_BIN: &str = "top";
/// In `visitor_salts`: the day's secret.
pub(crate) const SALT_BIN: &str = "salt";

/// In an intent: the batch's tutorial hits, each `[id, server, ts]`.
pub(crate) const INTENT_HITS_BIN: &str = "hits";
/// In an intent: the batch's page hits, each `[id, key, ts]`.
pub(crate) const INTENT_PAGE_HITS_BIN: &str = "pages";
/// In a hit record: the batch that created it (the tutorial's, until it is
/// released; page hits keep it).
pub(crate) const MARKER_BIN: &str = "batch";
/// In a counter record: the latest batch of each writer counted into it.
pub(crate) const APPLIED_BIN: &str = "applied";
/// In `pages` and `page_days`: how many repairs changed the record, the
/// guard of the next one.
pub(crate) const REPAIRS_BIN: &str = "repairs";

/// The secondary index that lets the latest-hits view read a time window of
/// `hits` instead of scanning the whole set.
pub(crate) const TS_INDEX: &str = "hits_ts";
