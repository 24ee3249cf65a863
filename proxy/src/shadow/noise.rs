//! Noise learning, as Diffy does it: send the same request to a second primary backend too, and
//! whatever differs between the two primaries (timestamps, request ids, random order) is noise,
//! not a finding against the candidate.
//!
//! Two signals, either of which makes a candidate difference noise:
//! - this very request: the two primaries differed at the same field template, so the field
//!   cannot be expected to agree (a timestamp is caught on the first request);
//! - what was learned: per endpoint, the primaries differed at the template in at least
//!   [`NOISE_SHARE`] of at least [`MIN_SAMPLES`] pairs. A field that flips on most calls is noise
//!   even on a request where the two primaries happened to agree, and a field that differed once
//!   in a thousand is not.
//!
//! The counts themselves live in the results store ([`super::results`]), beside the candidate's
//! counts for the same field, so a report shows both.

use super::compare::Difference;

/// Primary pairs needed before a template can be called noise from history.
pub(crate) const MIN_SAMPLES: u64 = 5;
/// Share of primary pairs that must differ at a template for it to be noise.
pub(crate) const NOISE_SHARE: f64 = 0.2;

/// True when the primaries differed at a template in `differed` of `pairs` comparisons often
/// enough for differences there to be noise.
pub(crate) fn is_noise(pairs: u64, differed: u64) -> bool {
    pairs >= MIN_SAMPLES && differed as f64 >= NOISE_SHARE * pairs as f64
}

/// Splits candidate differences into (findings, noise). `this_request` holds the differences
/// between the two primaries for the same request (empty without noise learning); `learned`
/// says whether history calls a template noise.
pub(crate) fn classify(
    diffs: Vec<Difference>,
    this_request: &[Difference],
    learned: impl Fn(&str) -> bool,
) -> (Vec<Difference>, Vec<Difference>) {
    diffs.into_iter().partition(|d| {
        !(this_request.iter().any(|p| p.template == d.template) || learned(&d.template))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::compare::{Rules, compare};
    use super::*;

    #[test]
    fn fields_that_differ_between_primaries_on_this_request_are_noise() {
        let answer = |at: u64, price: u64| json!({"id": 1, "price": price, "served_at": at});
        let primaries = compare(&answer(1, 5), &answer(2, 5), &Rules::default());
        let candidate = compare(&answer(1, 5), &answer(3, 6), &Rules::default());
        let (findings, noise) = classify(candidate, &primaries, |_| false);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].template, "/price");
        assert_eq!(noise[0].template, "/served_at");
    }

    #[test]
    fn learned_noise_applies_when_the_primaries_agreed_this_time() {
        let candidate = compare(&json!({"at": 1}), &json!({"at": 2}), &Rules::default());
        let (findings, noise) = classify(candidate.clone(), &[], |t| t == "/at");
        assert!(findings.is_empty());
        assert_eq!(noise.len(), 1);
        let (findings, _) = classify(candidate, &[], |_| false);
        assert_eq!(findings.len(), 1, "without noise learning it is a finding");
    }

    #[test]
    fn rare_or_early_differences_are_not_noise() {
        assert!(!is_noise(1, 1), "one sample is not enough");
        assert!(!is_noise(4, 4));
        assert!(is_noise(5, 1));
        assert!(!is_noise(21, 1), "1 in 21 is not noise");
        assert!(is_noise(1000, 200));
        assert!(!is_noise(1000, 199));
    }
}
