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

// A print that panics on a closed pipe must not come back (see clippy.toml).
#![deny(clippy::disallowed_macros)]

pub mod duration;
mod error;
mod key;
mod lines;
mod section;

pub use duration::{format_duration, format_exact, format_utc, parse_duration};
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

/// The largest pool file read: a pool file is a few kilobytes; this bounds what a wrong
/// path (a log, a disk image) costs.
pub const MAX_POOL_FILE: u64 = 4 * 1024 * 1024;

/// Reads a pool file, or the error naming it. Only a regular file is read (a FIFO would
/// block, `/dev/zero` never ends), of at most [`MAX_POOL_FILE`] bytes, in UTF-8: a bad
/// byte is reported on its line.
pub fn read_file(path: &std::path::Path) -> Result<String, ConfigErrors> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file_name = path.display().to_string();
    let fail = |line: usize, message: String| {
        ConfigErrors(vec![ConfigError {
            file: file_name.clone(),
            line,
            key: String::new(),
            message,
        }])
    };
    // Non-blocking, so that opening a FIFO does not wait for a writer; the type is
    // checked on the open file, so it cannot change between the check and the read.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| fail(0, format!("cannot read the pool file: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| fail(0, format!("cannot read the pool file: {e}")))?;
    if meta.is_dir() {
        return Err(fail(
            0,
            "is a directory; give the pool file (e.g. pool.toml)".into(),
        ));
    }
    if !meta.is_file() {
        return Err(fail(
            0,
            "is not a regular file (a FIFO, socket or device); give the pool file itself".into(),
        ));
    }
    let too_big = || {
        fail(
            0,
            format!(
                "is larger than a pool file can be: at most 4 MiB ({MAX_POOL_FILE} bytes) are read"
            ),
        )
    };
    if meta.len() > MAX_POOL_FILE {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // One byte more than allowed shows a file that grew while it was read.
    file.take(MAX_POOL_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(0, format!("cannot read the pool file: {e}")))?;
    if bytes.len() as u64 > MAX_POOL_FILE {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        let line_start = bytes[..at]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
        fail(
            line,
            format!(
                "not UTF-8: byte 0x{:02x} at column {} cannot start a character; save the file as UTF-8",
                bytes[at],
                at - line_start + 1
            ),
        )
    })
}
