//! The route table's configuration: `routes.toml` as written ([`file`]), as validated
//! ([`model`]), and the loader between them ([`load`]), whose errors name the file, line and
//! column. The same loader serves `banyan check`, startup and every hot reload, so a file that
//! passes `check` is exactly a file the running proxy accepts.

pub(crate) mod describe;
mod error;
pub(crate) mod file;
pub(crate) mod load;
pub(crate) mod model;
pub(crate) mod rollout;
mod units;
mod validate;

pub(crate) use load::{ConfigError, ConfigErrors, load_file, parse};
pub(crate) use model::*;
pub(crate) use units::parse_duration;
