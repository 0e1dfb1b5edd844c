//! The contract suite: what every store of the hit counter must do, checked
//! through the [`Store`] traits only, so that the embedded store, the
//! Aerospike store and any store to come are held to the same behaviour the
//! gateway relies on (numbering, duplicates, days, top lists, retention, the
//! audit and the visitor secrets).
//!
//! A store runs it from its own `tests/contract.rs`, with the crate feature
//! `contract` on in its dev-dependencies: one `#[tokio::test]` per check, each
//! calling the check on a store of its own:
//!
//! ```text
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn tutorial_hits_are_numbered_once() {
//!     let store = MyStore::open(/* a fresh place */);
//!     counter_store::contract::tutorial_hits_are_numbered_once(&store).await;
//! }
//! ```
//!
//! Most checks take a `&S`; those that need stores built with a given
//! retention take a constructor instead, `async |page_hits, hits| -> S`
//! (see [`retention_is_what_the_store_was_built_with`]). A store that cannot
//! expire records in seconds leaves out
//! [`page_hit_ids_count_again_past_their_window`], and its test file says why.
//!
//! A store may be shared and already hold data (an Aerospike cluster that
//! other tests and gateways use): every check counts on keys and server ids of
//! its own run ([`Run`]) and compares shared totals (`total_hits`, day totals,
//! the audit's differences) as deltas from what it found before. Those deltas
//! are only exact if nothing else counts meanwhile, so on a shared store run
//! the checks one at a time, not in parallel.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use counter_api::{
    Day, EpochMillis, Hit, HitId, PageKey, PageRecorded, PageTotal, PagesOverview, Recorded,
    ServerId, Summary, TOTAL_HITS_KEY,
};

use crate::audit::{Difference, PageTallies, apply, compare_pages, differences};
use crate::pages::{DayRange, PageHitToCount, VisitorHash};
use crate::tops::{TOP_KEPT, ranks_before};
use crate::{Retention, Store, StoreError};

const DAY_MS: u64 = 86_400_000;

/// The names one check counts on: unique per run, so a store that already
/// holds data (from earlier runs too) cannot make a check pass or fail.
#[derive(Debug, Clone)]
pub struct Run {
    prefix: String,
}

impl Run {
    pub fn new() -> Self {
        Self {
            prefix: format!("contract-{:08x}", random_u128() as u32),
        }
    }

    /// A counter key of this run.
    pub fn key(&self, name: &str) -> PageKey {
        format!("{}/{name}", self.prefix)
            .parse()
            .expect("a valid counter key")
    }

    /// A server id of this run.
    pub fn server(&self, name: &str) -> ServerId {
        format!("{}-{name}", self.prefix)
            .parse()
            .expect("a valid server id")
    }

    fn owns_key(&self, key: &PageKey) -> bool {
        key.as_str().starts_with(&format!("{}/", self.prefix))
    }
}

impl Default for Run {
    fn default() -> Self {
        Self::new()
    }
}

/// A new hit id laid out as a UUID v7 (time first), as the web tier makes
/// them: stores may rely on new ids sorting after older ones.
pub fn new_hit_id() -> HitId {
    let ms = u128::from(now_ms());
    let random = random_u128();
    let id = (ms << 80)
        | (0x7 << 76)
        | ((random & 0xfff) << 64)
        | (0b10 << 62)
        | ((random >> 12) & ((1 << 62) - 1));
    HitId::from_u128(id).expect("a v7 layout is never nil")
}

/// Waits without a runtime of its own: this crate depends on none, so the
/// suite runs on whichever the store's tests use, and a thread wakes it.
async fn pause(duration: Duration) {
    use std::sync::{Arc, Mutex};
    use std::task::{Poll, Waker};

    let state: Arc<Mutex<(bool, Option<Waker>)>> = Arc::default();
    let wake = Arc::clone(&state);
    std::thread::spawn(move || {
        std::thread::sleep(duration);
        let mut state = wake
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.0 = true;
        if let Some(waker) = state.1.take() {
            waker.wake();
        }
    });
    std::future::poll_fn(|cx| {
        let mut state = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.0 {
            Poll::Ready(())
        } else {
            state.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    })
    .await;
}

fn random_u128() -> u128 {
    let mut bytes = [0; 16];
    getrandom::fill(&mut bytes).expect("the system's randomness");
    u128::from_le_bytes(bytes)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as u64
}

fn millis(ms: u64) -> EpochMillis {
    EpochMillis::new(ms.into()).expect("a time the counter accepts")
}

fn today() -> Day {
    Day::of(millis(now_ms()))
}

/// Noon of `day`: well inside it whatever the check adds or subtracts.
fn noon(day: Day) -> EpochMillis {
    millis(u64::from(day.days_since_epoch()) * DAY_MS + DAY_MS / 2)
}

/// A day years back that no one else counts on: the top list of "today" and
/// the day totals of such a day are this run's alone, even on a shared store.
fn quiet_day() -> Day {
    today().minus(1000 + (random_u128() % 3000) as u32)
}

fn tutorial_hit(id: HitId, server: &ServerId) -> Hit {
    Hit {
        id,
        server: server.clone(),
        ts: millis(now_ms()),
    }
}

fn page_hit(id: HitId, key: &PageKey, day: Day) -> PageHitToCount {
    PageHitToCount {
        id,
        key: key.clone(),
        ts: noon(day),
        visitor: None,
    }
}

/// Every answer of a batch, or a panic that says which hit failed and why.
fn all_ok<T>(what: &str, answers: Vec<Result<T, StoreError>>) -> Vec<T> {
    answers
        .into_iter()
        .enumerate()
        .map(|(i, answer)| answer.unwrap_or_else(|e| panic!("{what}: hit {i} failed: {e}")))
        .collect()
}

async fn summary<S: Store>(store: &S) -> Summary {
    store.summary().await.expect("reading the summary")
}

fn server_total(summary: &Summary, server: &ServerId) -> u64 {
    summary
        .servers
        .iter()
        .find(|s| &s.server == server)
        .map_or(0, |s| s.total)
}

/// How much a count grew, negative if it shrank (another writer's repair on
/// a shared store): a plain subtraction would wrap in a release build.
fn grown(after: u64, before: u64) -> i64 {
    after.wrapping_sub(before) as i64
}

fn recorded_view(recorded: &[Recorded]) -> Vec<(u64, u64, bool)> {
    recorded
        .iter()
        .map(|r| (r.total_hits, r.server_hits, r.duplicate))
        .collect()
}

fn page_view(recorded: &[PageRecorded]) -> Vec<(String, u64, u64, bool)> {
    recorded
        .iter()
        .map(|r| (r.key.to_string(), r.total, r.today, r.duplicate))
        .collect()
}

/// A batch of the tutorial's hits: each new hit gets the next `total_hits` and
/// the next count of its server, in batch order; an id seen earlier in the
/// batch or in an earlier batch is a duplicate, counts nothing and sees the
/// totals after its batch; the summary agrees.
pub async fn tutorial_hits_are_numbered_once<S: Store>(store: &S) {
    let run = Run::new();
    let (a, b) = (run.server("a"), run.server("b"));
    let base = summary(store).await.total_hits;
    let ids: Vec<HitId> = (0..5).map(|_| new_hit_id()).collect();

    let batch = vec![
        tutorial_hit(ids[0], &a),
        tutorial_hit(ids[1], &b),
        tutorial_hit(ids[2], &a),
        tutorial_hit(ids[0], &a),
        tutorial_hit(ids[3], &b),
    ];
    let recorded = all_ok("the first batch", store.record_hits(batch).await);
    assert_eq!(
        recorded_view(&recorded),
        [
            (base + 1, 1, false),
            (base + 2, 1, false),
            (base + 3, 2, false),
            (base + 4, 2, true),
            (base + 4, 2, false),
        ],
        "(total_hits, server_hits, duplicate) of each hit, from total_hits {base} before: \
         new hits numbered in batch order, the repeated id a duplicate seeing the totals after the batch"
    );
    let after = summary(store).await;
    assert_eq!(
        (
            grown(after.total_hits, base),
            server_total(&after, &a),
            server_total(&after, &b)
        ),
        (4, 2, 2),
        "the summary counts the 4 new hits once each (total_hits added, then per server): {after:?}"
    );

    let batch = vec![tutorial_hit(ids[1], &b), tutorial_hit(ids[4], &a)];
    let recorded = all_ok("the second batch", store.record_hits(batch).await);
    assert_eq!(
        recorded_view(&recorded),
        [(base + 5, 2, true), (base + 5, 3, false)],
        "an id counted in an earlier batch is a duplicate; the new hit is the 5th"
    );
    let after = summary(store).await;
    assert_eq!(
        (
            grown(after.total_hits, base),
            server_total(&after, &a),
            server_total(&after, &b)
        ),
        (5, 3, 2),
        "the duplicate counted nothing: {after:?}"
    );
    let ours: Vec<&ServerId> = after
        .servers
        .iter()
        .map(|s| &s.server)
        .filter(|s| **s == a || **s == b)
        .collect();
    assert_eq!(ours, [&a, &b], "the summary's servers are sorted by id");
}

/// Page hits: each key numbers its new hits 1..n in batch order, with the
/// count of the hit's own day; a repeated id, in the batch or in a later one,
/// is a duplicate that sees the key's numbers after the batch; a key's days
/// add up to its total, and a key never hit reads as zeros.
pub async fn page_hits_are_numbered_per_key_and_day<S: Store>(store: &S) {
    let run = Run::new();
    let (k1, k2) = (run.key("one"), run.key("two"));
    let d0 = today();
    let (d1, d2) = (d0.minus(1), d0.minus(2));
    let ids: Vec<HitId> = (0..7).map(|_| new_hit_id()).collect();

    let batch = vec![
        page_hit(ids[0], &k1, d2),
        page_hit(ids[1], &k1, d1),
        page_hit(ids[2], &k2, d0),
        page_hit(ids[3], &k1, d0),
        page_hit(ids[4], &k1, d0),
        page_hit(ids[0], &k1, d2),
        page_hit(ids[5], &k2, d0),
    ];
    let recorded = all_ok("the first batch", store.record_page_hits(batch).await);
    let (s1, s2) = (k1.to_string(), k2.to_string());
    assert_eq!(
        page_view(&recorded),
        [
            (s1.clone(), 1, 1, false),
            (s1.clone(), 2, 1, false),
            (s2.clone(), 1, 1, false),
            (s1.clone(), 3, 1, false),
            (s1.clone(), 4, 2, false),
            (s1.clone(), 4, 1, true),
            (s2.clone(), 2, 2, false),
        ],
        "(key, total, today, duplicate) of each hit: numbered per key, today being the hit's own day"
    );

    let batch = vec![page_hit(ids[1], &k1, d1), page_hit(ids[6], &k1, d0)];
    let recorded = all_ok("the second batch", store.record_page_hits(batch).await);
    assert_eq!(
        page_view(&recorded),
        [(s1.clone(), 5, 1, true), (s1.clone(), 5, 3, false)],
        "an id counted in an earlier batch is a duplicate"
    );

    let range = DayRange::ending(d0, 3);
    let stats = store.page_stats(&k1, range).await.expect("page_stats");
    let days: Vec<(Day, u64)> = stats.days.iter().map(|d| (d.day, d.hits)).collect();
    assert_eq!(
        (stats.total, stats.today.day, stats.today.hits),
        (5, d0, 3),
        "{k1}: its total and today's count: {stats:?}"
    );
    assert_eq!(
        days,
        [(d2, 1), (d1, 1), (d0, 3)],
        "{k1}: every day of the range, oldest first"
    );
    let stats = store.page_stats(&k2, range).await.expect("page_stats");
    let days: Vec<u64> = stats.days.iter().map(|d| d.hits).collect();
    assert_eq!((stats.total, days), (2, vec![0, 0, 2]), "{k2}: {stats:?}");

    let week = DayRange::ending(d0, 7);
    for key in [&k1, &k2] {
        let stats = store.page_stats(key, week).await.expect("page_stats");
        assert_eq!(stats.days.len(), 7, "{key}: one entry per day of the week");
        assert_eq!(
            stats.days.iter().map(|d| d.hits).sum::<u64>(),
            stats.total,
            "{key}: the days add up to the total: {stats:?}"
        );
    }

    let never = run.key("never");
    let stats = store.page_stats(&never, range).await.expect("page_stats");
    assert_eq!(
        (
            stats.total,
            stats.today.hits,
            stats.days.iter().map(|d| d.hits).collect::<Vec<_>>()
        ),
        (0, 0, vec![0, 0, 0]),
        "a key never hit reads as zeros: {stats:?}"
    );
}

/// Checks a top list of at most `limit`: sorted by hits, ties by key, and
/// holding each of `expected` with its exact count exactly when it ranks
/// within the list; none of this run's other keys. Foreign keys of a shared
/// store may fill it, which only moves the cut.
fn assert_top(
    what: &str,
    run: &Run,
    list: &[PageTotal],
    limit: usize,
    expected: &[(PageKey, u64)],
) {
    assert!(
        list.len() <= limit,
        "{what}: {} entries for a limit of {limit}",
        list.len()
    );
    for pair in list.windows(2) {
        assert!(
            ranks_before(
                pair[0].hits,
                pair[0].key.as_str(),
                pair[1].hits,
                pair[1].key.as_str()
            ),
            "{what}: not sorted by hits, ties by key, at {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
    let full = list.len() == limit;
    let last = list.last();
    let mut want: Vec<(PageKey, u64)> = expected
        .iter()
        .filter(|(key, hits)| match last {
            Some(last) if full => {
                ranks_before(*hits, key.as_str(), last.hits, last.key.as_str())
                    || (key == &last.key && *hits == last.hits)
            }
            _ => true,
        })
        .cloned()
        .collect();
    want.sort_by(|(k1, h1), (k2, h2)| h2.cmp(h1).then_with(|| k1.cmp(k2)));
    let ours: Vec<(PageKey, u64)> = list
        .iter()
        .filter(|p| run.owns_key(&p.key))
        .map(|p| (p.key.clone(), p.hits))
        .collect();
    assert_eq!(ours, want, "{what}: this run's counters in the list");
}

/// The overview: the all-time and today's top lists exact (most hits first,
/// ties by key, cut at the limit), and the hits on all counters per day.
pub async fn pages_overview_has_exact_tops_and_day_totals<S: Store>(store: &S) {
    let run = Run::new();
    let q = quiet_day();
    let range = DayRange::ending(q, 3);
    let before = store
        .pages_overview(TOP_KEPT, range)
        .await
        .expect("pages_overview");
    let [a, b, c, d, e] = ["a", "b", "c", "d", "e"].map(|name| run.key(name));
    // Ties on both lists, written in the opposite of key order: c and d tie
    // all time, a and b on the day.
    let mut hits = Vec::new();
    for (key, day, n) in [
        (&d, q.minus(1), 4),
        (&d, q, 1),
        (&b, q, 3),
        (&a, q, 3),
        (&c, q, 5),
        (&e, q.minus(2), 2),
    ] {
        hits.extend((0..n).map(|_| page_hit(new_hit_id(), key, day)));
    }
    let second = hits.split_off(9);
    all_ok("the first batch", store.record_page_hits(hits).await);
    all_ok("the second batch", store.record_page_hits(second).await);

    let overview = store
        .pages_overview(TOP_KEPT, range)
        .await
        .expect("pages_overview");
    let all_time = [
        (c.clone(), 5),
        (d.clone(), 5),
        (a.clone(), 3),
        (b.clone(), 3),
        (e.clone(), 2),
    ];
    let on_q = [
        (c.clone(), 5),
        (a.clone(), 3),
        (b.clone(), 3),
        (d.clone(), 1),
    ];
    assert_top(
        "top_all_time",
        &run,
        &overview.top_all_time,
        TOP_KEPT,
        &all_time,
    );
    assert_top("top_today", &run, &overview.top_today, TOP_KEPT, &on_q);

    let short = store
        .pages_overview(2, range)
        .await
        .expect("pages_overview");
    assert_top("top_all_time of 2", &run, &short.top_all_time, 2, &all_time);
    assert_top("top_today of 2", &run, &short.top_today, 2, &on_q);

    assert_day_totals(&before, &overview, range, &[2, 4, 12]);
}

fn assert_day_totals(
    before: &PagesOverview,
    after: &PagesOverview,
    range: DayRange,
    added: &[i64],
) {
    let days: Vec<Day> = range.days().collect();
    for overview in [before, after] {
        let listed: Vec<Day> = overview.days.iter().map(|d| d.day).collect();
        assert_eq!(
            listed, days,
            "the overview has every day of the range, oldest first"
        );
    }
    let delta: Vec<i64> = before
        .days
        .iter()
        .zip(&after.days)
        .map(|(b, a)| grown(a.hits, b.hits))
        .collect();
    assert_eq!(
        delta, added,
        "the day totals grew by this run's hits on each day: before {:?}, after {:?}",
        before.days, after.days
    );
}

/// `page_hit_retention` and `hit_retention` say what the store was built with.
pub async fn retention_is_what_the_store_was_built_with<S: Store>(
    build: impl AsyncFn(Retention, Retention) -> S,
) {
    let week = Retention(Some(Duration::from_secs(7 * 86_400)));
    let hour = Retention(Some(Duration::from_secs(3600)));
    for (page_hits, hits) in [
        (Retention::FOREVER, Retention::FOREVER),
        (week, Retention::FOREVER),
        (week, hour),
    ] {
        let store = build(page_hits, hits).await;
        assert_eq!(
            (store.page_hit_retention(), store.hit_retention()),
            (page_hits, hits),
            "(page_hit_retention, hit_retention) of a store built with them"
        );
    }
}

/// With a page hit retention of seconds, a retry inside the window is a
/// duplicate, and once the window has passed the same id counts again, while
/// the counter's total and days keep every hit counted.
///
/// The hit is dated 10 days back: on a shared store other gateways audit
/// their last 7 days, and would take a count of today without its expired
/// record for drift and repair it away.
pub async fn page_hit_ids_count_again_past_their_window<S: Store>(
    build: impl AsyncFn(Retention, Retention) -> S,
) {
    let window = Duration::from_secs(2);
    let store = build(Retention(Some(window)), Retention::FOREVER).await;
    assert_eq!(store.page_hit_retention(), Retention(Some(window)));
    let run = Run::new();
    let key = run.key("expiring");
    let day = today().minus(10);
    let hit = page_hit(new_hit_id(), &key, day);
    let once = |what: &'static str| {
        let hit = hit.clone();
        let store = &store;
        async move {
            all_ok(what, store.record_page_hits(vec![hit]).await)
                .pop()
                .expect("one answer")
        }
    };
    let first = once("the first hit").await;
    assert_eq!((first.total, first.duplicate), (1, false), "{first:?}");
    let again = once("the retry").await;
    assert_eq!(
        (again.total, again.duplicate),
        (1, true),
        "a retry inside the window counts once: {again:?}"
    );

    // Past the window, and past a store's sweep after it, the record is gone.
    let started = std::time::Instant::now();
    pause(window).await;
    loop {
        let late = once("the hit past its window").await;
        if !late.duplicate {
            assert_eq!(
                late.total, 2,
                "the same id past its window is a new hit: {late:?}"
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the page hit record outlived its {window:?} window by far (on Aerospike: does the \
             namespace run nsup, nsup-period > 0?)"
        );
        pause(Duration::from_millis(500)).await;
    }
    let stats = store
        .page_stats(&key, DayRange::ending(today(), 11))
        .await
        .expect("page_stats");
    let on_day = stats
        .days
        .iter()
        .find(|d| d.day == day)
        .map_or(0, |d| d.hits);
    assert_eq!(
        (stats.total, on_day),
        (2, 2),
        "the total and the day keep both hits: {stats:?}"
    );
}

/// Counting the hit records gives what the summary says, per server and in
/// `total_hits` (as deltas, on a shared store), and the audit finds no
/// difference for this run's servers.
pub async fn hit_records_add_up_to_the_summary<S: Store>(store: &S) {
    let run = Run::new();
    let (x, y) = (run.server("x"), run.server("y"));
    let (summary_before, records_before) = (summary(store).await, hit_records(store).await);
    let batch = vec![
        tutorial_hit(new_hit_id(), &x),
        tutorial_hit(new_hit_id(), &y),
        tutorial_hit(new_hit_id(), &x),
    ];
    all_ok("the batch", store.record_hits(batch).await);
    let (summary_after, records_after) = (summary(store).await, hit_records(store).await);
    for (what, before, after) in [
        ("summary", &summary_before, &summary_after),
        ("hit records", &records_before, &records_after),
    ] {
        assert_eq!(
            (
                grown(after.total_hits, before.total_hits),
                server_total(after, &x),
                server_total(after, &y)
            ),
            (3, 2, 1),
            "{what}: total_hits grew by the 3 hits, 2 on {x} and 1 on {y}: {after:?}"
        );
    }
    let found = differences(store).await.expect("the audit's differences");
    assert!(
        !found
            .iter()
            .any(|d| d.key == x.as_str() || d.key == y.as_str()),
        "no difference on this run's servers: {found:?}"
    );
}

async fn hit_records<S: Store>(store: &S) -> Summary {
    store
        .count_hit_records()
        .await
        .expect("counting the hit records")
}

/// The operator's recount: a `summary` counter edited by hand (as a dead
/// gateway or an in-doubt update would leave it) is found by
/// [`differences`] and mended by [`apply`].
///
/// On a shared store `total_hits` may already differ from its records; only
/// the difference this check makes is looked for and mended.
pub async fn a_counter_edited_by_hand_is_found_and_mended<S: Store>(store: &S) {
    let run = Run::new();
    let (a, b) = (run.server("a"), run.server("b"));
    let batch = [&a, &a, &b]
        .map(|server| tutorial_hit(new_hit_id(), server))
        .to_vec();
    all_ok("the batch", store.record_hits(batch).await);
    let total_off = |found: &[Difference]| {
        found
            .iter()
            .find(|d| d.key == TOTAL_HITS_KEY)
            .map_or(0, Difference::delta)
    };
    let ours = |found: &[Difference]| -> Vec<(String, u64, u64)> {
        found
            .iter()
            .filter(|d| d.key == a.as_str() || d.key == b.as_str())
            .map(|d| (d.key.clone(), d.counter, d.hit_records))
            .collect()
    };
    let found = differences(store).await.expect("the audit's differences");
    assert_eq!(ours(&found), [], "just counted, nothing differs");
    let off_before = total_off(&found);
    let total = summary(store).await.total_hits;

    assert_eq!(
        store
            .adjust_counter(TOTAL_HITS_KEY, -2)
            .await
            .expect("adjust_counter"),
        total - 2,
        "adjust_counter answers the counter's new value"
    );
    assert_eq!(
        store
            .adjust_counter(b.as_str(), 3)
            .await
            .expect("adjust_counter"),
        4
    );
    let found = differences(store).await.expect("the audit's differences");
    assert_eq!(
        ours(&found),
        [(b.to_string(), 4, 1)],
        "(server, counter, hit records) off: {found:?}"
    );
    assert_eq!(
        total_off(&found),
        off_before + 2,
        "total_hits is 2 short of its records, beside what it was off before: {found:?}"
    );

    let total_now = total - 2;
    let mend: Vec<Difference> = found
        .into_iter()
        .filter(|d| d.key == b.as_str())
        .chain([Difference {
            key: TOTAL_HITS_KEY.to_owned(),
            counter: total_now,
            hit_records: total_now + 2,
        }])
        .collect();
    assert_eq!(
        apply(store, &mend).await.expect("apply"),
        [1, total],
        "apply answers each counter's new value"
    );
    let found = differences(store).await.expect("the audit's differences");
    assert_eq!(ours(&found), [], "mended: {found:?}");
    assert_eq!(total_off(&found), off_before, "mended: {found:?}");
}

/// After page hits, the audit's tallies hold this run's counts beside as many
/// records per counter and day, the day totals grew by as many, and
/// [`compare_pages`] finds them consistent.
pub async fn page_tallies_agree_after_page_hits<S: Store>(store: &S) {
    let run = Run::new();
    let (k1, k2) = (run.key("one"), run.key("two"));
    let d0 = today();
    let d1 = d0.minus(1);
    let before = store.page_tallies(d1).await.expect("page_tallies");
    let first = new_hit_id();
    let batch = vec![
        page_hit(first, &k1, d0),
        page_hit(new_hit_id(), &k1, d0),
        page_hit(new_hit_id(), &k1, d1),
        page_hit(first, &k1, d0),
        page_hit(new_hit_id(), &k2, d0),
    ];
    all_ok("the batch", store.record_page_hits(batch).await);
    let after = store.page_tallies(d1).await.expect("page_tallies");

    let ours = |counts: &HashMap<(PageKey, Day), u64>| -> HashMap<(PageKey, Day), u64> {
        counts
            .iter()
            .filter(|((key, _), _)| run.owns_key(key))
            .map(|(id, n)| (id.clone(), *n))
            .collect()
    };
    let expected = HashMap::from([((k1.clone(), d0), 2), ((k1.clone(), d1), 1), ((k2, d0), 1)]);
    assert_eq!(
        ours(&after.counted),
        expected,
        "counted per counter and day"
    );
    assert_eq!(
        ours(&after.records),
        expected,
        "page hit records per counter and day"
    );

    let grew: BTreeMap<Day, i64> = after
        .day_totals
        .iter()
        .map(|(day, n)| {
            (
                *day,
                grown(*n, before.day_totals.get(day).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, n)| *n != 0)
        .collect();
    assert_eq!(
        grew,
        BTreeMap::from([(d1, 1), (d0, 3)]),
        "the day totals grew by this run's hits"
    );
    let audit = compare_pages(&PageTallies {
        counted: ours(&after.counted),
        records: ours(&after.records),
        day_totals: grew.into_iter().map(|(day, n)| (day, n as u64)).collect(),
        totals_off_days: after.totals_off_days.saturating_sub(before.totals_off_days),
    });
    assert!(audit.consistent, "this run's counters: {audit:?}");
    if compare_pages(&before).consistent {
        let audit = compare_pages(&after);
        assert!(
            audit.consistent,
            "a store that agreed still agrees: {audit:?}"
        );
    }
}

/// The visitor secret: the same day's twice is the same, another day's differs.
pub async fn visitor_salts_are_one_per_day<S: Store>(store: &S) {
    let day = today();
    let (forget_before, tomorrow) = (day.minus(1), day.plus(1));
    let salt = async |day| {
        store
            .visitor_salt(day, forget_before)
            .await
            .unwrap_or_else(|e| panic!("the visitor secret of {day}: {e}"))
    };
    let first = salt(day).await;
    assert_eq!(
        salt(day).await,
        first,
        "the same day's secret twice is the same"
    );
    let next = salt(tomorrow).await;
    assert_ne!(next, first, "another day's secret differs");
    assert_eq!(salt(tomorrow).await, next, "and stays");
    assert_eq!(salt(day).await, first, "making another day's keeps today's");
}

/// A uniform 64-bit visitor hash for `n`, as a keyed hash would be
/// (splitmix64).
fn visitor_hash(seed: u64, n: u64) -> VisitorHash {
    let mut z = seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    VisitorHash(z ^ (z >> 31))
}

/// Today's unique visitors of `key` as the store reads them.
async fn visitors_today<S: Store>(store: &S, key: &PageKey) -> u64 {
    store
        .page_stats(key, DayRange::ending(today(), 1))
        .await
        .unwrap_or_else(|e| panic!("reading {key}: {e}"))
        .today
        .visitors
}

/// `hashes` of `key` today as `batches` batches of `size`, the i-th starting
/// at `i * step` (wrapping): overlapping batches, so every hash arrives in
/// more than one of them.
fn visitor_batches(
    key: &PageKey,
    hashes: &[VisitorHash],
    batches: usize,
    size: usize,
    step: usize,
) -> Vec<Vec<PageHitToCount>> {
    (0..batches)
        .map(|b| {
            (0..size)
                .map(|j| PageHitToCount {
                    visitor: Some(hashes[(b * step + j) % hashes.len()]),
                    ts: millis(now_ms()),
                    ..page_hit(new_hit_id(), key, today())
                })
                .collect()
        })
        .collect()
}

/// Unique visitors on either side of the point where a store moves a
/// counter-day's visitors from an exact form into a HyperLogLog (at 1,365 on
/// Aerospike, 128 on the embedded store): 100 visitors, each in two of 8
/// batches, read as exactly 100; 3,000, each in two of 12 batches of 500,
/// cross the switch on the way and read as the same estimate as the same
/// visitors in one batch (which goes straight into a HyperLogLog), within 2%
/// of 3,000: no hash was lost in the switch. Batches of several gateways
/// landing at once are the store's own test (on Aerospike,
/// `tests/visitors.rs`): one store counts one batch at a time.
pub async fn visitors_are_exact_then_estimated_across_the_switch<S: Store>(store: &S) {
    let run = Run::new();
    let seed = random_u128() as u64;
    let send = async |batches: Vec<Vec<PageHitToCount>>| {
        for batch in batches {
            all_ok("a visitor batch", store.record_page_hits(batch).await);
        }
    };

    let few: Vec<VisitorHash> = (0..100).map(|n| visitor_hash(seed, n)).collect();
    let exact = run.key("visitors-exact");
    send(visitor_batches(&exact, &few, 8, 25, 12)).await;
    assert_eq!(
        visitors_today(store, &exact).await,
        100,
        "below the switch the visitors are counted exactly"
    );

    let many: Vec<VisitorHash> = (0..3_000).map(|n| visitor_hash(seed, 10_000 + n)).collect();
    let crossing = run.key("visitors-crossing");
    send(visitor_batches(&crossing, &many, 12, 500, 250)).await;
    let at_once = run.key("visitors-at-once");
    send(visitor_batches(&at_once, &many, 1, 3_000, 0)).await;
    let (estimate, reference) = (
        visitors_today(store, &crossing).await,
        visitors_today(store, &at_once).await,
    );
    assert_eq!(estimate, reference, "the switch lost no visitor");
    let error = (estimate as f64 - 3_000.0) / 3_000.0;
    assert!(
        error.abs() <= 0.02,
        "3,000 visitors estimated as {estimate} ({:+.2}%)",
        error * 100.0
    );
}
