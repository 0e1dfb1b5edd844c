//! How a group commit numbers the hits it counted: each counted hit gets its
//! own N from one addition per counter, duplicates see the counters after the
//! batch. The same for the tutorial's hits and for page hits, on every store.

use std::collections::HashMap;

use counter_api::{Day, Hit, HitId, PageKey, PageRecorded, Recorded, ServerId, Summary};

use crate::pages::{PageHitToCount, VisitorHash};

/// A hit of either kind, as far as telling retries apart goes: its id.
pub trait HasHitId {
    fn hit_id(&self) -> HitId;
}

impl HasHitId for Hit {
    fn hit_id(&self) -> HitId {
        self.id
    }
}

impl HasHitId for PageHitToCount {
    fn hit_id(&self) -> HitId {
        self.id
    }
}

/// Marks the first occurrence of each hit id in a batch; later ones are duplicates
/// whatever the store says.
pub fn first_occurrences<H: HasHitId>(hits: &[H]) -> Vec<bool> {
    let mut seen = std::collections::HashSet::with_capacity(hits.len());
    hits.iter().map(|hit| seen.insert(hit.hit_id())).collect()
}

/// What a batch adds, per counter and per counter and day.
#[derive(Debug, Default)]
pub struct PageBatchCounts {
    pub per_key: HashMap<PageKey, u64>,
    pub per_key_day: HashMap<(PageKey, Day), u64>,
    pub per_day: HashMap<Day, u64>,
    /// The visitor hashes of the counted hits, per counter and day.
    pub visitors: HashMap<(PageKey, Day), Vec<VisitorHash>>,
}

impl PageBatchCounts {
    pub fn of<'a>(hits: impl IntoIterator<Item = &'a PageHitToCount>, counted: &[bool]) -> Self {
        let mut counts = Self::default();
        for (hit, _) in hits.into_iter().zip(counted).filter(|(_, c)| **c) {
            let day = hit.day();
            *counts.per_key.entry(hit.key.clone()).or_insert(0) += 1;
            *counts
                .per_key_day
                .entry((hit.key.clone(), day))
                .or_insert(0) += 1;
            *counts.per_day.entry(day).or_insert(0) += 1;
            if let Some(visitor) = hit.visitor {
                counts
                    .visitors
                    .entry((hit.key.clone(), day))
                    .or_default()
                    .push(visitor);
            }
        }
        counts
    }
}

/// Gives each page hit of a group commit its own numbers.
///
/// `total_after` and `day_after` are the counters once the whole batch was added
/// (they must hold every key, and every key and day, of the batch). Counted hits
/// on a key are numbered in batch order, so the last one sees `total_after`;
/// duplicates see the counters after the batch.
pub fn number_page_batch(
    hits: &[PageHitToCount],
    counted: &[bool],
    counts: &PageBatchCounts,
    total_after: &HashMap<PageKey, u64>,
    day_after: &HashMap<(PageKey, Day), u64>,
) -> Vec<PageRecorded> {
    let mut total: HashMap<&PageKey, u64> = counts
        .per_key
        .iter()
        .map(|(key, added)| (key, total_after[key] - added))
        .collect();
    let mut today: HashMap<(&PageKey, Day), u64> = counts
        .per_key_day
        .iter()
        .map(|((key, day), added)| ((key, *day), day_after[&(key.clone(), *day)] - added))
        .collect();
    hits.iter()
        .zip(counted)
        .map(|(hit, &counted)| {
            let day = hit.day();
            if counted {
                let total = total
                    .get_mut(&hit.key)
                    .expect("counted keys are in per_key");
                let today = today
                    .get_mut(&(&hit.key, day))
                    .expect("counted days are in per_key_day");
                *total += 1;
                *today += 1;
                PageRecorded {
                    key: hit.key.clone(),
                    total: *total,
                    today: *today,
                    duplicate: false,
                }
            } else {
                PageRecorded {
                    key: hit.key.clone(),
                    total: total_after.get(&hit.key).copied().unwrap_or(0),
                    today: day_after.get(&(hit.key.clone(), day)).copied().unwrap_or(0),
                    duplicate: true,
                }
            }
        })
        .collect()
}

/// Gives each hit of a group commit its own totals.
///
/// `counted[i]` says whether hit `i` was counted; `total_after` and `server_after`
/// are the counters once the whole batch was added. Counted hits are numbered in
/// batch order, so the last counted hit sees `total_after`; duplicates see the
/// totals after the batch.
pub fn number_batch(
    hits: &[Hit],
    counted: &[bool],
    total_after: u64,
    server_after: &HashMap<ServerId, u64>,
) -> Vec<Recorded> {
    let mut total = total_after - counted.iter().filter(|&&c| c).count() as u64;
    let mut running: HashMap<&ServerId, u64> = server_after.iter().map(|(s, n)| (s, *n)).collect();
    for (hit, _) in hits.iter().zip(counted).filter(|(_, c)| **c) {
        *running
            .get_mut(&hit.server)
            .expect("every server of the batch has a total") -= 1;
    }
    hits.iter()
        .zip(counted)
        .map(|(hit, &counted)| {
            if counted {
                total += 1;
                let server = running.get_mut(&hit.server).expect("checked above");
                *server += 1;
                Recorded {
                    total_hits: total,
                    server_hits: *server,
                    duplicate: false,
                }
            } else {
                Recorded {
                    total_hits: total_after,
                    server_hits: server_after[&hit.server],
                    duplicate: true,
                }
            }
        })
        .collect()
}

/// Builds a [`Summary`] from per-server counts; the grand total is their sum.
pub fn summary_from_counts(counts: std::collections::BTreeMap<ServerId, u64>) -> Summary {
    Summary {
        total_hits: counts.values().sum(),
        servers: counts
            .into_iter()
            .map(|(server, total)| counter_api::ServerTotal { server, total })
            .collect(),
    }
}

/// How many hits of the batch each server adds (0 for servers with only duplicates).
pub fn added_per_server(hits: &[Hit], counted: &[bool]) -> HashMap<ServerId, u64> {
    let mut added = HashMap::new();
    for (hit, &counted) in hits.iter().zip(counted) {
        *added.entry(hit.server.clone()).or_insert(0) += u64::from(counted);
    }
    added
}

/// The first occurrences of a batch's ids, in batch order: what a group
/// commit counts.
pub fn first_only<'a, H>(hits: &'a [H], firsts: &[bool]) -> Vec<&'a H> {
    hits.iter()
        .zip(firsts)
        .filter_map(|(hit, &first)| first.then_some(hit))
        .collect()
}

/// Back from the first occurrences to the whole batch: each first
/// occurrence's value in order, `later` for an id seen before in the batch.
pub fn back_to_batch<T>(firsts: &[bool], values: Vec<T>, later: impl Fn() -> T) -> Vec<T> {
    let mut values = values.into_iter();
    firsts
        .iter()
        .map(|&first| {
            if first {
                values.next().expect("a value per first occurrence")
            } else {
                later()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use counter_api::{EpochMillis, HitId};

    use crate::pages::test_hit as hit;

    #[test]
    fn numbering_per_key_and_day() {
        let day1 = 1_764_028_799_000; // 2025-11-24 23:59:59
        let day2 = 1_764_028_800_000; // 2025-11-25 00:00:00
        let hits = [
            hit(1, "a", day1),
            hit(2, "b", day2),
            hit(1, "a", day1),
            hit(3, "a", day2),
            hit(4, "a", day2),
        ];
        let mut counted = first_occurrences(&hits);
        assert_eq!(counted, [true, true, false, true, true]);
        counted[4] = false; // already in the store
        let counts = PageBatchCounts::of(&hits, &counted);
        let a: PageKey = "a".parse().unwrap();
        let b: PageKey = "b".parse().unwrap();
        let (d1, d2) = (hits[0].day(), hits[1].day());
        // Before: a had 10 (3 of them on day 2), b had 0.
        let total_after = HashMap::from([(a.clone(), 12), (b.clone(), 1)]);
        let day_after = HashMap::from([
            ((a.clone(), d1), 8),
            ((a.clone(), d2), 4),
            ((b.clone(), d2), 1),
        ]);
        let view: Vec<(u64, u64, bool)> =
            number_page_batch(&hits, &counted, &counts, &total_after, &day_after)
                .iter()
                .map(|r| (r.total, r.today, r.duplicate))
                .collect();
        assert_eq!(
            view,
            [
                (11, 8, false),
                (1, 1, false),
                (12, 8, true),
                (12, 4, false),
                (12, 4, true)
            ]
        );
    }

    fn server_hit(id: u128, server: &str) -> Hit {
        Hit {
            id: HitId::from_u128(id).unwrap(),
            server: server.parse().unwrap(),
            ts: EpochMillis::new(1_732_000_000_000).unwrap(),
        }
    }

    #[test]
    fn batch_numbering() {
        let hits = [
            server_hit(1, "a"),
            server_hit(2, "b"),
            server_hit(1, "a"),
            server_hit(3, "a"),
            server_hit(4, "b"),
        ];
        let mut counted = first_occurrences(&hits);
        assert_eq!(counted, [true, true, false, true, true]);
        counted[4] = false; // already in the store
        let added = added_per_server(&hits, &counted);
        assert_eq!(added[&"a".parse().unwrap()], 2);
        assert_eq!(added[&"b".parse().unwrap()], 1);

        // Before the batch: total 10, a had 4, b had 6.
        let after: HashMap<ServerId, u64> =
            [("a".parse().unwrap(), 6), ("b".parse().unwrap(), 7)].into();
        let recorded = number_batch(&hits, &counted, 13, &after);
        let view: Vec<(u64, u64, bool)> = recorded
            .iter()
            .map(|r| (r.total_hits, r.server_hits, r.duplicate))
            .collect();
        assert_eq!(
            view,
            [
                (11, 5, false),
                (12, 7, false),
                (13, 6, true),
                (13, 6, false),
                (13, 7, true)
            ]
        );
    }
}
