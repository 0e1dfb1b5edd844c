//! Unique visitors on Aerospike as records hold them, on the cluster named by
//! `AEROSPIKE_HOSTS` (shown as ignored without it): a counter-day written in
//! the layout from before the exact list, a dense HyperLogLog with bins `page`
//! and `day`, keeps reading right and keeps its HyperLogLog; several gateways'
//! batches landing at once across the switch from the list to the
//! HyperLogLog lose no visitor.

use std::time::Duration;

use aerospike::operations::hll::{self, HllPolicy};
use aerospike::{Bin, Bins, Client, ClientPolicy, Key, ReadPolicy, Value, WritePolicy, operations};
use counter_api::{Day, EpochMillis, PageKey};
use counter_store::pages::{DayRange, PageHitToCount, VisitorHash};
use counter_store::{Counts, Events, Reads, Store};
use store_aerospike::AerospikeStore;

fn hosts() -> String {
    std::env::var("AEROSPIKE_HOSTS")
        .expect("AEROSPIKE_HOSTS, which was set when the tests were built")
}

fn now() -> EpochMillis {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    EpochMillis::new(ms as i128).unwrap()
}

/// A uniform 64-bit hash for `n` (splitmix64), as a keyed visitor hash is.
fn hash(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

async fn hll_count(client: &Client, record: &Key) -> u64 {
    let answer = client
        .operate(
            &WritePolicy::default(),
            record,
            &[hll::get_count("visitors")],
        )
        .await
        .expect("reading the HyperLogLog's count");
    match answer.bins.get("visitors") {
        Some(Value::Int(n)) => *n as u64,
        other => panic!("no count: {other:?}"),
    }
}

/// A store of its own: a gateway of its own, which counts one batch at a
/// time.
async fn gateway() -> AerospikeStore {
    let seeds: Vec<String> = hosts().split(',').map(|h| h.trim().to_owned()).collect();
    let store =
        AerospikeStore::connect(&seeds, "test", Duration::from_millis(2500), Events::none())
            .expect("a list of host:port");
    while store.check_ready().await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store
}

fn hits(key: &PageKey, hashes: impl Iterator<Item = u64>) -> Vec<PageHitToCount> {
    hashes
        .map(|h| PageHitToCount {
            id: counter_store::contract::new_hit_id(),
            key: key.clone(),
            ts: now(),
            visitor: Some(VisitorHash(h)),
        })
        .collect()
}

async fn visitors_today(store: &AerospikeStore, key: &PageKey) -> u64 {
    store
        .page_stats(key, DayRange::ending(Day::of(now()), 1))
        .await
        .expect("reading the counter")
        .today
        .visitors
}

/// Four gateways send a counter's visitors at once, each three batches of
/// 500 that overlap the others', 3,000 visitors in all: the list fills,
/// every gateway's batch that no longer fits races to the switch, and the
/// losers' hashes go into the winner's HyperLogLog. The count equals that of
/// the same 3,000 sent in one batch, and a counter kept under the switch the
/// same way (1,000 visitors) counts exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(aerospike),
    ignore = "AEROSPIKE_HOSTS is not set, so there is no Aerospike cluster to run against"
)]
async fn gateways_crossing_the_switch_at_once_lose_no_visitor() {
    let gateways = [
        gateway().await,
        gateway().await,
        gateway().await,
        gateway().await,
    ];
    let seed = std::process::id() as u64 ^ now().as_u64() ^ 0x5eed;
    let run = format!("visitors-{:08x}", seed as u32);
    for (total, name) in [(1_000_u64, "under"), (3_000, "across")] {
        let key: PageKey = format!("{run}/{name}").parse().unwrap();
        let share = total / 4;
        let sends = gateways.iter().enumerate().map(|(g, store)| {
            let key = key.clone();
            async move {
                for b in 0..3_u64 {
                    // Gateway g's batch b: a stretch of 2 shares, starting
                    // where the others' leave off, so each hash comes twice.
                    let start = g as u64 * share + b * share * 2 / 3;
                    let batch = hits(
                        &key,
                        (start..start + share * 2 / 3 + 1).map(|n| hash(seed, n % total)),
                    );
                    for answer in store.record_page_hits(batch).await {
                        answer.expect("a page hit");
                    }
                }
            }
        });
        futures::future::join_all(sends).await;
        let counted = visitors_today(&gateways[0], &key).await;
        let reference: PageKey = format!("{run}/{name}-in-one-batch").parse().unwrap();
        let batch = hits(&reference, (0..total).map(|n| hash(seed, n)));
        for answer in gateways[0].record_page_hits(batch).await {
            answer.expect("a page hit");
        }
        let expected = visitors_today(&gateways[0], &reference).await;
        println!(
            "{total} visitors from 4 gateways at once counted as {counted}, in one batch as {expected}"
        );
        if total <= 1_365 {
            assert_eq!(
                (counted, expected),
                (total, total),
                "exact under the switch"
            );
        } else {
            assert_eq!(counted, expected, "no visitor lost across the switch");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(aerospike),
    ignore = "AEROSPIKE_HOSTS is not set, so there is no Aerospike cluster to run against"
)]
async fn a_counter_day_in_the_old_layout_keeps_its_hyperloglog_and_reads_right() {
    let client = Client::new(&ClientPolicy::default(), &hosts())
        .await
        .expect("connecting to Aerospike");
    let seeds: Vec<String> = hosts().split(',').map(|h| h.trim().to_owned()).collect();
    let store =
        AerospikeStore::connect(&seeds, "test", Duration::from_millis(2500), Events::none())
            .expect("a list of host:port");
    while store.check_ready().await.is_err() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seed = std::process::id() as u64 ^ now().as_u64();
    let key: PageKey = format!("visitors-{:08x}/old-layout", seed as u32)
        .parse()
        .unwrap();
    let ts = now();
    let day = Day::of(ts);
    let record = Key::new("test", "page_visitors", Value::from(format!("{key}@{day}"))).unwrap();

    // As the gateway wrote a counter-day before the list: 50 visitors.
    let policy = WritePolicy {
        send_key: true,
        ..WritePolicy::default()
    };
    let old: Vec<Value> = (0..50).map(|n| Value::Int(hash(seed, n) as i64)).collect();
    client
        .operate(
            &policy,
            &record,
            &[
                operations::put(&Bin::new("page", Value::from(key.as_str().to_owned()))),
                operations::put(&Bin::new("day", Value::from(day.to_string()))),
                hll::add_with_index_and_min_hash(&HllPolicy::default(), "visitors", old, 14, 0),
            ],
        )
        .await
        .expect("writing a counter-day in the old layout");
    let visitors = async || {
        store
            .page_stats(&key, DayRange::ending(day, 1))
            .await
            .expect("reading the counter")
            .today
            .visitors
    };
    assert_eq!(visitors().await, hll_count(&client, &record).await);

    // 10 known visitors and 5 new ones through the store.
    let hits: Vec<PageHitToCount> = (40..55)
        .map(|n| PageHitToCount {
            id: counter_store::contract::new_hit_id(),
            key: key.clone(),
            ts,
            visitor: Some(VisitorHash(hash(seed, n))),
        })
        .collect();
    for answer in store.record_page_hits(hits).await {
        answer.expect("a page hit");
    }
    let stored = client
        .get(&ReadPolicy::default(), &record, Bins::All)
        .await
        .expect("reading the record");
    let mut bins: Vec<&str> = stored.bins.keys().map(String::as_str).collect();
    bins.sort_unstable();
    assert_eq!(
        bins,
        ["day", "page", "visitors"],
        "still the HyperLogLog, no list"
    );
    let count = hll_count(&client, &record).await;
    assert_eq!(visitors().await, count, "read as the HyperLogLog counts");
    assert!((53..=57).contains(&count), "55 visitors counted as {count}");
    let _ = client.delete(&WritePolicy::default(), &record).await;
}
