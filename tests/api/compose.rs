//! docker-compose.yml and the Dockerfiles must agree with the code: a renamed binary, variable
//! or port would otherwise only be noticed by whoever next runs `docker compose up`.

use std::path::PathBuf;

use banyan_tests::process::run_raw;
use serde_yaml_ng::Value;

fn repo_file(path: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

#[test]
fn compose_matches_the_monolith() {
    let compose: Value = serde_yaml_ng::from_str(&repo_file("docker-compose.yml"))
        .expect("docker-compose.yml is valid YAML");
    let services = &compose["services"];
    for needed in ["mysql", "postgres", "redis", "legacy-monolith"] {
        assert!(!services[needed].is_null(), "service {needed} missing");
        if needed != "legacy-monolith" {
            assert!(
                !services[needed]["healthcheck"].is_null(),
                "{needed} has no healthcheck"
            );
        }
    }
    let monolith = &services["legacy-monolith"];
    let dockerfile_path = monolith["build"]["dockerfile"].as_str().unwrap();
    let dockerfile = repo_file(dockerfile_path);
    assert!(
        dockerfile.contains("--bin legacy-monolith"),
        "Dockerfile builds another binary"
    );
    assert!(dockerfile.contains("target/release/legacy-monolith"));

    // Every variable compose sets is one the binary reads (clap prints `[env: NAME=`).
    let (_, help, _) = run_raw("legacy-monolith", &["serve", "--help"], &[]);
    let env = monolith["environment"]
        .as_mapping()
        .expect("environment is a mapping");
    for (key, _) in env {
        let key = key.as_str().unwrap();
        if matches!(key, "LOG_FORMAT" | "RUST_LOG") {
            continue; // read by the logging setup, not clap
        }
        assert!(
            help.contains(&format!("[env: {key}")),
            "compose sets {key}, which legacy-monolith does not read"
        );
    }
    // The published port is the one it listens on and health-checks.
    let listen = env.get("LISTEN_ADDR").and_then(Value::as_str).unwrap();
    let port = listen.rsplit(':').next().unwrap();
    let published = monolith["ports"][0].as_str().unwrap();
    assert!(
        published.ends_with(&format!(":{port}")),
        "{published} vs {listen}"
    );
    let health = serde_yaml_ng::to_string(&monolith["healthcheck"]).unwrap();
    assert!(
        health.contains(&format!("127.0.0.1:{port}/health")),
        "{health}"
    );
    // The database URL is a MySQL one pointing at the compose mysql service.
    let db = env.get("DATABASE_URL").and_then(Value::as_str).unwrap();
    assert!(
        db.starts_with("mysql://") && db.contains("@mysql:3306/"),
        "{db}"
    );
    // No secret is written into the file.
    let password = env
        .get("BANYAN_ADMIN_PASSWORD")
        .and_then(Value::as_str)
        .unwrap();
    assert!(
        password.starts_with("${"),
        "admin password must come from the environment"
    );
}
