//! How long one side of a route took, as a histogram cheap enough to record on every request:
//! a fixed array of atomic counters, one `fetch_add` per request, no lock and no allocation.
//!
//! Buckets are logarithmic, 16 per doubling of the time (each at most 6.25 % wide), from 1 ns
//! to 2^40 ns (about 18 minutes); nanoseconds below 16 are exact. A rollout takes a
//! [`Snapshot`] when a step begins and judges the step on the difference, so nothing is reset
//! under the requests still recording. A p99 read from it is the upper edge of its bucket: at
//! most 6.25 % above the true value, never below it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
const MAX_EXP: u32 = 40;
const BUCKETS: usize = SUB + (MAX_EXP as usize - SUB_BITS as usize + 1) * SUB;

pub(crate) struct Latencies {
    buckets: Box<[AtomicU64; BUCKETS]>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            buckets: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

impl std::fmt::Debug for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latencies")
            .field("total", &self.snapshot().total())
            .finish()
    }
}

fn bucket_of(nanos: u64) -> usize {
    let v = nanos.min((1 << (MAX_EXP + 1)) - 1);
    if v < SUB as u64 {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros();
    SUB + (exp - SUB_BITS) as usize * SUB + ((v >> (exp - SUB_BITS)) as usize & (SUB - 1))
}

/// The smallest value (ns) of bucket `i`, and one past its largest.
fn bounds(i: usize) -> (u64, u64) {
    if i < SUB {
        return (i as u64, i as u64 + 1);
    }
    let exp = (i - SUB) / SUB + SUB_BITS as usize;
    let sub = ((i - SUB) % SUB) as u64;
    let width = 1u64 << (exp - SUB_BITS as usize);
    let low = (1u64 << exp) + sub * width;
    (low, low + width)
}

impl Latencies {
    pub(crate) fn record(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// The counts at one moment; the difference of two is what happened between them. Kept (in
/// the state directory, in Redis) as the non-empty buckets only: `[[bucket, count], ...]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "Sparse", try_from = "Sparse")]
pub(crate) struct Snapshot {
    counts: Vec<u64>,
}

/// A snapshot's non-empty buckets.
#[derive(serde::Serialize, serde::Deserialize)]
struct Sparse(Vec<(usize, u64)>);

impl From<Snapshot> for Sparse {
    fn from(s: Snapshot) -> Sparse {
        Sparse(
            s.counts
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| (i, *n))
                .collect(),
        )
    }
}

impl TryFrom<Sparse> for Snapshot {
    type Error = String;
    fn try_from(s: Sparse) -> Result<Snapshot, String> {
        let mut counts = vec![0; BUCKETS];
        for (i, n) in s.0 {
            *counts
                .get_mut(i)
                .ok_or_else(|| format!("latency bucket {i} out of range"))? = n;
        }
        Ok(Snapshot { counts })
    }
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
        }
    }
}

impl Snapshot {
    /// What was recorded after `earlier` was taken.
    pub(crate) fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
        }
    }

    /// The two together (the same side as seen by two proxies).
    pub(crate) fn plus(&self, other: &Snapshot) -> Snapshot {
        Snapshot {
            counts: self
                .counts
                .iter()
                .zip(&other.counts)
                .map(|(a, b)| a.saturating_add(*b))
                .collect(),
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0 < q <= 1) as the upper edge of its bucket; `None` when empty.
    pub(crate) fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_nanos(bounds(i).1));
            }
        }
        None
    }

    /// Requests that certainly took longer than `bound`: those in buckets wholly above it.
    pub(crate) fn slower_than(&self, bound: Duration) -> u64 {
        let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
        let i = bucket_of(nanos);
        self.counts[i + 1..].iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order_and_are_narrow() {
        let mut last = 0;
        for i in 0..BUCKETS {
            let (low, high) = bounds(i);
            assert_eq!(low, last, "bucket {i} starts where {} ended", i.max(1) - 1);
            assert_eq!(bucket_of(low), i);
            assert_eq!(bucket_of(high - 1), i);
            if low >= SUB as u64 {
                assert!((high - low) as f64 / low as f64 <= 0.0625 + 1e-12);
            }
            last = high;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_are_within_a_bucket_above_the_truth() {
        let l = Latencies::default();
        for ms in 1..=1000 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.snapshot();
        assert_eq!(s.total(), 1000);
        let p99 = s.quantile(0.99).unwrap().as_secs_f64() * 1000.0;
        assert!((990.0..=990.0 * 1.0625).contains(&p99), "{p99}");
        let p50 = s.quantile(0.5).unwrap().as_secs_f64() * 1000.0;
        assert!((500.0..=500.0 * 1.0625).contains(&p50), "{p50}");
        assert_eq!(Snapshot::default().quantile(0.99), None);
    }

    #[test]
    fn a_step_is_judged_on_what_came_after_its_start() {
        let l = Latencies::default();
        for _ in 0..100 {
            l.record(Duration::from_millis(1));
        }
        let start = l.snapshot();
        for _ in 0..10 {
            l.record(Duration::from_millis(50));
        }
        let step = l.snapshot().since(&start);
        assert_eq!(step.total(), 10);
        assert_eq!(step.slower_than(Duration::from_millis(10)), 10);
        assert_eq!(step.slower_than(Duration::from_millis(60)), 0);
        // The bucket holding the bound itself is not counted: only what is surely slower.
        assert_eq!(step.slower_than(Duration::from_millis(50)), 0);
    }
}
