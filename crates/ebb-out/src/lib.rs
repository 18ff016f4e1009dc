//! Output that never fails the program writing it.
//!
//! `println!` and `eprintln!` panic when the write fails: `ebb run pool.toml | head -3`,
//! quitting `less`, a closed terminal (SIGHUP) or a full disk under a redirected stream.
//! A panic in a member task halts a run with a member out of service, so every crate that
//! ends up in the `ebb` binary writes through these macros instead: they write, flush,
//! and drop the error. The rollout goes on whatever happens to the terminal; the journal,
//! not the terminal, is the record of what happened.
//!
//! ```
//! ebb_out::outln!("run {} done", 7);
//! ebb_out::errln!("ebb: {}", "a message");
//! ```

// A print that panics on a closed pipe must not come back (see clippy.toml).
#![deny(clippy::disallowed_macros)]

use std::fmt::Arguments;
use std::io::Write;

/// Writes `args` to stdout; a failed write is dropped (the reader went away).
pub fn stdout(args: Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(args);
    let _ = out.flush();
}

/// Writes `args` to stderr; a failed write is dropped (the reader went away).
pub fn stderr(args: Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args);
    let _ = err.flush();
}

/// `print!` that never panics.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::stdout(format_args!($($arg)*)) };
}

/// `println!` that never panics.
#[macro_export]
macro_rules! outln {
    () => { $crate::stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `eprint!` that never panics.
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => { $crate::stderr(format_args!($($arg)*)) };
}

/// `eprintln!` that never panics.
#[macro_export]
macro_rules! errln {
    () => { $crate::stderr(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::stderr(format_args!("{}\n", format_args!($($arg)*))) };
}
