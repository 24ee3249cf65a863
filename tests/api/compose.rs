//! docker-compose.yml, the Dockerfiles and the compose route table must agree with the code: a
//! renamed binary, variable, port or upstream would otherwise only be noticed by whoever next
//! runs `docker compose up` (no Docker engine runs where these tests run).

use std::path::PathBuf;

use banyan_tests::process::run_raw;
use serde_yaml_ng::Value;

fn repo_file(path: &str) -> String {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn compose() -> Value {
    serde_yaml_ng::from_str(&repo_file("docker-compose.yml"))
        .expect("docker-compose.yml is valid YAML")
}

/// The service's Dockerfile builds and runs `binary`; every variable compose sets is one the
/// binary reads (clap prints `[env: NAME=` in `--help`).
fn check_service(service: &Value, binary: &str, help_args: &[&str]) {
    let dockerfile = repo_file(
        service["build"]["dockerfile"]
            .as_str()
            .expect("built from a Dockerfile"),
    );
    assert!(
        dockerfile.contains(&format!("--bin {binary}")),
        "{binary}: Dockerfile builds another binary"
    );
    assert!(
        dockerfile.contains(&format!("target/release/{binary}")),
        "{binary}: Dockerfile copies another binary"
    );
    let (_, help, _) = run_raw(binary, help_args, &[]);
    if let Some(env) = service["environment"].as_mapping() {
        for (key, _) in env {
            let key = key.as_str().unwrap();
            if matches!(key, "LOG_FORMAT" | "RUST_LOG") {
                continue; // read by the logging setup, not clap
            }
            assert!(
                help.contains(&format!("[env: {key}")),
                "compose sets {key}, which {binary} does not read"
            );
        }
    }
}

#[test]
fn every_service_matches_its_binary() {
    let c = compose();
    let s = &c["services"];
    for needed in [
        "mysql",
        "postgres",
        "redis",
        "legacy-monolith",
        "catalog-backfill",
        "catalog-service",
        "auth-service",
        "search-service",
        "analytics-service",
        "proxy",
    ] {
        assert!(!s[needed].is_null(), "service {needed} missing");
    }
    for infra in [
        "mysql",
        "postgres",
        "redis",
        "legacy-monolith",
        "catalog-service",
        "auth-service",
        "search-service",
        "analytics-service",
    ] {
        assert!(
            !s[infra]["healthcheck"].is_null(),
            "{infra} has no healthcheck"
        );
    }
    check_service(
        &s["legacy-monolith"],
        "legacy-monolith",
        &["serve", "--help"],
    );
    check_service(&s["catalog-service"], "catalog-service", &["--help"]);
    check_service(
        &s["catalog-backfill"],
        "catalog-service",
        &["backfill", "--help"],
    );
    for name in ["auth-service", "search-service", "analytics-service"] {
        check_service(&s[name], name, &["--help"]);
    }
    check_service(&s["proxy"], "banyan", &["run", "--help"]);

    // Health checks probe the port each service listens on.
    for (name, port) in [
        ("legacy-monolith", "3000"),
        ("catalog-service", "4001"),
        ("auth-service", "4002"),
        ("search-service", "4003"),
        ("analytics-service", "4004"),
    ] {
        let listen = s[name]["environment"]["LISTEN_ADDR"].as_str().unwrap();
        assert!(
            listen.ends_with(&format!(":{port}")),
            "{name} listens on {listen}"
        );
        let health = serde_yaml_ng::to_string(&s[name]["healthcheck"]).unwrap();
        assert!(
            health.contains(&format!("127.0.0.1:{port}/health")),
            "{name}: {health}"
        );
    }
    // The databases: the monolith on MySQL, the catalog on PostgreSQL syncing from MySQL.
    assert!(
        s["legacy-monolith"]["environment"]["DATABASE_URL"]
            .as_str()
            .unwrap()
            .starts_with("mysql://")
    );
    // Each extracted service on a PostgreSQL database of its own (created by the init script),
    // following the monolith's database.
    let init = repo_file("deploy/postgres-init.sql");
    let mut databases = std::collections::BTreeSet::new();
    for name in [
        "catalog-service",
        "auth-service",
        "search-service",
        "analytics-service",
    ] {
        let env = &s[name]["environment"];
        let url = env["DATABASE_URL"].as_str().unwrap();
        assert!(url.starts_with("postgres://"), "{name}: {url}");
        let db = url.rsplit('/').next().unwrap();
        assert!(
            db == "banyan" || init.contains(&format!("CREATE DATABASE {db} ")),
            "{name}: database {db} is never created"
        );
        assert!(
            databases.insert(db.to_owned()),
            "{name} shares database {db}"
        );
        assert_eq!(
            env["MONOLITH_DATABASE_URL"], s["legacy-monolith"]["environment"]["DATABASE_URL"],
            "{name}"
        );
    }
    // No secret is written into the file.
    let password = s["legacy-monolith"]["environment"]["BANYAN_ADMIN_PASSWORD"]
        .as_str()
        .unwrap();
    assert!(
        password.starts_with("${"),
        "admin password must come from the environment"
    );
}

/// Clients reach only the proxy: it is the one service with a published port, and that port
/// is the one its mounted route table listens on. The table itself is valid (with the compose
/// service names standing for addresses that only resolve inside the compose network).
#[test]
fn only_the_proxy_is_published_and_its_table_is_valid() {
    let c = compose();
    let services = c["services"].as_mapping().unwrap();
    let published: Vec<&str> = services
        .iter()
        .filter(|(_, v)| !v["ports"].is_null())
        .map(|(k, _)| k.as_str().unwrap())
        .collect();
    assert_eq!(published, vec!["proxy"]);
    let proxy = &c["services"]["proxy"];
    let mount = proxy["volumes"][0].as_str().unwrap();
    let (host_path, rest) = mount.split_once(':').unwrap();
    assert!(rest.starts_with("/etc/banyan/routes.toml"), "{mount}");
    let table = repo_file(host_path.trim_start_matches("./"));
    assert!(table.contains("listen = \"0.0.0.0:8080\""));
    assert_eq!(proxy["ports"][0].as_str().unwrap(), "8080:8080");
    assert!(
        table.contains("admin  = \"127.0.0.1:9901\""),
        "the admin API stays on loopback"
    );
    let mut local = table.clone();
    for (upstream, port) in [
        ("legacy-monolith", 3000),
        ("catalog-service", 4001),
        ("auth-service", 4002),
        ("search-service", 4003),
        ("analytics-service", 4004),
    ] {
        let addr = format!("{upstream}:{port}");
        assert!(
            table.contains(&addr),
            "{addr} missing from the compose table"
        );
        local = local.replace(&addr, &format!("127.0.0.1:{port}"));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.toml");
    std::fs::write(&file, local).unwrap();
    let (status, out, err) = run_raw("banyan", &["check", file.to_str().unwrap()], &[]);
    assert!(status.success(), "{out}{err}");
}
