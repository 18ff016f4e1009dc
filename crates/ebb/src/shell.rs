//! Shell completions and the man page, both generated from the clap definitions so they
//! can never disagree with what `ebb --help` says.

use clap::Command;
use clap_complete::Shell;
use std::io::Write;

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: Shell, mut cmd: Command) -> i32 {
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    write_stdout(&out)
}

/// Writes the man page (roff, section 1) for `ebb` and every subcommand to stdout.
///
/// One page holds everything: the top-level page from clap_mangen, then each subcommand
/// as its own section, so `man -l` of the output documents every flag.
pub fn man(cmd: Command) -> i32 {
    let mut cmd = cmd;
    cmd.build();
    let mut out = Vec::new();
    if let Err(e) = clap_mangen::Man::new(cmd.clone()).render(&mut out) {
        ebb_out::errln!("ebb: cannot render the man page: {e}");
        return 1;
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if let Err(e) = render_subcommand(&mut out, sub, cmd.get_name()) {
            ebb_out::errln!("ebb: cannot render the man page: {e}");
            return 1;
        }
    }
    write_stdout(&out)
}

/// One subcommand as a `.SH` section: its synopsis, description and options, rendered by
/// clap_mangen's own pieces (their `.SH` headings demoted to `.SS` so they nest under it).
fn render_subcommand(out: &mut Vec<u8>, sub: &Command, parent: &str) -> std::io::Result<()> {
    let full = format!("{parent} {}", sub.get_name());
    let sub = sub
        .clone()
        .display_name(full.clone())
        .bin_name(full.clone());
    let man = clap_mangen::Man::new(sub.clone());
    let mut body = Vec::new();
    man.render_synopsis_section(&mut body)?;
    man.render_description_section(&mut body)?;
    if sub.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut body)?;
    }
    writeln!(out, ".SH \"{}\"", full.to_uppercase())?;
    for line in String::from_utf8_lossy(&body).split_inclusive('\n') {
        match line.strip_prefix(".SH ") {
            Some(rest) => write!(out, ".SS {rest}")?,
            None => out.extend_from_slice(line.as_bytes()),
        }
    }
    for nested in sub.get_subcommands().filter(|s| !s.is_hide_set()) {
        render_subcommand(out, nested, &full)?;
    }
    Ok(())
}

/// Writes `bytes` to stdout; a closed pipe (`| head`) is not an error.
pub fn write_stdout(bytes: &[u8]) -> i32 {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => 0,
        // A closed pipe (`ebb man | head`) is not a failure worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            ebb_out::errln!("ebb: cannot write to stdout: {e}");
            1
        }
    }
}
