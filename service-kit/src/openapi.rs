//! The catalog API contract as OpenAPI, served at `/openapi.json` by every process.
//!
//! There is one document (`openapi/catalog-api.json`): the monolith defines the contract and the
//! extracted services keep it, so they must not each grow their own copy. Each process serves
//! the subset of paths it implements.

use std::sync::OnceLock;

use serde_json::Value;

const DOCUMENT: &str = include_str!("../openapi/catalog-api.json");

/// Every path of the contract: what the monolith serves.
pub const MONOLITH_PATHS: &[&str] = &["/"];

fn full() -> &'static Value {
    static PARSED: OnceLock<Value> = OnceLock::new();
    PARSED.get_or_init(|| {
        serde_json::from_str(DOCUMENT).expect("the bundled OpenAPI document is valid JSON")
    })
}

/// The document restricted to paths starting with one of `prefixes` (plus `/health` and
/// `/openapi.json`, which every process serves).
pub fn document(prefixes: &[&str]) -> String {
    let mut doc = full().clone();
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        paths.retain(|path, _| {
            path == "/health"
                || path == "/openapi.json"
                || prefixes.iter().any(|p| path.starts_with(p))
        });
    }
    serde_json::to_string(&doc).expect("a JSON value serializes")
}

/// `(method, path template)` for every operation in the document restricted to `prefixes`.
pub fn operations(prefixes: &[&str]) -> Vec<(String, String)> {
    let doc: Value = serde_json::from_str(&document(prefixes)).expect("valid JSON");
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in ["get", "put", "post", "patch", "delete"] {
            if item.get(method).is_some() {
                ops.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// `GET /openapi.json` serving [`document`] for `prefixes`: the route every extracted service
/// mounts, so each one publishes exactly the part of the contract it implements.
pub fn route<S: Clone + Send + Sync + 'static>(
    prefixes: &'static [&'static str],
) -> axum::Router<S> {
    axum::Router::new().route(
        "/openapi.json",
        axum::routing::get(move || async move {
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                document(prefixes),
            )
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves_and_subsets_keep_health() {
        let doc = full();
        let text = DOCUMENT;
        for (i, _) in text.match_indices("#/components/schemas/") {
            let rest = &text[i + "#/components/schemas/".len()..];
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(
                doc["components"]["schemas"].get(&name).is_some(),
                "dangling $ref {name}"
            );
        }
        let products = operations(&["/api/products", "/api/categories"]);
        assert!(products.contains(&("GET".into(), "/health".into())));
        assert!(products.contains(&("DELETE".into(), "/api/products/{id}".into())));
        assert!(!products.iter().any(|(_, p)| p.starts_with("/api/orders")));
        assert_eq!(
            operations(MONOLITH_PATHS).len(),
            20,
            "the catalog API has 20 operations"
        );
    }
}
