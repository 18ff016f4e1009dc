//! `ebb completions SHELL` and `ebb man` are generated from the clap definitions: the bash
//! script is sourced by a real bash and completes real subcommands and flags; the man page
//! is rendered by groff without warnings and documents every subcommand.

use std::process::{Command, Stdio};

fn ebb(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(args)
        .output()
        .expect("run ebb");
    assert!(
        out.status.success(),
        "ebb {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Sources the bash completion script in a fresh bash and asks `_ebb` to complete `words`
/// (the last one being the word under the cursor); returns the candidates.
fn bash_complete(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let cword = words.len() - 1;
    let prog = format!(
        "set -e; source '{}'; COMP_WORDS=({}); COMP_CWORD={cword}; COMP_LINE='{}'; COMP_POINT=${{#COMP_LINE}}; \
         _ebb ebb '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words.join(" "),
        words[cword],
        words[cword.saturating_sub(1)],
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &prog])
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "bash could not source or run the completion script: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "bash printed errors: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn bash_completion_completes_subcommands_and_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("ebb.bash");
    std::fs::write(&script, ebb(&["completions", "bash"])).expect("write script");

    assert_eq!(
        bash_complete(&script, &["ebb", "r"]),
        ["release", "report", "resume", "run"],
        "`ebb r<TAB>`"
    );
    assert_eq!(
        bash_complete(&script, &["ebb", "resume", "--st"]),
        ["--state-backend", "--state-dir", "--steal-lock"],
        "`ebb resume --st<TAB>`"
    );
    assert_eq!(
        bash_complete(&script, &["ebb", "lb", "s"]),
        ["serve", "start", "status", "stop"],
        "`ebb lb s<TAB>`"
    );
}

#[test]
fn other_shells_get_scripts_naming_the_subcommands() {
    for (shell, marker) in [
        ("zsh", "#compdef ebb"),
        ("fish", "complete -c ebb"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let s = ebb(&["completions", shell]);
        assert!(s.contains(marker), "{shell}: no `{marker}` in\n{s}");
        for word in [
            "resume",
            "release",
            "state-dir",
            "assume-done",
            "completions",
        ] {
            assert!(
                s.contains(word),
                "{shell} completion does not mention {word}"
            );
        }
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["completions", "tcsh"])
        .output()
        .expect("run ebb");
    assert_eq!(
        bad.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_page_renders_with_groff_and_documents_every_subcommand() {
    let roff = ebb(&["man"]);
    assert!(
        roff.starts_with(".ie") || roff.contains(".TH ebb 1"),
        "not roff:\n{roff}"
    );
    let mut child = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("groff is installed (Debian package groff-base, a dependency of man-db)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(roff.as_bytes()).expect("write to groff");
    }
    let out = child.wait_with_output().expect("groff");
    assert!(out.status.success(), "groff failed");
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(warnings.trim().is_empty(), "groff warnings:\n{warnings}");
    // groff's text output: strip backspace overstriking (bold/underline) to read it.
    let raw = String::from_utf8_lossy(&out.stdout);
    let mut text = String::new();
    for c in raw.chars() {
        if c == '\u{8}' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    for heading in [
        "NAME",
        "SYNOPSIS",
        "EBB RUN",
        "EBB RESUME",
        "EBB LB SERVE",
        "EBB COMPLETIONS",
    ] {
        assert!(
            text.contains(heading),
            "man page has no {heading} section:\n{text}"
        );
    }
    for flag in [
        "--state-dir",
        "--assume-done",
        "--steal-lock",
        "--no-members",
        "--html",
    ] {
        assert!(text.contains(flag), "man page does not document {flag}");
    }
}
