//! The badge rows: hits on many named counters at once, the way badges in many
//! READMEs hit one deployment, and the check that each counter counted exactly
//! the hits its badges acknowledged.
//!
//! Popularity follows a Zipf law (a few keys take most hits, a long tail takes
//! one now and then), so the rows exercise both contention on hot keys and the
//! store's handling of many cold ones.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, ensure};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};

use crate::load::{Sender, connect};

/// Reads in flight at once while checking the stored totals: enough to finish
/// thousands of keys in a moment, few enough not to look like a second benchmark.
const CHECK_READERS: usize = 16;

/// The keys of one benchmark run and how popular each is.
#[derive(Debug)]
pub struct BadgeKeys {
    /// `bench-<run id>/page`, unique to the run, so runs on a shared Aerospike
    /// never count on each other's keys.
    prefix: String,
    /// `cdf[i]`: the chance that a hit lands on rank `i + 1` or a more popular one.
    cdf: Vec<f64>,
}

impl BadgeKeys {
    /// `count` keys whose rank `k` is hit with a weight of `k^-exponent`.
    pub fn new(count: u32, exponent: f64) -> BadgeKeys {
        assert!(count > 0, "at least one badge key");
        // v7: on a shared cluster, a run's keys sort by when it ran.
        let run = uuid::Uuid::now_v7().simple();
        let weights: Vec<f64> = (1..=count).map(|k| f64::from(k).powf(-exponent)).collect();
        let sum: f64 = weights.iter().sum();
        let cdf = weights
            .iter()
            .scan(0.0, |acc, w| {
                *acc += w / sum;
                Some(*acc)
            })
            .collect();
        BadgeKeys {
            prefix: format!("bench-{run}/page"),
            cdf,
        }
    }

    pub fn count(&self) -> usize {
        self.cdf.len()
    }

    /// The counter key of a rank (1 is the most popular).
    pub fn key(&self, rank: u32) -> String {
        format!("{}/{rank}", self.prefix)
    }

    /// A rank drawn from the Zipf law.
    pub fn pick(&self) -> u32 {
        self.rank_at(fastrand::f64())
    }

    /// The rank at `u` in `[0, 1)` of the cumulative distribution (inverse-CDF
    /// sampling). Rounding may leave the last entry a hair under 1: a `u` past
    /// it belongs to the last rank.
    fn rank_at(&self, u: f64) -> u32 {
        let index = self
            .cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1);
        index as u32 + 1
    }
}

/// The exact count a badge's `<title>` carries: `hits: 12,345`, or `12,345` with
/// an empty label, so its last word with the thousands separators dropped.
pub fn count_in_title(svg: &str) -> Option<u64> {
    let start = svg.find("<title>")? + "<title>".len();
    let end = start + svg[start..].find("</title>")?;
    let word = svg[start..end].rsplit(' ').next()?;
    if word.is_empty() || !word.bytes().all(|b| b.is_ascii_digit() || b == b',') {
        return None;
    }
    word.replace(',', "").parse().ok()
}

/// The counts acknowledged badge hits showed, by key rank.
#[derive(Debug, Default)]
pub struct BadgeTally(BTreeMap<u32, Vec<u64>>);

impl BadgeTally {
    pub fn add(&mut self, counts: &[(u32, u64)]) {
        for &(rank, n) in counts {
            self.0.entry(rank).or_default().push(n);
        }
    }

    pub fn hits(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }
}

/// What the store says about the keys the badges hit.
pub struct BadgeCheck {
    pub keys_touched: usize,
    pub hits: usize,
    /// The share of all hits the most popular key took: shows the Zipf law held.
    pub top_share: f64,
    /// One line per key whose counts or total are wrong.
    pub problems: Vec<String>,
}

/// Reads every touched key's total from the gateway and compares it with the
/// acknowledged hits: per key, the counts shown must be distinct, and the stored
/// total must equal their number. The load waits for every answer before it
/// stops, so no hit is in flight when this runs; a request that failed after its
/// hit was counted shows up here as a total above the acknowledged hits.
pub async fn check(
    gateway_authority: &str,
    keys: &Arc<BadgeKeys>,
    tally: &BadgeTally,
) -> anyhow::Result<BadgeCheck> {
    let stored = stored_totals(gateway_authority, keys, tally.0.keys().copied().collect()).await?;
    let mut problems = Vec::new();
    for (rank, counts) in &tally.0 {
        let total = stored.get(rank).copied().unwrap_or(0);
        if let Some(problem) = judge_key(counts, total) {
            problems.push(format!("{}: {problem}", keys.key(*rank)));
        }
    }
    let hits = tally.hits();
    let top = tally.0.values().map(Vec::len).max().unwrap_or(0);
    Ok(BadgeCheck {
        keys_touched: tally.0.len(),
        hits,
        top_share: top as f64 / hits.max(1) as f64,
        problems,
    })
}

/// What is wrong with one key, if anything.
fn judge_key(counts: &[u64], total: u64) -> Option<String> {
    let mut sorted = counts.to_vec();
    sorted.sort_unstable();
    if let Some(pair) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Some(format!("count {} was shown twice", pair[0]));
    }
    if sorted.len() as u64 != total {
        return Some(format!(
            "stored total {total}, but {} hits were acknowledged",
            sorted.len()
        ));
    }
    None
}

/// The stored total of each rank, read by [`CHECK_READERS`] keep-alive
/// connections taking the next rank in turn.
async fn stored_totals(
    authority: &str,
    keys: &Arc<BadgeKeys>,
    ranks: Vec<u32>,
) -> anyhow::Result<BTreeMap<u32, u64>> {
    let ranks: Arc<[u32]> = ranks.into();
    let next = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..CHECK_READERS.min(ranks.len()))
        .map(|_| {
            tokio::spawn(read_totals(
                authority.to_owned(),
                keys.clone(),
                ranks.clone(),
                next.clone(),
            ))
        })
        .collect();
    let mut totals = BTreeMap::new();
    for reader in readers {
        totals.extend(reader.await.context("badge total reader")??);
    }
    Ok(totals)
}

async fn read_totals(
    authority: String,
    keys: Arc<BadgeKeys>,
    ranks: Arc<[u32]>,
    next: Arc<AtomicUsize>,
) -> anyhow::Result<Vec<(u32, u64)>> {
    let mut sender = connect(&authority).await?;
    let mut totals = Vec::new();
    while let Some(&rank) = ranks.get(next.fetch_add(1, Ordering::Relaxed)) {
        let total = read_total(&mut sender, &authority, &keys.key(rank)).await?;
        totals.push((rank, total));
    }
    Ok(totals)
}

/// `GET /v1/pages/<key>?days=1` on the gateway: the key's total, without counting.
async fn read_total(sender: &mut Sender, authority: &str, key: &str) -> anyhow::Result<u64> {
    sender.ready().await?;
    let request = Request::builder()
        .method(Method::GET)
        .uri(format!("{}/{key}?days=1", counter_api::paths::PAGES))
        .header("host", authority)
        .body(Full::new(Bytes::new()))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    ensure!(
        status == 200,
        "reading {key}: {status}: {}",
        String::from_utf8_lossy(&body)
    );
    let stats: counter_api::PageStats =
        serde_json::from_slice(&body).with_context(|| format!("reading {key}"))?;
    Ok(stats.total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_count_with_and_without_label() {
        let svg =
            r#"<svg role="img" aria-label="hits: 12,345"><title>hits: 12,345</title><g/></svg>"#;
        assert_eq!(count_in_title(svg), Some(12_345));
        assert_eq!(count_in_title("<svg><title>7</title></svg>"), Some(7));
        assert_eq!(
            count_in_title("<svg><title>page views: 1,234,567</title></svg>"),
            Some(1_234_567)
        );
        for bad in [
            "<svg><title>hits: 1.2k</title></svg>",
            "<svg><title>hits: </title></svg>",
            "<svg><title>hits: 12</svg>",
            "<svg>hits: 12</svg>",
        ] {
            assert_eq!(count_in_title(bad), None, "{bad}");
        }
    }

    #[test]
    fn zipf_ranks_follow_the_law() {
        let keys = BadgeKeys::new(10_000, 1.0);
        // Rank 1's share is 1 / H(10000) ≈ 0.1021.
        assert!((keys.cdf[0] - 0.1021).abs() < 0.001, "{}", keys.cdf[0]);
        assert_eq!(keys.rank_at(0.0), 1);
        assert_eq!(keys.rank_at(0.1), 1);
        assert_eq!(keys.rank_at(0.11), 2);
        assert_eq!(keys.rank_at(1.0), 10_000);
        assert!((1..=10_000).contains(&keys.pick()));
        // Exponent 0: every key equally likely.
        let even = BadgeKeys::new(4, 0.0);
        let ranks: Vec<u32> = [0.0, 0.26, 0.51, 0.76].map(|u| even.rank_at(u)).to_vec();
        assert_eq!(ranks, [1, 2, 3, 4]);
    }

    #[test]
    fn keys_are_valid_counter_keys() {
        let keys = BadgeKeys::new(3, 1.0);
        let key: counter_api::PageKey = keys.key(3).parse().expect("a valid key");
        assert!(key.as_str().starts_with("bench-") && key.as_str().ends_with("/page/3"));
    }

    #[test]
    fn a_key_is_judged_by_distinct_counts_and_total() {
        assert_eq!(judge_key(&[2, 1, 3], 3), None);
        assert!(judge_key(&[1, 2, 2], 3).unwrap().contains("twice"));
        assert!(judge_key(&[1, 2], 3).unwrap().contains("stored total 3"));
    }
}
