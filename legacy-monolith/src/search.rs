//! Search, the way the monolith has always done it: SQL `LIKE` over names and descriptions.
//!
//! Each query word scores 3 when it occurs in a product's name and 1 when in its description;
//! the score shown is that sum over the best possible (4 per word), best match first, ties by
//! sales. The extracted search service uses a real full-text engine and scores differently: the
//! shadow comparison of `/api/search` is configured to tolerate exactly that.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use service_kit::contract::search::{Hit, SearchQuery, SearchResult, round_score};
use service_kit::extract::QueryParams;
use sqlx::{Any, QueryBuilder, Row};

use crate::app::ApiContext;
use crate::error::Result;

pub fn router() -> Router<ApiContext> {
    Router::new().route("/api/search", get(search))
}

/// `%word%` with LIKE's wildcards escaped (`!` is the escape character: it means the same in
/// MySQL and SQLite, unlike a backslash).
fn like_pattern(word: &str) -> String {
    let mut p = String::with_capacity(word.len() + 2);
    p.push('%');
    for c in word.chars() {
        if matches!(c, '%' | '_' | '!') {
            p.push('!');
        }
        p.push(c);
    }
    p.push('%');
    p
}

fn push_match(qb: &mut QueryBuilder<Any>, terms: &[String]) {
    qb.push("(");
    for (i, t) in terms.iter().enumerate() {
        if i > 0 {
            qb.push(" OR ");
        }
        qb.push("LOWER(name) LIKE ")
            .push_bind(like_pattern(t))
            .push(" ESCAPE '!' OR LOWER(description) LIKE ")
            .push_bind(like_pattern(t))
            .push(" ESCAPE '!'");
    }
    qb.push(")");
}

async fn search(State(ctx): State<ApiContext>, query: QueryParams) -> Result<Json<SearchResult>> {
    let SearchQuery {
        q,
        terms: words,
        category,
        limit,
    } = SearchQuery::parse(query)?;
    if words.is_empty() {
        return Ok(Json(SearchResult {
            query: q,
            total: 0,
            hits: Vec::new(),
        }));
    }

    let mut count = QueryBuilder::<Any>::new("SELECT COUNT(*) FROM products WHERE ");
    push_match(&mut count, &words);
    if let Some(c) = &category {
        count.push(" AND category = ").push_bind(c.clone());
    }
    let total: i64 = count.build_query_scalar().fetch_one(&ctx.db.pool).await?;

    let mut select = QueryBuilder::<Any>::new("SELECT id, name, category, price_cents, sales, (0");
    for t in &words {
        select
            .push(" + CASE WHEN LOWER(name) LIKE ")
            .push_bind(like_pattern(t))
            .push(" ESCAPE '!' THEN 3 ELSE 0 END + CASE WHEN LOWER(description) LIKE ")
            .push_bind(like_pattern(t))
            .push(" ESCAPE '!' THEN 1 ELSE 0 END");
    }
    select.push(") AS score FROM products WHERE ");
    push_match(&mut select, &words);
    if let Some(c) = &category {
        select.push(" AND category = ").push_bind(c.clone());
    }
    select
        .push(" ORDER BY score DESC, sales DESC, id ASC LIMIT ")
        .push_bind(limit);
    let rows = select.build().fetch_all(&ctx.db.pool).await?;
    let best = (4 * words.len()) as f64;
    let hits = rows
        .iter()
        .map(|r| {
            let raw: i64 = r.try_get("score")?;
            Ok(Hit {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                category: r.try_get("category")?,
                price_cents: r.try_get("price_cents")?,
                score: round_score(raw as f64 / best),
            })
        })
        .collect::<Result<_>>()?;
    Ok(Json(SearchResult {
        query: q,
        total,
        hits,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        assert_eq!(like_pattern("50%_off!"), "%50!%!_off!!%");
    }
}
