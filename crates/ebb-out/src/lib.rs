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

/// Columns of the terminal on stderr (80 when unknown), for live views that redraw.
pub fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ fills the winsize struct we pass; nothing else is touched.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 {
        usize::from(size.ws_col)
    } else {
        80
    }
}

/// `line` cut to fit `width` columns (one left for the cursor, at least 20): a live line
/// that wrapped would throw off the cursor-up count of the next redraw and leave
/// fragments of itself on a narrow terminal.
pub fn fit(line: &str, width: usize) -> String {
    line.chars().take(width.saturating_sub(1).max(20)).collect()
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

#[cfg(test)]
mod tests {
    #[test]
    fn fit_cuts_by_characters_to_the_width() {
        assert_eq!(super::fit("short", 80), "short");
        let long = "▸ web1 install (3s, 12 connection(s) open) and much more text here";
        let cut = super::fit(long, 30);
        assert_eq!(cut.chars().count(), 29);
        assert!(long.starts_with(&cut));
        assert_eq!(super::fit(long, 5).chars().count(), 20);
    }
}
