//! A retry budget per upstream, in the manner of Linkerd's: retries (second attempts on the
//! same upstream) may add at most 20 % to an upstream's requests, plus 10 a second, so a pool
//! that fails every request is not hit again with a retry for each one.
//!
//! A token bucket in thousandths: every first attempt deposits 0.2 tokens, the clock adds 10 a
//! second, a retry takes 1, and the bucket holds at most 100 (a burst of 100 retries, then the
//! steady rate). Depositing into a full bucket is one atomic load, so a healthy upstream's
//! requests pay nothing more. The budget belongs to a table version's pool: a reload starts it
//! full again.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

const TOKEN: i64 = 1000;
/// What a first attempt adds: 20 % of a retry.
const DEPOSIT: i64 = TOKEN / 5;
/// What a second adds, whatever the traffic.
const PER_SECOND: i64 = 10 * TOKEN;
/// The most the bucket holds.
const CAP: i64 = 100 * TOKEN;

#[derive(Debug)]
pub(crate) struct RetryBudget {
    tokens: AtomicI64,
    /// Milliseconds since `epoch` up to which the clock's share was added.
    refilled_ms: AtomicU64,
    epoch: Instant,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            tokens: AtomicI64::new(CAP),
            refilled_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl RetryBudget {
    /// One first attempt was sent.
    pub(crate) fn deposit(&self) {
        if self.tokens.load(Ordering::Relaxed) < CAP {
            let after = self.tokens.fetch_add(DEPOSIT, Ordering::Relaxed) + DEPOSIT;
            if after > CAP {
                self.tokens.fetch_min(CAP, Ordering::Relaxed);
            }
        }
    }

    /// Takes one retry from the budget; false when it is spent.
    pub(crate) fn withdraw(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.refilled_ms.load(Ordering::Relaxed);
        if now > last
            && self
                .refilled_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let add = (now - last) as i64 * PER_SECOND / 1000;
            let after = self.tokens.fetch_add(add, Ordering::Relaxed) + add;
            if after > CAP {
                self.tokens.fetch_min(CAP, Ordering::Relaxed);
            }
        }
        if self.tokens.fetch_sub(TOKEN, Ordering::Relaxed) >= TOKEN {
            true
        } else {
            self.tokens.fetch_add(TOKEN, Ordering::Relaxed);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_a_fifth_of_the_requests() {
        let b = RetryBudget::default();
        let burst = (0..1000).take_while(|_| b.withdraw()).count();
        // The clock may add one or two while the loop runs.
        assert!((100..=102).contains(&burst), "{burst}");
        for _ in 0..50 {
            b.deposit();
        }
        let more = (0..100).take_while(|_| b.withdraw()).count();
        assert!(
            (10..=12).contains(&more),
            "50 requests earn 10 retries: {more}"
        );
    }

    #[test]
    fn a_full_bucket_stays_at_its_cap() {
        let b = RetryBudget::default();
        for _ in 0..10_000 {
            b.deposit();
        }
        assert_eq!(b.tokens.load(Ordering::Relaxed), CAP);
    }
}
