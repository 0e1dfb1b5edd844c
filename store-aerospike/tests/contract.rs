//! The contract suite (`counter_store::contract`) on the Aerospike cluster
//! named by `AEROSPIKE_HOSTS` (comma-separated host:port, namespace `test`).
//! Without it, at build time, the tests show as ignored with the reason.
//!
//! The cluster is shared and keeps data: the checks count on keys and servers
//! of their own and compare deltas, and take turns ([`TURN`]) so that one
//! check's hits never land in another's deltas.

use std::time::Duration;

use counter_store::contract;
use counter_store::{Events, Retention, Store};
use store_aerospike::AerospikeStore;

const NAMESPACE: &str = "test";
/// The gateway's default `STORE_TIMEOUT_MS`.
const TIMEOUT: Duration = Duration::from_millis(2500);
/// The gateway's default `PAGE_HIT_RETENTION`: what the other gateways on a
/// shared cluster write, so the checks leave no records kept forever.
const PAGE_HIT_RETENTION: Retention = Retention(Some(Duration::from_secs(7 * 86_400)));

/// One check at a time on the shared cluster.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A store on the cluster, once it is ready to serve.
async fn connect(page_hits: Retention, hits: Retention) -> AerospikeStore {
    let hosts = std::env::var("AEROSPIKE_HOSTS")
        .expect("AEROSPIKE_HOSTS, which was set when the tests were built");
    let seeds: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect();
    let store = AerospikeStore::connect(&seeds, NAMESPACE, TIMEOUT, Events::none())
        .expect("a list of host:port")
        .retaining(page_hits, hits);
    let started = std::time::Instant::now();
    loop {
        match store.check_ready().await {
            Ok(()) => return store,
            Err(error) if started.elapsed() > Duration::from_secs(15) => {
                panic!("the Aerospike cluster at {hosts} is not ready after 15 s: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

macro_rules! on_the_cluster {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[cfg_attr(
            not(aerospike),
            ignore = "AEROSPIKE_HOSTS is not set, so there is no Aerospike cluster to run against"
        )]
        async fn $check() {
            let _turn = TURN.lock().await;
            let store = connect(PAGE_HIT_RETENTION, Retention::FOREVER).await;
            contract::$check(&store).await;
        }
    )*};
}

macro_rules! with_a_builder {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[cfg_attr(
            not(aerospike),
            ignore = "AEROSPIKE_HOSTS is not set, so there is no Aerospike cluster to run against"
        )]
        async fn $check() {
            let _turn = TURN.lock().await;
            contract::$check(connect).await;
        }
    )*};
}

on_the_cluster!(
    tutorial_hits_are_numbered_once,
    page_hits_are_numbered_per_key_and_day,
    pages_overview_has_exact_tops_and_day_totals,
    hit_records_add_up_to_the_summary,
    a_counter_edited_by_hand_is_found_and_mended,
    page_tallies_agree_after_page_hits,
    visitor_salts_are_one_per_day,
    visitors_are_exact_then_estimated_across_the_switch,
);

// Page hit records expire by their TTL, which the namespace takes because it
// runs nsup (deploy/aerospike/aerospike.conf), as the e2e suite relies on.
with_a_builder!(
    retention_is_what_the_store_was_built_with,
    page_hit_ids_count_again_past_their_window,
);
