//! The maintained top lists of the named counters: what a store keeps so that
//! the overview reads a few hundred rows however many counters there are.

use std::collections::HashMap;

use counter_api::PageKey;

/// How many counters each maintained top list keeps (the day's and the all-time
/// one): the longest list an overview shows.
pub const TOP_KEPT: usize = 100;

/// Whether `(key, hits)` goes before `(other_key, other_hits)` in a top list:
/// more hits first, ties by key.
pub fn ranks_before(hits: u64, key: &str, other_hits: u64, other_key: &str) -> bool {
    hits > other_hits || (hits == other_hits && key < other_key)
}

/// A maintained top list: the [`TOP_KEPT`] counters with the most hits (ties by
/// key), each with its exact count.
///
/// It stays exact however many counters there are because counts only grow: a
/// counter outside the list can only enter it when it gets a hit, and then it is
/// offered with its exact new count; one that drops out had at least
/// `TOP_KEPT` others ahead of it, which stay ahead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopList {
    entries: HashMap<PageKey, u64>,
}

impl TopList {
    pub fn from_entries(entries: impl IntoIterator<Item = (PageKey, u64)>) -> Self {
        let mut list = Self::default();
        for (key, hits) in entries {
            list.offer(&key, hits);
        }
        list
    }

    /// Offers a counter with its count now; answers whether the list changed.
    /// A count lower than the one listed (an older read) changes nothing.
    pub fn offer(&mut self, key: &PageKey, hits: u64) -> bool {
        if hits == 0 {
            return false;
        }
        if let Some(listed) = self.entries.get_mut(key) {
            if hits <= *listed {
                return false;
            }
            *listed = hits;
            return true;
        }
        if self.entries.len() >= TOP_KEPT {
            let (last_key, last_hits) = self.last().expect("a full list has a last entry");
            if !ranks_before(hits, key.as_str(), last_hits, last_key.as_str()) {
                return false;
            }
            let last_key = last_key.clone();
            self.entries.remove(&last_key);
        }
        self.entries.insert(key.clone(), hits);
        true
    }

    /// The entry a newcomer must beat, once the list is full.
    fn last(&self) -> Option<(&PageKey, u64)> {
        self.entries
            .iter()
            .map(|(key, hits)| (key, *hits))
            .reduce(|a, b| {
                if ranks_before(a.1, a.0.as_str(), b.1, b.0.as_str()) {
                    b
                } else {
                    a
                }
            })
    }

    pub fn get(&self, key: &PageKey) -> Option<u64> {
        self.entries.get(key).copied()
    }

    /// The first `limit` entries, in order.
    pub fn top(&self, limit: usize) -> Vec<(PageKey, u64)> {
        top(self.entries.iter().map(|(k, n)| (k.clone(), *n)), limit)
    }
}

/// The `limit` largest `(key, hits)` pairs, largest first, ties by key.
pub fn top(entries: impl IntoIterator<Item = (PageKey, u64)>, limit: usize) -> Vec<(PageKey, u64)> {
    let mut heap = std::collections::BinaryHeap::with_capacity(limit + 1);
    for (key, hits) in entries {
        if hits == 0 {
            continue;
        }
        heap.push(std::cmp::Reverse((hits, std::cmp::Reverse(key))));
        if heap.len() > limit {
            heap.pop();
        }
    }
    let mut top: Vec<(PageKey, u64)> = heap
        .into_iter()
        .map(|std::cmp::Reverse((hits, std::cmp::Reverse(key)))| (key, hits))
        .collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_top_list_stays_exact_as_counts_grow() {
        let key = |i: u32| -> PageKey { format!("k{i:06}").parse().unwrap() };
        // Every count of every counter is offered as it grows, in any order of
        // counters: the list matches the top of the final counts.
        let mut counts: HashMap<PageKey, u64> = HashMap::new();
        let mut list = TopList::default();
        let mut seed = 7_u64;
        for _ in 0..50_000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            // A few hot counters, many cold ones.
            let i = if seed >> 60 < 4 {
                (seed >> 33) % 20
            } else {
                (seed >> 33) % 5_000
            };
            let k = key(i as u32);
            let n = counts.entry(k.clone()).or_insert(0);
            *n += 1;
            list.offer(&k, *n);
            // An older, lower read of the same counter changes nothing.
            assert!(!list.offer(&k, *n - 1));
        }
        assert_eq!(list.top(TOP_KEPT), top(counts, TOP_KEPT));
    }

    #[test]
    fn top_keeps_the_largest() {
        let entries = [("a", 5), ("b", 9), ("c", 5), ("d", 1), ("e", 0)]
            .map(|(k, n)| (k.parse().unwrap(), n));
        let top: Vec<(String, u64)> = top(entries, 3)
            .into_iter()
            .map(|(k, n)| (k.to_string(), n))
            .collect();
        assert_eq!(top, [("b".into(), 9), ("a".into(), 5), ("c".into(), 5)]);
    }
}
