//! The journal is the truth, so a journal that cannot be written stops the run: the state
//! dir is a small tmpfs that a member's own step fills mid-run. The run stops at the next
//! safe point with exit 1 and an error naming the journal, no other member is touched, and
//! once space is freed `ebb resume` finishes the run.
//!
//! Needs root (to mount the tmpfs); without it the test fails and says why.

mod support;
use support::*;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `size` mounted on a fresh folder; unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount(8) runs");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs for the journal (this test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A pool of `members` whose one step, `update`, runs `step` (`{filler}` in it: a file on
/// the journal's tmpfs), with the journal on that tmpfs. Returns the pool file and the
/// state dir as arguments, and the filler.
fn pool_filling(
    f: &Fixture,
    members: &[&str],
    state: &Tmpfs,
    step: &str,
) -> (String, String, PathBuf) {
    let filler: PathBuf = state.path().join("filler");
    let rest = format!(
        "[runbook.drain]\ntimeout = \"10s\"\n\n[[runbook.step]]\nname = \"update\"\ntimeout = \"1m\"\nrun = \"{}\"\n",
        step.replace("{filler}", &filler.display().to_string())
    );
    let pool = f.pool("max_unavailable = 1", members, &rest);
    (
        pool.display().to_string(),
        state.path().display().to_string(),
        filler,
    )
}

#[test]
fn a_journal_that_cannot_be_written_stops_the_run_and_resume_finishes_it() {
    let f = Fixture::new(&["a", "b", "c"]);
    let state = Tmpfs::mount("2m");
    // Member "a"'s update fills the journal's file system once (the marker lives outside
    // it), so the journal write that records the update's outcome fails.
    let (pool_arg, state_arg, filler) = pool_filling(
        &f,
        &["a", "b", "c"],
        &state,
        "touch {var.dir}/updated-{member}; if [ {member} = a ] && [ ! -e {var.dir}/filled ]; then touch {var.dir}/filled; dd if=/dev/zero of={filler} bs=64k 2>/dev/null; true; fi",
    );

    let o = run(&["run", &pool_arg, "--state-dir", &state_arg], f.dir.path());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        f.path("filled").exists(),
        "the step filled the tmpfs: {err}"
    );
    let journal = state.path().join("journal.db").display().to_string();
    for want in [&journal[..], "ebb resume", "full"] {
        assert!(err.contains(want), "{want:?} missing in:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !f.path("updated-b").exists() && !f.path("updated-c").exists(),
        "no other member is touched once the journal failed"
    );

    // Space again: resume re-runs the interrupted update (idempotent) and the others.
    std::fs::remove_file(&filler).expect("free the tmpfs");
    let o = run(
        &["resume", &pool_arg, "--state-dir", &state_arg],
        f.dir.path(),
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    for m in ["a", "b", "c"] {
        assert!(f.path(&format!("updated-{m}")).exists(), "{m}: {err}");
        assert_eq!(f.lb_state(m), "started", "{m} is back in service");
    }
}

#[test]
fn a_heartbeat_the_journal_cannot_record_is_said_on_stderr() {
    let f = Fixture::new(&["a"]);
    let state = Tmpfs::mount("2m");
    // The step fills the journal's file system and stays full for longer than the 5 s
    // between heartbeats, then frees it: only the heartbeat meets the full disk.
    let (pool_arg, state_arg, _) = pool_filling(
        &f,
        &["a"],
        &state,
        "dd if=/dev/zero of={filler} bs=64k 2>/dev/null; sleep 7; rm -f {filler}",
    );
    let o = run(&["run", &pool_arg, "--state-dir", &state_arg], f.dir.path());
    let err = stderr(&o);
    let journal = state.path().join("journal.db").display().to_string();
    let said: Vec<&str> = err.lines().filter(|l| l.contains("heartbeat")).collect();
    assert_eq!(said.len(), 1, "said once:\n{err}");
    for want in ["warning", &journal[..], "next safe point"] {
        assert!(said[0].contains(want), "{want:?} missing in:\n{err}");
    }
    // The failure is kept: the run stopped at its next safe point.
    assert_eq!(o.status.code(), Some(1), "{err}");
}
