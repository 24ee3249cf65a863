//! The command line as an operator meets it.

use std::process::Command;

fn monolith() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_legacy-monolith"));
    cmd.env_remove("DATABASE_URL").env_remove("REDIS_URL");
    cmd
}

#[test]
fn help_names_every_setting_and_hides_secret_values() {
    let out = monolith()
        .args(["serve", "--help"])
        .env("BANYAN_ADMIN_PASSWORD", "do-not-print-me")
        .env("DATABASE_URL", "mysql://user:hunter2@db/catalog")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for var in [
        "DATABASE_URL",
        "REDIS_URL",
        "REDIS_KEY_PREFIX",
        "BANYAN_DATA_DIR",
        "LISTEN_ADDR",
        "BANYAN_ADMIN_EMAIL",
        "BANYAN_ADMIN_PASSWORD",
    ] {
        assert!(help.contains(var), "{var} not documented in --help");
    }
    assert!(!help.contains("do-not-print-me"));
    assert!(!help.contains("hunter2"));
}

#[test]
fn bad_arguments_fail_with_usage() {
    let out = monolith()
        .args(["serve", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
    let out = monolith()
        .args(["seed", "--products", "-3"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = monolith().arg("frobnicate").output().unwrap();
    assert!(!out.status.success());
}
