//! The embedded store: one redb file in the data directory, for a counter that
//! runs on a laptop with nothing else installed.
//!
//! redb is a maintained, pure-Rust, ACID key-value store with copy-on-write B-trees:
//! a committed transaction survives a crash or `kill -9`, and a second gateway on
//! the same directory is refused instead of corrupting it. A group commit is one
//! write transaction and one fsync, however many hits it holds.
//!
//! Named counters live in tables of their own beside the tutorial's: `page_hits`
//! (hit id → key, ts), `pages` (key → total), `page_days` ((key, day) → hits),
//! `page_visitors` ((key, day) → HyperLogLog) with `page_visitors_by_day` and
//! `visitor_days` (for the sweep that ends `VISITOR_RETENTION`), `day_totals`
//! (day → hits on all keys), `page_tops` (the maintained top lists: the
//! all-time one and one per day, [`TOP_KEPT`] rows each) and `visitor_salts`
//! (day → that day's secret).
//! A batch of page hits updates them all in one transaction, so the overview
//! reads a few hundred rows however many counters there are.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cardinality_estimator::CardinalityEstimator;
use counter_api::{
    Day, DayCount, DayHits, EpochMillis, Hit, HitId, ImportOutcome, PageBase, PageImport,
    PageImported, PageKey, PageRecorded, PageStats, PageTotal, PagesOverview, Recorded, ServerId,
    ServerTotal, Summary, TOTAL_HITS_KEY,
};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
};

use counter_store::audit::PageTallies;
use counter_store::numbering::{
    PageBatchCounts, added_per_server, first_occurrences, number_batch, number_page_batch,
    summary_from_counts,
};
use counter_store::pages::{DayRange, HLL_INDEX_BITS, PageHitToCount, VisitorSalt};
use counter_store::tops::{TOP_KEPT, TopList};
use counter_store::{
    Audit, Counts, Events, Reads, Retention, Store, StoreError, VisitorSalts, WriteFaults,
};

/// `hits`: hit id → (server, ts), as in the tutorial's `test.hits`.
const HITS: TableDefinition<u128, (&str, u64)> = TableDefinition::new("hits");
/// (ts, hit id) → server: the same hits in time order, for the latest-hits view.
const HITS_BY_TIME: TableDefinition<(u64, u128), &str> = TableDefinition::new("hits_by_time");
/// `summary`: `total_hits` and one counter per server, as in `test.summary`.
const SUMMARY: TableDefinition<&str, u64> = TableDefinition::new("summary");

/// `page_hits`: hit id → (key, ts): a page hit's record, which makes it idempotent.
const PAGE_HITS: TableDefinition<u128, (&str, u64)> = TableDefinition::new("page_hits");
/// (gateway's time of recording, hit id) → (): `page_hits` in the order they
/// were written, for the sweep that ends their idempotency window.
const PAGE_HITS_BY_TIME: TableDefinition<(u64, u128), ()> =
    TableDefinition::new("page_hits_by_time");
/// `pages`: key → total.
const PAGES: TableDefinition<&str, u64> = TableDefinition::new("pages");
/// (key, day) → hits that day.
const PAGE_DAYS: TableDefinition<(&str, u32), u64> = TableDefinition::new("page_days");
/// (key, day) → that day's unique-visitor HyperLogLog.
const PAGE_VISITORS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("page_visitors");
/// (day, key) → (): the rows of `page_visitors` by day, so the retention
/// sweep deletes a whole day without reading the others.
const PAGE_VISITORS_BY_DAY: TableDefinition<(u32, &str), ()> =
    TableDefinition::new("page_visitors_by_day");
/// day → when (epoch ms, the gateway's clock) a visitor of that day was last
/// added: a day's visitor figures go `VISITOR_RETENTION` after it.
const VISITOR_DAYS: TableDefinition<u32, u64> = TableDefinition::new("visitor_days");
/// day → hits on all keys that day.
const DAY_TOTALS: TableDefinition<u32, u64> = TableDefinition::new("day_totals");
/// (day, key) → hits: every counter of a day, which the overview used to read
/// for the day's top. Only opened to build the top lists from it once, then
/// deleted.
const DAY_PAGES: TableDefinition<(u32, &str), u64> = TableDefinition::new("day_pages");
/// (list, key) → hits: the maintained top lists ([`TopList`]), list
/// [`ALL_TIME`] for all time and [`day_list`] for each day.
const PAGE_TOPS: TableDefinition<(u32, &str), u64> = TableDefinition::new("page_tops");
/// The all-time top list's number in `page_tops`.
const ALL_TIME: u32 = 0;
/// key → (import id, count, ts): a counter's imported base. Its count is in
/// the counter's total in `pages` but in none of its days, which is how the
/// history tells imported views from hits.
const PAGE_BASES: TableDefinition<&str, (u128, u64, u64)> = TableDefinition::new("page_bases");
/// day → the day's secret for visitor hashes.
const VISITOR_SALTS: TableDefinition<u32, &[u8]> = TableDefinition::new("visitor_salts");

/// Cloudflare's estimator: exact while a day has few visitors, sparse while it
/// has some, a dense HyperLogLog with 2^14 registers (about 0.8% standard
/// error) from thousands up. Hashes come in already keyed and uniform, so the
/// hasher type is never used.
type Visitors = CardinalityEstimator<u64, std::hash::DefaultHasher, { HLL_INDEX_BITS as usize }, 6>;

/// New hits append at the end of both hit tables (their keys are time-ordered), so
/// a small page cache holds the hot pages; redb's default would grow to 1 GiB.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The file name inside the data directory.
pub const FILE_NAME: &str = "counter.redb";

#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    faults: Arc<WriteFaults>,
    hit_retention: Retention,
    page_hit_retention: Retention,
}

/// Page hit records expired per sweep transaction: a sweep that falls behind
/// catches up in several short transactions, not one long one.
const SWEEP_CHUNK: usize = 10_000;

impl EmbeddedStore {
    /// Opens (or creates) the store in `data_dir`; what happens inside it is
    /// reported to `events`.
    pub fn open(data_dir: &Path, events: Events) -> anyhow::Result<Self> {
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
        txn.open_table(PAGE_HITS)?;
        index_page_hits_by_time(&txn).context("indexing the page hit records by time")?;
        txn.open_table(PAGES)?;
        txn.open_table(PAGE_DAYS)?;
        index_visitors_by_day(&txn).context("indexing the unique visitors by day")?;
        txn.open_table(DAY_TOTALS)?;
        txn.open_table(VISITOR_SALTS)?;
        txn.open_table(PAGE_BASES)?;
        build_top_lists(&txn).context("building the top lists of the named counters")?;
        txn.commit()?;
        Ok(Self {
            db: Arc::new(db),
            faults: Arc::new(WriteFaults::new(events)),
            hit_retention: Retention::FOREVER,
            page_hit_retention: Retention::FOREVER,
        })
    }

    fn record_hits_blocking(&self, hits: &[Hit]) -> Result<Vec<Recorded>, redb::Error> {
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

    fn record_page_hits_blocking(
        &self,
        hits: &[PageHitToCount],
    ) -> Result<Vec<PageRecorded>, StoreError> {
        let txn = self.db.begin_write().map_err(failed)?;
        let recorded = {
            let mut page_hits = txn.open_table(PAGE_HITS).map_err(failed)?;
            let mut page_hits_by_time = txn.open_table(PAGE_HITS_BY_TIME).map_err(failed)?;
            let now = now_millis();
            let mut pages = txn.open_table(PAGES).map_err(failed)?;
            let mut page_days = txn.open_table(PAGE_DAYS).map_err(failed)?;
            let mut page_visitors = txn.open_table(PAGE_VISITORS).map_err(failed)?;
            let mut visitors_by_day = txn.open_table(PAGE_VISITORS_BY_DAY).map_err(failed)?;
            let mut visitor_days = txn.open_table(VISITOR_DAYS).map_err(failed)?;
            let mut day_totals = txn.open_table(DAY_TOTALS).map_err(failed)?;
            let mut tops = txn.open_table(PAGE_TOPS).map_err(failed)?;

            let mut counted = first_occurrences(hits);
            for (hit, counted) in hits.iter().zip(&mut counted) {
                let id = hit.id.as_u128();
                if !*counted {
                    continue;
                }
                if page_hits.get(id).map_err(failed)?.is_some() {
                    *counted = false;
                    continue;
                }
                page_hits
                    .insert(id, (hit.key.as_str(), hit.ts.as_u64()))
                    .map_err(failed)?;
                page_hits_by_time.insert((now, id), ()).map_err(failed)?;
            }
            let counts = PageBatchCounts::of(hits, &counted);

            let mut total_after = HashMap::new();
            for hit in hits {
                if total_after.contains_key(&hit.key) {
                    continue;
                }
                let added = counts.per_key.get(&hit.key).copied().unwrap_or(0);
                let after = read_counter(&pages, hit.key.as_str()).map_err(failed)? + added;
                if added > 0 {
                    pages.insert(hit.key.as_str(), after).map_err(failed)?;
                }
                total_after.insert(hit.key.clone(), after);
            }
            let mut day_after = HashMap::new();
            for hit in hits {
                let (key, day) = (hit.key.clone(), hit.day());
                if day_after.contains_key(&(key.clone(), day)) {
                    continue;
                }
                let added = counts
                    .per_key_day
                    .get(&(key.clone(), day))
                    .copied()
                    .unwrap_or(0);
                let d = day.days_since_epoch();
                let after = page_days
                    .get((key.as_str(), d))
                    .map_err(failed)?
                    .map_or(0, |v| v.value())
                    + added;
                if added > 0 {
                    page_days.insert((key.as_str(), d), after).map_err(failed)?;
                }
                day_after.insert((key, day), after);
            }
            let all_time = total_after
                .iter()
                .filter(|(key, _)| counts.per_key.contains_key(*key));
            offer_to_top(&mut tops, ALL_TIME, all_time)?;
            let mut per_day: HashMap<Day, Vec<(&PageKey, &u64)>> = HashMap::new();
            for ((key, day), after) in &day_after {
                if counts.per_key_day.contains_key(&(key.clone(), *day)) {
                    per_day.entry(*day).or_default().push((key, after));
                }
            }
            for (day, offered) in per_day {
                offer_to_top(&mut tops, day_list(day), offered)?;
            }
            for (day, added) in &counts.per_day {
                let d = day.days_since_epoch();
                let before = day_totals.get(d).map_err(failed)?.map_or(0, |v| v.value());
                day_totals.insert(d, before + added).map_err(failed)?;
            }
            for ((key, day), visitors) in &counts.visitors {
                let d = day.days_since_epoch();
                let mut estimator = match page_visitors.get((key.as_str(), d)).map_err(failed)? {
                    Some(bytes) => decode_visitors(bytes.value())?,
                    None => Visitors::new(),
                };
                for visitor in visitors {
                    estimator.insert_hash(visitor.0);
                }
                let bytes = postcard::to_allocvec(&estimator)
                    .map_err(|e| StoreError::Failed(format!("encoding a HyperLogLog: {e}")))?;
                page_visitors
                    .insert((key.as_str(), d), bytes.as_slice())
                    .map_err(failed)?;
                visitors_by_day
                    .insert((d, key.as_str()), ())
                    .map_err(failed)?;
                visitor_days.insert(d, now).map_err(failed)?;
            }
            number_page_batch(hits, &counted, &counts, &total_after, &day_after)
        };
        txn.commit().map_err(failed)?;
        Ok(recorded)
    }

    /// Deletes up to [`SWEEP_CHUNK`] records of `records` stamped before
    /// `cutoff` (epoch ms) in `by_time`, oldest first; answers how many.
    fn expire_blocking<V: redb::Value + 'static>(
        &self,
        records: TableDefinition<u128, (&'static str, u64)>,
        by_time: TableDefinition<(u64, u128), V>,
        cutoff: u64,
    ) -> Result<usize, StoreError> {
        let txn = self.db.begin_write().map_err(failed)?;
        let expired = {
            let mut records = txn.open_table(records).map_err(failed)?;
            let mut by_time = txn.open_table(by_time).map_err(failed)?;
            let mut old = Vec::new();
            for entry in by_time
                .range(..(cutoff, 0_u128))
                .map_err(failed)?
                .take(SWEEP_CHUNK)
            {
                old.push(entry.map_err(failed)?.0.value());
            }
            for (at, id) in &old {
                records.remove(*id).map_err(failed)?;
                by_time.remove((*at, *id)).map_err(failed)?;
            }
            old.len()
        };
        txn.commit().map_err(failed)?;
        Ok(expired)
    }

    /// Deletes the visitor figures of up to [`SWEEP_CHUNK`] counter-days of
    /// days whose last visitor was added before `cutoff` (epoch ms), oldest
    /// day first; a day's row in `visitor_days` goes with its last one.
    /// Answers how many.
    fn expire_visitor_days_blocking(&self, cutoff: u64) -> Result<usize, StoreError> {
        let txn = self.db.begin_write().map_err(failed)?;
        let expired = {
            let mut page_visitors = txn.open_table(PAGE_VISITORS).map_err(failed)?;
            let mut by_day = txn.open_table(PAGE_VISITORS_BY_DAY).map_err(failed)?;
            let mut visitor_days = txn.open_table(VISITOR_DAYS).map_err(failed)?;
            let mut old_days = Vec::new();
            for entry in visitor_days.iter().map_err(failed)? {
                let (day, last) = entry.map_err(failed)?;
                if last.value() < cutoff {
                    old_days.push(day.value());
                }
            }
            let mut expired = 0;
            for d in old_days {
                let mut keys = Vec::new();
                for entry in by_day
                    .range((d, "")..(d + 1, ""))
                    .map_err(failed)?
                    .take(SWEEP_CHUNK - expired)
                {
                    keys.push(entry.map_err(failed)?.0.value().1.to_owned());
                }
                for key in &keys {
                    page_visitors.remove((key.as_str(), d)).map_err(failed)?;
                    by_day.remove((d, key.as_str())).map_err(failed)?;
                }
                expired += keys.len();
                if expired == SWEEP_CHUNK {
                    break;
                }
                visitor_days.remove(d).map_err(failed)?;
            }
            expired
        };
        txn.commit().map_err(failed)?;
        Ok(expired)
    }

    /// Keeps each day's unique-visitor figures for `visitors` after its last
    /// visitor was added, then deletes the whole day's: a background sweep
    /// every tenth of the window (1 s to 10 min). Totals and days of hits stay.
    pub fn keeping_visitors(self, visitors: Retention) -> Self {
        if let Some(window) = visitors.0 {
            self.sweep(window, "page_visitors", |store, cutoff| {
                store.expire_visitor_days_blocking(cutoff)
            });
        }
        self
    }

    /// Keeps page hit records for `page_hits`, and the tutorial's hit records
    /// for `hits`, then deletes them: a background sweep per set, every tenth
    /// of its window (1 s to 10 min).
    pub fn retaining(mut self, page_hits: Retention, hits: Retention) -> Self {
        self.hit_retention = hits;
        self.page_hit_retention = page_hits;
        if let Some(window) = page_hits.0 {
            self.sweep(window, "page_hits", |store, cutoff| {
                store.expire_blocking(PAGE_HITS, PAGE_HITS_BY_TIME, cutoff)
            });
        }
        if let Some(window) = hits.0 {
            self.sweep(window, "hits", |store, cutoff| {
                store.expire_blocking(HITS, HITS_BY_TIME, cutoff)
            });
        }
        self
    }

    fn sweep(
        &self,
        window: Duration,
        set: &'static str,
        expire: fn(&Self, u64) -> Result<usize, StoreError>,
    ) {
        let every = (window / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let cutoff = now_millis().saturating_sub(window.as_millis() as u64);
                loop {
                    match store.blocking(move |store| expire(&store, cutoff)).await {
                        Ok(n) if n == SWEEP_CHUNK => continue,
                        Ok(n) => {
                            if n > 0 {
                                tracing::debug!(
                                    set,
                                    expired = n,
                                    "records past their window deleted"
                                );
                            }
                        }
                        Err(error) => {
                            tracing::warn!(set, %error, "expiring records failed; the next sweep tries again");
                            store.faults.record(set, &error);
                        }
                    }
                    break;
                }
            }
        });
    }

    fn page_stats_blocking(&self, key: &PageKey, range: DayRange) -> Result<PageStats, StoreError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let pages = txn.open_table(PAGES).map_err(failed)?;
        let page_days = txn.open_table(PAGE_DAYS).map_err(failed)?;
        let page_visitors = txn.open_table(PAGE_VISITORS).map_err(failed)?;
        let total = read_counter(&pages, key.as_str()).map_err(failed)?;
        let base = read_base(&txn.open_table(PAGE_BASES).map_err(failed)?, key.as_str())?;
        let (first, last) = (
            range.first.days_since_epoch(),
            range.last.days_since_epoch(),
        );
        let mut hits_on = HashMap::new();
        for entry in page_days
            .range((key.as_str(), first)..=(key.as_str(), last))
            .map_err(failed)?
        {
            let (k, hits) = entry.map_err(failed)?;
            hits_on.insert(k.value().1, hits.value());
        }
        let mut visitors_on = HashMap::new();
        for entry in page_visitors
            .range((key.as_str(), first)..=(key.as_str(), last))
            .map_err(failed)?
        {
            let (k, bytes) = entry.map_err(failed)?;
            visitors_on.insert(
                k.value().1,
                decode_visitors(bytes.value())?.estimate() as u64,
            );
        }
        let days: Vec<DayCount> = range
            .days()
            .map(|day| {
                let d = day.days_since_epoch();
                DayCount {
                    day,
                    hits: hits_on.get(&d).copied().unwrap_or(0),
                    visitors: visitors_on.get(&d).copied().unwrap_or(0),
                }
            })
            .collect();
        Ok(PageStats {
            key: key.clone(),
            total,
            base: base.map(|(_, base)| base),
            today: *days.last().expect("a range holds at least its last day"),
            days,
        })
    }

    fn pages_overview_blocking(
        &self,
        limit: usize,
        range: DayRange,
    ) -> Result<PagesOverview, StoreError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let tops = txn.open_table(PAGE_TOPS).map_err(failed)?;
        let day_totals = txn.open_table(DAY_TOTALS).map_err(failed)?;
        let all_time = read_top(&tops, ALL_TIME)?;
        let on_day = read_top(&tops, day_list(range.last))?;
        let today = range.last.days_since_epoch();
        let mut per_day = HashMap::new();
        for entry in day_totals
            .range(range.first.days_since_epoch()..=today)
            .map_err(failed)?
        {
            let (d, hits) = entry.map_err(failed)?;
            per_day.insert(d.value(), hits.value());
        }
        let totals = |list: TopList| {
            list.top(limit)
                .into_iter()
                .map(|(key, hits)| PageTotal { key, hits })
                .collect()
        };
        Ok(PagesOverview {
            top_all_time: totals(all_time),
            top_today: totals(on_day),
            days: range
                .days()
                .map(|day| DayHits {
                    day,
                    hits: per_day.get(&day.days_since_epoch()).copied().unwrap_or(0),
                })
                .collect(),
        })
    }

    fn visitor_salt_blocking(
        &self,
        day: Day,
        forget_before: Day,
    ) -> Result<VisitorSalt, StoreError> {
        let d = day.days_since_epoch();
        {
            let txn = self.db.begin_read().map_err(failed)?;
            let salts = txn.open_table(VISITOR_SALTS).map_err(failed)?;
            if let Some(salt) = salts.get(d).map_err(failed)? {
                return stored_salt(salt.value());
            }
        }
        let txn = self.db.begin_write().map_err(failed)?;
        let salt = {
            let mut salts = txn.open_table(VISITOR_SALTS).map_err(failed)?;
            // Another request may have made it since the read above.
            let existing = salts
                .get(d)
                .map_err(failed)?
                .map(|s| stored_salt(s.value()));
            let salt = match existing {
                Some(salt) => salt?,
                None => {
                    let salt = VisitorSalt::random()?;
                    salts.insert(d, salt.0.as_slice()).map_err(failed)?;
                    salt
                }
            };
            // Yesterday's secret stays for hits stamped just before midnight;
            // older ones go, so no day's hashes can be recomputed later.
            let forget = forget_before.days_since_epoch();
            salts.retain_in(..forget, |_, _| false).map_err(failed)?;
            salt
        };
        txn.commit().map_err(failed)?;
        Ok(salt)
    }

    fn summary_blocking(&self) -> Result<Summary, StoreError> {
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

    fn latest_hits_blocking(&self, limit: usize) -> Result<Vec<Hit>, StoreError> {
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

    fn count_hit_records_blocking(&self) -> Result<Summary, StoreError> {
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

    /// One read transaction, so the counters and the records are of the same
    /// moment.
    fn page_tallies_blocking(&self, since: Day) -> Result<PageTallies, StoreError> {
        let txn = self.db.begin_read().map_err(failed)?;
        let mut tallies = PageTallies::default();
        let since_day = since.days_since_epoch();
        for entry in txn
            .open_table(PAGE_HITS)
            .map_err(failed)?
            .iter()
            .map_err(failed)?
        {
            let (_, value) = entry.map_err(failed)?;
            let (key, ts) = value.value();
            let day = Day::of(stored(EpochMillis::new(ts.into()))?);
            if day >= since {
                *tallies.records.entry((stored_key(key)?, day)).or_default() += 1;
            }
        }
        let mut sums: HashMap<String, u64> = HashMap::new();
        for entry in txn
            .open_table(PAGE_DAYS)
            .map_err(failed)?
            .iter()
            .map_err(failed)?
        {
            let (id, hits) = entry.map_err(failed)?;
            let (key, day) = id.value();
            let hits = hits.value();
            *sums.entry(key.to_owned()).or_default() += hits;
            if day >= since_day && hits > 0 {
                let day = stored_day(day)?;
                tallies.counted.insert((stored_key(key)?, day), hits);
            }
        }
        let bases = txn.open_table(PAGE_BASES).map_err(failed)?;
        for entry in txn
            .open_table(PAGES)
            .map_err(failed)?
            .iter()
            .map_err(failed)?
        {
            let (key, total) = entry.map_err(failed)?;
            // An imported base is in the total and in no day.
            let base = read_base(&bases, key.value())?.map_or(0, |(_, base)| base.count);
            if base + sums.get(key.value()).copied().unwrap_or(0) != total.value() {
                tallies.totals_off_days += 1;
            }
        }
        for entry in txn
            .open_table(DAY_TOTALS)
            .map_err(failed)?
            .range(since_day..)
            .map_err(failed)?
        {
            let (day, hits) = entry.map_err(failed)?;
            let day = stored_day(day.value())?;
            tallies.day_totals.insert(day, hits.value());
        }
        Ok(tallies)
    }

    /// One transaction: the base is in the total, the top list and `page_bases`
    /// together, or in none of them.
    fn import_page_base_blocking(&self, import: &PageImport) -> Result<ImportOutcome, StoreError> {
        let txn = self.db.begin_write().map_err(failed)?;
        let outcome = {
            let mut bases = txn.open_table(PAGE_BASES).map_err(failed)?;
            let mut pages = txn.open_table(PAGES).map_err(failed)?;
            let key = import.key.as_str();
            let total = read_counter(&pages, key).map_err(failed)?;
            match read_base(&bases, key)? {
                Some((id, base)) if id == import.id.as_u128() => {
                    ImportOutcome::Imported(PageImported {
                        key: import.key.clone(),
                        base: base.count,
                        total,
                        duplicate: true,
                    })
                }
                Some((_, base)) => ImportOutcome::AlreadyImported { base },
                None => {
                    let count = import.count.get();
                    let total = total + count;
                    bases
                        .insert(key, (import.id.as_u128(), count, import.ts.as_u64()))
                        .map_err(failed)?;
                    pages.insert(key, total).map_err(failed)?;
                    let mut tops = txn.open_table(PAGE_TOPS).map_err(failed)?;
                    offer_to_top(&mut tops, ALL_TIME, [(&import.key, &total)])?;
                    ImportOutcome::Imported(PageImported {
                        key: import.key.clone(),
                        base: count,
                        total,
                        duplicate: false,
                    })
                }
            }
        };
        txn.commit().map_err(failed)?;
        Ok(outcome)
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

impl Counts for EmbeddedStore {
    async fn record_hits(&self, hits: Vec<Hit>) -> Vec<Result<Recorded, StoreError>> {
        let count = hits.len();
        // One transaction: the whole batch is counted, or none of it.
        match self
            .blocking(move |store| store.record_hits_blocking(&hits).map_err(failed))
            .await
        {
            Ok(recorded) => recorded.into_iter().map(Ok).collect(),
            Err(error) => {
                self.faults.record("hits", &error);
                vec![Err(error); count]
            }
        }
    }

    async fn record_page_hits(
        &self,
        hits: Vec<PageHitToCount>,
    ) -> Vec<Result<PageRecorded, StoreError>> {
        let count = hits.len();
        match self
            .blocking(move |store| store.record_page_hits_blocking(&hits))
            .await
        {
            Ok(recorded) => recorded.into_iter().map(Ok).collect(),
            Err(error) => {
                self.faults.record("page_hits", &error);
                vec![Err(error); count]
            }
        }
    }

    async fn import_page_base(&self, import: PageImport) -> Result<ImportOutcome, StoreError> {
        self.blocking(move |store| store.import_page_base_blocking(&import))
            .await
    }
}

impl Reads for EmbeddedStore {
    async fn summary(&self) -> Result<Summary, StoreError> {
        self.blocking(|store| store.summary_blocking()).await
    }

    async fn latest_hits(&self, limit: usize) -> Result<Vec<Hit>, StoreError> {
        self.blocking(move |store| store.latest_hits_blocking(limit))
            .await
    }

    async fn page_stats(&self, key: &PageKey, days: DayRange) -> Result<PageStats, StoreError> {
        let key = key.clone();
        self.blocking(move |store| store.page_stats_blocking(&key, days))
            .await
    }

    async fn pages_overview(
        &self,
        limit: usize,
        days: DayRange,
    ) -> Result<PagesOverview, StoreError> {
        self.blocking(move |store| store.pages_overview_blocking(limit, days))
            .await
    }
}

impl Audit for EmbeddedStore {
    async fn count_hit_records(&self) -> Result<Summary, StoreError> {
        self.blocking(|store| store.count_hit_records_blocking())
            .await
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

    async fn page_tallies(&self, since: Day) -> Result<PageTallies, StoreError> {
        self.blocking(move |store| store.page_tallies_blocking(since))
            .await
    }

    fn page_hit_retention(&self) -> Retention {
        self.page_hit_retention
    }

    fn hit_retention(&self) -> Retention {
        self.hit_retention
    }

    async fn findings(&self) -> Vec<String> {
        self.faults.findings()
    }
}

impl VisitorSalts for EmbeddedStore {
    async fn visitor_salt(&self, day: Day, forget_before: Day) -> Result<VisitorSalt, StoreError> {
        self.blocking(move |store| store.visitor_salt_blocking(day, forget_before))
            .await
    }
}

impl Store for EmbeddedStore {
    async fn check_ready(&self) -> Result<(), StoreError> {
        self.faults.check()?;
        self.blocking(|store| {
            let txn = store.db.begin_read().map_err(failed)?;
            txn.open_table(SUMMARY).map_err(failed)?;
            Ok(())
        })
        .await
    }
}

fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A store from before page hit records expired gets their time index once,
/// from the hits' own timestamps.
fn index_page_hits_by_time(txn: &redb::WriteTransaction) -> anyhow::Result<()> {
    let mut by_time = txn.open_table(PAGE_HITS_BY_TIME)?;
    if !by_time.is_empty()? {
        return Ok(());
    }
    let page_hits = txn.open_table(PAGE_HITS)?;
    for entry in page_hits.iter()? {
        let (id, value) = entry?;
        by_time.insert((value.value().1, id.value()), ())?;
    }
    Ok(())
}

/// A store from before visitor figures expired gets their index by day once;
/// their retention starts now.
fn index_visitors_by_day(txn: &redb::WriteTransaction) -> anyhow::Result<()> {
    let page_visitors = txn.open_table(PAGE_VISITORS)?;
    let mut by_day = txn.open_table(PAGE_VISITORS_BY_DAY)?;
    let mut visitor_days = txn.open_table(VISITOR_DAYS)?;
    if !by_day.is_empty()? || page_visitors.is_empty()? {
        return Ok(());
    }
    let now = now_millis();
    for entry in page_visitors.iter()? {
        let (id, _) = entry?;
        let (key, day) = id.value();
        by_day.insert((day, key), ())?;
        visitor_days.insert(day, now)?;
    }
    Ok(())
}

/// The number of `day`'s top list in `page_tops`.
fn day_list(day: Day) -> u32 {
    day.days_since_epoch() + 1
}

/// One top list as stored.
fn read_top(
    tops: &impl ReadableTable<(u32, &'static str), u64>,
    list: u32,
) -> Result<TopList, StoreError> {
    let mut entries = Vec::with_capacity(TOP_KEPT);
    for entry in tops.range((list, "")..(list + 1, "")).map_err(failed)? {
        let (k, hits) = entry.map_err(failed)?;
        entries.push((stored_key(k.value().1)?, hits.value()));
    }
    Ok(TopList::from_entries(entries))
}

/// Offers counters with their counts now to a top list, and writes back what
/// changed: the list's own rows only, never a row per counter.
fn offer_to_top<'k>(
    tops: &mut redb::Table<'_, (u32, &'static str), u64>,
    list: u32,
    offered: impl IntoIterator<Item = (&'k PageKey, &'k u64)>,
) -> Result<(), StoreError> {
    let before = read_top(tops, list)?;
    let mut after = before.clone();
    let mut changed = false;
    for (key, hits) in offered {
        changed |= after.offer(key, *hits);
    }
    if !changed {
        return Ok(());
    }
    for (key, _) in before.top(TOP_KEPT) {
        if after.get(&key).is_none() {
            tops.remove((list, key.as_str())).map_err(failed)?;
        }
    }
    for (key, hits) in after.top(TOP_KEPT) {
        if before.get(&key) != Some(hits) {
            tops.insert((list, key.as_str()), hits).map_err(failed)?;
        }
    }
    Ok(())
}

/// A store from before the top lists were kept gets them once, from a full
/// read of `pages` and of `day_pages`, which is then deleted.
fn build_top_lists(txn: &redb::WriteTransaction) -> anyhow::Result<()> {
    let mut tops = txn.open_table(PAGE_TOPS)?;
    if !tops.is_empty()? {
        return Ok(());
    }
    let pages = txn.open_table(PAGES)?;
    let mut all_time = TopList::default();
    for entry in pages.iter()? {
        let (key, hits) = entry?;
        all_time.offer(&stored_key(key.value())?, hits.value());
    }
    let mut days: HashMap<u32, TopList> = HashMap::new();
    let had_day_pages = txn
        .list_tables()?
        .any(|table| table.name() == DAY_PAGES.name());
    if had_day_pages {
        let day_pages = txn.open_table(DAY_PAGES)?;
        for entry in day_pages.iter()? {
            let (k, hits) = entry?;
            let (d, key) = k.value();
            days.entry(d + 1)
                .or_default()
                .offer(&stored_key(key)?, hits.value());
        }
    }
    for (list, top) in std::iter::once((ALL_TIME, all_time)).chain(days) {
        for (key, hits) in top.top(TOP_KEPT) {
            tops.insert((list, key.as_str()), hits)?;
        }
    }
    if had_day_pages {
        txn.delete_table(DAY_PAGES)?;
    }
    Ok(())
}

/// A counter's imported base and the import's id, if it has one.
fn read_base(
    table: &impl ReadableTable<&'static str, (u128, u64, u64)>,
    key: &str,
) -> Result<Option<(u128, PageBase)>, StoreError> {
    let Some(row) = table.get(key).map_err(failed)? else {
        return Ok(None);
    };
    let (id, count, ts) = row.value();
    Ok(Some((
        id,
        PageBase {
            count,
            ts: stored(EpochMillis::new(ts.into()))?,
        },
    )))
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

fn decode_visitors(bytes: &[u8]) -> Result<Visitors, StoreError> {
    postcard::from_bytes(bytes)
        .map_err(|e| StoreError::Failed(format!("embedded store holds a damaged HyperLogLog: {e}")))
}

fn stored_salt(bytes: &[u8]) -> Result<VisitorSalt, StoreError> {
    bytes
        .try_into()
        .map(VisitorSalt)
        .map_err(|_| StoreError::Failed("embedded store holds a damaged visitor secret".into()))
}

fn stored_key(key: &str) -> Result<PageKey, StoreError> {
    key.parse().map_err(|e| {
        StoreError::Failed(format!("embedded store holds an invalid counter key: {e}"))
    })
}

fn stored_day(days_since_epoch: u32) -> Result<Day, StoreError> {
    Day::from_days_since_epoch(days_since_epoch)
        .map_err(|e| StoreError::Failed(format!("embedded store holds an invalid day: {e}")))
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
            let store = EmbeddedStore::open(dir.path(), Events::none()).unwrap();
            let recorded = store
                .record_hits(vec![first.clone(), hit("b"), hit("a")])
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let totals: Vec<u64> = recorded.iter().map(|r| r.total_hits).collect();
            assert_eq!(totals, [1, 2, 3]);
        }
        let store = EmbeddedStore::open(dir.path(), Events::none()).unwrap();
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

    #[tokio::test]
    async fn an_import_is_a_base_set_once_that_the_audit_reads_apart_from_the_days() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), Events::none()).unwrap();
        let ts = 1_764_028_800_000;
        store
            .record_page_hits(vec![page_hit("blog/a", ts, None)])
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let import = PageImport {
            id: HitId::from_uuid(uuid::Uuid::now_v7()).unwrap(),
            key: "blog/a".parse().unwrap(),
            count: counter_api::BaseCount::new(100).unwrap(),
            ts: EpochMillis::new(ts.into()).unwrap(),
        };
        let imported = |duplicate| {
            ImportOutcome::Imported(PageImported {
                key: import.key.clone(),
                base: 100,
                total: 101,
                duplicate,
            })
        };
        assert_eq!(
            store.import_page_base(import.clone()).await.unwrap(),
            imported(false)
        );
        assert_eq!(
            store.import_page_base(import.clone()).await.unwrap(),
            imported(true)
        );
        let another = PageImport {
            id: HitId::from_uuid(uuid::Uuid::now_v7()).unwrap(),
            ..import.clone()
        };
        assert_eq!(
            store.import_page_base(another).await.unwrap(),
            ImportOutcome::AlreadyImported {
                base: PageBase {
                    count: 100,
                    ts: import.ts
                }
            }
        );
        let next = store
            .record_page_hits(vec![page_hit("blog/a", ts + 1, None)])
            .await;
        assert_eq!(
            next[0].as_ref().unwrap().total,
            102,
            "the next hit follows the base"
        );
        let range = DayRange::ending(Day::of(import.ts), 1);
        let stats = store.page_stats(&import.key, range).await.unwrap();
        assert_eq!((stats.total, stats.today.hits), (102, 2));
        assert_eq!(
            stats.base,
            Some(PageBase {
                count: 100,
                ts: import.ts
            })
        );
        let tallies = store.page_tallies(Day::of(import.ts)).await.unwrap();
        assert_eq!(tallies.totals_off_days, 0, "total = base + days");
        let overview = store.pages_overview(1, range).await.unwrap();
        assert_eq!(overview.top_all_time[0].hits, 102);
        // Reopened, the base is still there and still apart.
        drop(store);
        let store = EmbeddedStore::open(dir.path(), Events::none()).unwrap();
        let stats = store.page_stats(&import.key, range).await.unwrap();
        assert_eq!((stats.total, stats.base.map(|b| b.count)), (102, Some(100)));
    }

    fn page_hit(key: &str, ts: u64, visitor: Option<u64>) -> PageHitToCount {
        PageHitToCount {
            id: HitId::from_uuid(uuid::Uuid::now_v7()).unwrap(),
            key: key.parse().unwrap(),
            ts: EpochMillis::new(ts.into()).unwrap(),
            visitor: visitor.map(counter_store::pages::VisitorHash),
        }
    }

    #[tokio::test]
    async fn page_counters_days_and_visitors_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (day1, day2) = (1_764_028_799_000, 1_764_028_800_000); // either side of midnight
        let first = page_hit("blog/a", day1, Some(1));
        {
            let store = EmbeddedStore::open(dir.path(), Events::none()).unwrap();
            let batch = vec![
                first.clone(),
                page_hit("blog/a", day2, Some(1)),
                page_hit("blog/b", day2, Some(2)),
                first.clone(),
                page_hit("blog/a", day2, Some(1)),
            ];
            let recorded: Vec<(u64, u64, bool)> = store
                .record_page_hits(batch)
                .await
                .into_iter()
                .map(|r| r.map(|r| (r.total, r.today, r.duplicate)).unwrap())
                .collect();
            assert_eq!(
                recorded,
                [
                    (1, 1, false),
                    (2, 1, false),
                    (1, 1, false),
                    (3, 1, true),
                    (3, 2, false)
                ]
            );
        }
        let store = EmbeddedStore::open(dir.path(), Events::none()).unwrap();
        let again = store.record_page_hits(vec![first]).await;
        assert!(again[0].as_ref().unwrap().duplicate);

        let day2 = Day::of(EpochMillis::new(day2.into()).unwrap());
        let stats = store
            .page_stats(&"blog/a".parse().unwrap(), DayRange::ending(day2, 3))
            .await
            .unwrap();
        assert_eq!(stats.total, 3);
        let days: Vec<(String, u64, u64)> = stats
            .days
            .iter()
            .map(|d| (d.day.to_string(), d.hits, d.visitors))
            .collect();
        assert_eq!(
            days,
            [
                ("2025-11-23".into(), 0, 0),
                ("2025-11-24".into(), 1, 1),
                ("2025-11-25".into(), 2, 1)
            ]
        );
        let overview = store
            .pages_overview(10, DayRange::ending(day2, 2))
            .await
            .unwrap();
        let top: Vec<(&str, u64)> = overview
            .top_all_time
            .iter()
            .map(|p| (p.key.as_str(), p.hits))
            .collect();
        assert_eq!(top, [("blog/a", 3), ("blog/b", 1)]);
        let today: Vec<(&str, u64)> = overview
            .top_today
            .iter()
            .map(|p| (p.key.as_str(), p.hits))
            .collect();
        assert_eq!(today, [("blog/a", 2), ("blog/b", 1)]);
        let per_day: Vec<u64> = overview.days.iter().map(|d| d.hits).collect();
        assert_eq!(per_day, [1, 3]);
    }

    #[tokio::test]
    async fn ten_thousand_visitors_are_estimated_within_two_percent() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), Events::none()).unwrap();
        let ts = 1_764_028_800_000;
        // Each visitor twice, in batches like a busy gateway's, hashed as the
        // gateway hashes them.
        let salt = counter_store::pages::VisitorSalt([7; 32]);
        let key: PageKey = "hll".parse().unwrap();
        let hashes: Vec<u64> = (0..10_000u32)
            .map(|i| {
                let visitor = counter_api::Visitor {
                    addr: std::net::Ipv4Addr::from(0x0a00_0000 + i).into(),
                    user_agent: "Mozilla/5.0".parse().unwrap(),
                };
                counter_store::pages::VisitorHash::of(&salt, &key, &visitor).0
            })
            .collect();
        for chunk in hashes.iter().chain(&hashes).collect::<Vec<_>>().chunks(512) {
            let batch = chunk
                .iter()
                .map(|&&h| page_hit("hll", ts, Some(h)))
                .collect();
            for r in store.record_page_hits(batch).await {
                r.unwrap();
            }
        }
        let day = Day::of(EpochMillis::new(ts.into()).unwrap());
        let stats = store
            .page_stats(&key, DayRange::ending(day, 1))
            .await
            .unwrap();
        assert_eq!(stats.total, 20_000);
        let error = (stats.today.visitors as f64 - 10_000.0) / 10_000.0;
        println!(
            "10,000 visitors estimated as {} ({:+.2}%)",
            stats.today.visitors,
            error * 100.0
        );
        assert!(
            error.abs() < 0.02,
            "estimate {} is off by {:.2}%",
            stats.today.visitors,
            error * 100.0
        );
    }

    #[tokio::test]
    async fn a_days_secret_is_shared_and_forgotten_after_the_next_day() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), Events::none()).unwrap();
        let day: Day = "2026-11-25".parse().unwrap();
        let salt = store.visitor_salt(day, day.minus(1)).await.unwrap();
        assert_eq!(store.visitor_salt(day, day.minus(1)).await.unwrap(), salt);
        // A hit stamped tomorrow by a skewed clock: yesterday's secret stays.
        let yesterday = store
            .visitor_salt(day.minus(1), day.minus(1))
            .await
            .unwrap();
        let tomorrow = store.visitor_salt(day.plus(1), day.minus(1)).await.unwrap();
        assert_ne!(tomorrow, salt);
        assert_eq!(
            store
                .visitor_salt(day.minus(1), day.minus(1))
                .await
                .unwrap(),
            yesterday
        );
        // Two days on, today's secret is gone for good.
        store.visitor_salt(day.plus(2), day.plus(1)).await.unwrap();
        assert_ne!(
            store.visitor_salt(day, day.plus(1)).await.unwrap(),
            salt,
            "a secret two days old is gone for good"
        );
    }

    #[tokio::test]
    async fn a_store_from_before_the_top_lists_gets_them_once() {
        let dir = tempfile::tempdir().unwrap();
        let day: Day = "2026-11-25".parse().unwrap();
        let d = day.days_since_epoch();
        {
            // The tables as the gateway kept them before: every counter of a day.
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut pages = txn.open_table(PAGES).unwrap();
                let mut day_pages = txn.open_table(DAY_PAGES).unwrap();
                for i in 0..250_u64 {
                    let key = format!("k{i:03}");
                    pages.insert(key.as_str(), i % 7 + 10).unwrap();
                    day_pages.insert((d, key.as_str()), i % 7).unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let store = EmbeddedStore::open(dir.path(), Events::none()).unwrap();
        let overview = store
            .pages_overview(100, DayRange::ending(day, 1))
            .await
            .unwrap();
        let view = |list: &[PageTotal]| -> Vec<(String, u64)> {
            list.iter().map(|p| (p.key.to_string(), p.hits)).collect()
        };
        let expected = |base: u64| -> Vec<(String, u64)> {
            let all = (0..250_u64).map(|i| (format!("k{i:03}").parse().unwrap(), i % 7 + base));
            counter_store::tops::top(all, 100)
                .into_iter()
                .map(|(k, n)| (k.to_string(), n))
                .collect()
        };
        assert_eq!(view(&overview.top_all_time), expected(10));
        assert_eq!(view(&overview.top_today), expected(0));
        let txn = store.db.begin_read().unwrap();
        assert!(
            !txn.list_tables()
                .unwrap()
                .any(|t| t.name() == DAY_PAGES.name()),
            "the old table is gone"
        );
    }

    #[test]
    fn a_second_gateway_on_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = EmbeddedStore::open(dir.path(), Events::none()).unwrap();
        let error = EmbeddedStore::open(dir.path(), Events::none())
            .err()
            .unwrap();
        assert!(
            format!("{error:#}").contains("another gateway"),
            "{error:#}"
        );
    }
}
