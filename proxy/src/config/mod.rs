//! The route table's configuration: `routes.toml` as written ([`file`]), as validated
//! ([`model`]), and the loader between them ([`load`]), whose errors name the file, line and
//! column. The same loader serves `banyan check`, startup and every hot reload, so a file that
//! passes `check` is exactly a file the running proxy accepts.

pub mod describe;
mod error;
pub mod file;
pub mod load;
pub mod model;
mod units;
mod validate;

pub use load::{ConfigError, ConfigErrors, load_file, parse};
pub use model::*;
