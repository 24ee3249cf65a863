//! Search: `GET /api/search?q=&category=&limit=`.
//!
//! The request rules and the response shape are shared; how hits are found and scored is not.
//! The monolith matches words with SQL `LIKE`, the search service ranks with a full-text
//! engine, so scores, order and (for words that only occur inside longer words) hit sets may
//! differ. That is the difference shadow comparison of `/api/search` must tolerate or report.

use serde::{Deserialize, Serialize};

use crate::error::ErrorResponse;
use crate::extract::QueryParams;

/// At most this many query words are used.
pub const MAX_TERMS: usize = 8;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchResult {
    pub query: String,
    pub total: i64,
    pub hits: Vec<Hit>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hit {
    pub id: i64,
    pub name: String,
    pub category: String,
    pub price_cents: i64,
    pub score: f64,
}

/// A valid search request.
#[derive(Debug)]
pub struct SearchQuery {
    /// The query as the client wrote it (echoed back).
    pub q: String,
    /// Its words, lower-cased and deduplicated (empty: the query matches nothing).
    pub terms: Vec<String>,
    pub category: Option<String>,
    pub limit: i64,
}

impl SearchQuery {
    pub fn parse(query: QueryParams) -> Result<Self, ErrorResponse> {
        let mut p = query.params();
        let q = p.opt_string("q", 200);
        let category = p.opt_string("category", 100);
        let limit = p.int("limit", 1..=100, 20);
        let words = q.as_deref().map(terms).unwrap_or_default();
        // A query without a letter or digit has no words to look for: it matches nothing (an
        // empty result, as for words no product has).
        if q.is_none() {
            p.fail("q", "is required");
        }
        p.finish()?;
        Ok(Self {
            q: q.unwrap_or_default(),
            terms: words,
            category,
            limit,
        })
    }
}

/// Lower-cased words of the query (letters and digits), deduplicated, at most [`MAX_TERMS`].
pub fn terms(q: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in q
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let word = word.to_lowercase();
        if !out.contains(&word) {
            out.push(word);
        }
        if out.len() == MAX_TERMS {
            break;
        }
    }
    out
}

/// A score rounded to 3 decimals, as both implementations show it.
pub fn round_score(score: f64) -> f64 {
    (score * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(
            terms("  Wireless, HEADphones wireless!"),
            vec!["wireless", "headphones"]
        );
        assert!(terms("%%% ___").is_empty());
        assert_eq!(terms("a b c d e f g h i j").len(), MAX_TERMS);
    }
}
