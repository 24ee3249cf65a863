//! `GET /api/search`: the shared request rules ([`service_kit::contract::search`]), answered
//! from the index on the blocking pool (a query is CPU work).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use service_kit::contract::search::{SearchQuery, SearchResult};
use service_kit::extract::QueryParams;

use crate::app::ApiContext;
use crate::error::Result;

pub fn router() -> Router<ApiContext> {
    Router::new().route("/api/search", get(search))
}

async fn search(State(ctx): State<ApiContext>, query: QueryParams) -> Result<Json<SearchResult>> {
    let SearchQuery {
        q,
        terms,
        category,
        limit,
    } = SearchQuery::parse(query)?;
    if terms.is_empty() {
        return Ok(Json(SearchResult {
            query: q,
            total: 0,
            hits: Vec::new(),
        }));
    }
    let index = ctx.index.clone();
    let (total, hits) = tokio::task::spawn_blocking(move || {
        index.search(&terms, category.as_deref(), limit as usize)
    })
    .await??;
    Ok(Json(SearchResult {
        query: q,
        total,
        hits,
    }))
}
