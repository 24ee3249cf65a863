//! `banyan check`: validate route tables offline, with the validation every reload uses.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config;

pub(super) fn run(files: &[PathBuf]) -> ExitCode {
    let mut ok = true;
    for file in files {
        match config::load_file(file) {
            Ok(c) => {
                let splits = c.routes.iter().filter(|r| r.split.is_some()).count();
                let shadows = c.routes.iter().filter(|r| r.shadow.is_some()).count();
                println!(
                    "{}: ok: {} routes ({} split, {} shadowed), {} upstreams, listen {}, admin {}",
                    file.display(),
                    c.routes.len(),
                    splits,
                    shadows,
                    c.upstreams.len(),
                    c.proxy.listen,
                    c.proxy.admin
                );
                for r in &c.routes {
                    println!("{}", super::table::route_line(&config::describe::route(r)));
                }
            }
            Err(errors) => {
                ok = false;
                eprintln!("{errors}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
