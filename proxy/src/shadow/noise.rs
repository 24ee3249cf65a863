//! Noise learning, as Diffy does it: send the same request to a second primary backend too, and
//! whatever differs between the two primaries (timestamps, request ids, random order) is noise,
//! not a finding against the candidate.
//!
//! Per endpoint and field template, [`Noise`] counts how often the two primaries were compared
//! and how often the field differed. A candidate difference at a template is noise when the
//! primaries differed there in at least [`NOISE_SHARE`] of at least [`MIN_SAMPLES`] pairs: a
//! field that flips on every call is noise after a few requests, and a field that differed once
//! in a thousand is not.

use std::collections::HashMap;

use super::compare::Difference;

/// Primary pairs needed before a template can be called noise.
pub const MIN_SAMPLES: u64 = 5;
/// Share of primary pairs that must differ at a template for it to be noise.
pub const NOISE_SHARE: f64 = 0.2;

#[derive(Debug, Default)]
pub struct Noise {
    /// Endpoint -> primary pairs compared.
    pairs: HashMap<String, u64>,
    /// (endpoint, template) -> pairs in which the primaries differed there.
    differed: HashMap<(String, String), u64>,
}

impl Noise {
    /// Records one comparison of the two primaries' answers for `endpoint`.
    pub fn learn(&mut self, endpoint: &str, primary_diffs: &[Difference]) {
        *self.pairs.entry(endpoint.to_owned()).or_default() += 1;
        let mut seen: Vec<&str> = primary_diffs.iter().map(|d| d.template.as_str()).collect();
        seen.sort_unstable();
        seen.dedup();
        for t in seen {
            *self
                .differed
                .entry((endpoint.to_owned(), t.to_owned()))
                .or_default() += 1;
        }
    }

    /// True when differences at `template` of `endpoint` are noise.
    pub fn is_noise(&self, endpoint: &str, template: &str) -> bool {
        let pairs = self.pairs.get(endpoint).copied().unwrap_or(0);
        if pairs < MIN_SAMPLES {
            return false;
        }
        let differed = self
            .differed
            .get(&(endpoint.to_owned(), template.to_owned()))
            .copied()
            .unwrap_or(0);
        differed as f64 >= NOISE_SHARE * pairs as f64
    }

    /// Splits candidate differences into (findings, noise).
    pub fn classify(
        &self,
        endpoint: &str,
        diffs: Vec<Difference>,
    ) -> (Vec<Difference>, Vec<Difference>) {
        diffs
            .into_iter()
            .partition(|d| !self.is_noise(endpoint, &d.template))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::compare::{Rules, compare};
    use super::*;

    #[test]
    fn fields_that_differ_between_primaries_are_noise() {
        let mut noise = Noise::default();
        let ep = "GET /api/products/{id}";
        let answer = |at: u64, price: u64| json!({"id": 1, "price": price, "served_at": at});
        for i in 0..10 {
            // Two primaries: the timestamp differs every time, the price never.
            let d = compare(&answer(i, 5), &answer(i + 1, 5), &Rules::default());
            noise.learn(ep, &d);
        }
        // The candidate differs in both: the timestamp is noise, the price a finding.
        let d = compare(&answer(1, 5), &answer(2, 6), &Rules::default());
        let (findings, noisy) = noise.classify(ep, d);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].template, "/price");
        assert_eq!(noisy[0].template, "/served_at");
        // Noise is per endpoint.
        assert!(!noise.is_noise("GET /api/search", "/served_at"));
    }

    #[test]
    fn rare_or_early_differences_are_not_noise() {
        let mut noise = Noise::default();
        let ep = "GET /x";
        let a = json!({"v": 1});
        let b = json!({"v": 2});
        noise.learn(ep, &compare(&a, &b, &Rules::default()));
        assert!(!noise.is_noise(ep, "/v"), "one sample is not enough");
        for _ in 0..20 {
            noise.learn(ep, &compare(&a, &a, &Rules::default()));
        }
        assert!(!noise.is_noise(ep, "/v"), "1 in 21 is not noise");
    }
}
