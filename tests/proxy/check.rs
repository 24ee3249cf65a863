use std::path::PathBuf;

use banyan_tests::process::run_raw;

const GOOD: &str = r#"
[upstreams.legacy]
addrs = ["127.0.0.1:3000"]
health = { path = "/health", interval = "2s" }

[upstreams.catalog]
addrs = ["127.0.0.1:4001"]

[[route]]
id = "products"
path = "/api/products"
methods = ["GET"]
upstream = "catalog"

[[route]]
id = "rest"
path = "/"
upstream = "legacy"
split = { to = "catalog", percent = 10, sticky = "cookie:sid" }
"#;

fn check(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.toml");
    std::fs::write(&file, text).unwrap();
    let (status, out, err) = run_raw("banyan", &["check", file.to_str().unwrap()], &[]);
    let name = file.display().to_string();
    (
        status.success(),
        out.replace(&name, "routes.toml"),
        err.replace(&name, "routes.toml"),
    )
}

#[test]
fn a_good_file_passes_with_a_summary() {
    let (ok, out, _) = check(GOOD);
    assert!(ok);
    assert!(
        out.contains("routes.toml: ok: 2 routes (1 split, 0 shadowed), 2 upstreams"),
        "{out}"
    );
    assert!(
        out.contains("products") && out.contains("-> catalog"),
        "{out}"
    );
}

#[test]
fn each_kind_of_mistake_is_located_and_named() {
    let cases: &[(&str, String, &str)] = &[
        (
            "syntax error",
            GOOD.replace("[[route]]\nid = \"rest\"", "[[route]\nid = \"rest\""),
            "routes.toml:15:9: unclosed array table",
        ),
        (
            "unknown key",
            GOOD.replace("methods = [\"GET\"]", "method = [\"GET\"]"),
            "routes.toml:12:1: unknown field `method`",
        ),
        (
            "unknown upstream",
            GOOD.replace("upstream = \"catalog\"", "upstream = \"catalgo\""),
            "routes.toml:13:12: unknown upstream \"catalgo\"",
        ),
        (
            "percent 150",
            GOOD.replace("percent = 10", "percent = 150"),
            "routes.toml:19:37: percent must be between 0 and 100, not 150",
        ),
        (
            "tied routes",
            GOOD.replace(
                "path = \"/\"",
                "path = \"/api/products\"\nmethods = [\"GET\", \"POST\"]",
            ),
            "ties with route \"products\"",
        ),
        (
            "bad address",
            GOOD.replace("127.0.0.1:4001", "127.0.0.1:port"),
            "routes.toml:7:10: invalid address \"127.0.0.1:port\"",
        ),
        (
            "bad duration",
            GOOD.replace("\"2s\"", "\"2 sec\""),
            "routes.toml:4:41: invalid duration \"2 sec\"",
        ),
    ];
    for (what, text, expected) in cases {
        let (ok, _, err) = check(text);
        assert!(!ok, "{what}: accepted");
        assert!(
            err.contains(expected),
            "{what}: expected {expected:?} in:\n{err}"
        );
    }
}

#[test]
fn all_problems_of_a_file_are_reported_together() {
    let text = GOOD
        .replace("upstream = \"catalog\"", "upstream = \"nope\"")
        .replace("percent = 10", "percent = -1");
    let (ok, _, err) = check(&text);
    assert!(!ok);
    assert_eq!(err.lines().count(), 2, "{err}");
}

#[test]
fn the_shipped_tables_are_valid() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in ["routes.toml", "proxy/reference.toml"] {
        let path = root.join(file);
        let (status, out, err) = run_raw("banyan", &["check", path.to_str().unwrap()], &[]);
        assert!(status.success(), "{file}: {err}");
        assert!(out.contains(": ok:"), "{out}");
    }
}

#[test]
fn a_missing_file_is_an_error() {
    let (status, _, err) = run_raw("banyan", &["check", "/nonexistent/routes.toml"], &[]);
    assert!(!status.success());
    assert!(err.contains("cannot read the file"), "{err}");
}
