//! The contract suite (`counter_store::contract`) on the embedded store: each
//! check on a fresh store in a temp dir of its own.

use counter_store::contract;
use counter_store::{Events, Retention};
use store_embedded::EmbeddedStore;

/// A fresh store; the temp dir lives as long as the test holds it.
fn fresh() -> (tempfile::TempDir, EmbeddedStore) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = EmbeddedStore::open(dir.path(), Events::none()).expect("opening the store");
    (dir, store)
}

/// Builds stores for the checks that need a given retention, each in a
/// directory of its own under `dir`.
fn builder(dir: &tempfile::TempDir) -> impl AsyncFn(Retention, Retention) -> EmbeddedStore + '_ {
    let made = std::sync::atomic::AtomicUsize::new(0);
    async move |page_hits, hits| {
        let n = made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        EmbeddedStore::open(&dir.path().join(n.to_string()), Events::none())
            .expect("opening the store")
            .retaining(page_hits, hits)
    }
}

macro_rules! on_a_fresh_store {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let (_dir, store) = fresh();
            contract::$check(&store).await;
        }
    )*};
}

on_a_fresh_store!(
    tutorial_hits_are_numbered_once,
    page_hits_are_numbered_per_key_and_day,
    pages_overview_has_exact_tops_and_day_totals,
    hit_records_add_up_to_the_summary,
    a_counter_edited_by_hand_is_found_and_mended,
    page_tallies_agree_after_page_hits,
    visitor_salts_are_one_per_day,
    visitors_are_exact_then_estimated_across_the_switch,
);

macro_rules! with_a_builder {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let dir = tempfile::tempdir().expect("a temp dir");
            contract::$check(builder(&dir)).await;
        }
    )*};
}

// The embedded store sweeps expired records itself: both run.
with_a_builder!(
    retention_is_what_the_store_was_built_with,
    page_hit_ids_count_again_past_their_window,
);
