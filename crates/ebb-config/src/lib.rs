//! The one reader of pool-file sections, shared by the engine, the drivers and ebb's own
//! balancer: typed getters, unknown keys reported with the keys that are known, every
//! error with file, line and key, and one duration grammar.
//!
//! A section is read through a [`Section`] declared with its [`Key`]s (name, kind, one-line
//! description); the same declarations drive the "unknown key" message and describe the
//! pool file to tools (a JSON Schema, the docs).
//!
//! ```
//! use ebb_config::{Context, Key, Kind, LineIndex, Section};
//! use std::time::Duration;
//!
//! const KEYS: &[Key] = &[Key::new("timeout", Kind::Duration, "bound on each command")];
//! let text = "[balancer]\ntimeout = \"1m30s\"\n";
//! let root: toml::Table = text.parse().unwrap();
//! let mut cx = Context::new("pool.toml", LineIndex::new(text));
//! let mut s = Section::new(root["balancer"].as_table().unwrap(), "balancer", KEYS);
//! assert_eq!(s.duration(&mut cx, "timeout", Duration::ZERO), Duration::from_secs(90));
//! s.finish(&mut cx);
//! assert!(cx.into_result(()).is_ok());
//! ```

pub mod duration;
mod error;
mod key;
mod lines;
mod section;

pub use duration::{format_duration, format_exact, parse_duration};
pub use error::{ConfigError, ConfigErrors, Context};
pub use key::{Key, Kind};
pub use lines::{line_of_offset, LineIndex};
pub use section::{display_value, similar, type_name, Section};

/// Parses pool-file text into a TOML table, or the one syntax error with its line.
pub fn parse_toml(text: &str, file: &str) -> Result<toml::Table, ConfigErrors> {
    text.parse::<toml::Table>().map_err(|e| {
        let line = e.span().map(|s| line_of_offset(text, s.start)).unwrap_or(0);
        ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            line,
            key: String::new(),
            message: format!("not valid TOML: {}", e.message().trim()),
        }])
    })
}

/// Reads a pool file, or the error naming it.
pub fn read_file(path: &std::path::Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.display().to_string(),
            line: 0,
            key: String::new(),
            message: format!("cannot read the pool file: {e}"),
        }])
    })
}
