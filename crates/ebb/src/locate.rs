//! Where a command's pool file, state and journal are, from what the command line gave
//! (`RunSel`): the state dir, the `[state]` backend after its overrides, and the journal.

use crate::RunSel;
use ebb_engine::journal::etcd::EtcdJournal;
use ebb_engine::journal::Journal;
use ebb_engine::plan::{Plan, StateBackend, StateSpec};
use std::path::{Path, PathBuf};

/// Exit code for bad input or usage.
pub const EXIT_USAGE: i32 = 2;

/// Loads and validates a pool file; prints every problem and returns `None` when invalid.
pub fn load_plan(path: &Path) -> Option<Plan> {
    match ebb_engine::config::load(path, &ebb_drivers::registry()) {
        Ok(p) => Some(p),
        Err(errs) => {
            print_problems(&problems_of(&errs), path);
            None
        }
    }
}

/// A pool file's problems, one line each (`file:line: key: message`).
pub(crate) fn problems_of(errs: &ebb_engine::config::ConfigErrors) -> Vec<String> {
    errs.0.iter().map(ToString::to_string).collect()
}

/// Prints a pool file's problems and that nothing was changed.
pub(crate) fn print_problems(problems: &[String], file: &Path) {
    for p in problems {
        ebb_out::errln!("{p}");
    }
    ebb_out::errln!(
        "ebb: {} problem(s) in {}; nothing was changed",
        problems.len(),
        file.display()
    );
}

/// The state dir: `--state-dir`, or `.ebb` beside the pool file, or, with neither, the
/// `.ebb` of the current directory when it holds a journal.
pub fn state_dir(sel: &RunSel) -> Option<PathBuf> {
    if let Some(d) = &sel.state_dir {
        return Some(d.clone());
    }
    let Some(pool) = sel.pool.as_ref() else {
        let here = PathBuf::from(".ebb");
        return here
            .join(ebb_engine::journal::JOURNAL_FILE)
            .is_file()
            .then_some(here);
    };
    let parent = pool
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Some(parent.join(".ebb"))
}

/// The pool file's `[state]` after `--state-backend` and `EBB_STATE_*`; `None` (with the
/// reason printed) when the pool file or an override is bad.
pub fn state_spec(sel: &RunSel) -> Result<StateSpec, i32> {
    let mut spec = match &sel.pool {
        Some(p) => load_plan(p).ok_or(EXIT_USAGE)?.state,
        None => StateSpec::default(),
    };
    spec.apply_overrides(sel.state_backend.as_deref(), |k| std::env::var(k).ok())
        .map_err(|m| {
            ebb_out::errln!("ebb: {m}");
            EXIT_USAGE
        })?;
    Ok(spec)
}

/// The etcd journal of the pool named by `sel`, when its `[state]` says etcd.
pub fn open_etcd(sel: &RunSel) -> Result<Option<EtcdJournal>, i32> {
    let spec = state_spec(sel)?;
    if spec.backend != StateBackend::Etcd {
        return Ok(None);
    }
    let Some(pool) = pool_name(sel) else {
        ebb_out::errln!(
            "ebb: the etcd state backend needs the pool file (it names the pool and its [state])"
        );
        return Err(EXIT_USAGE);
    };
    EtcdJournal::open(&spec, &pool).map(Some).map_err(|e| {
        ebb_out::errln!("ebb: {e}");
        EXIT_USAGE
    })
}

/// Opens the journal named by `sel`; `must_exist` refuses to create one.
pub fn open_journal(sel: &RunSel, must_exist: bool) -> Result<Journal, i32> {
    if let Some(etcd) = open_etcd(sel)? {
        return Ok(Journal::with_store(Box::new(etcd)));
    }
    let Some(dir) = state_dir(sel) else {
        ebb_out::errln!("ebb: give the pool file or --state-dir DIR so ebb can find the journal (or run ebb in the directory that holds `.ebb/`)");
        return Err(EXIT_USAGE);
    };
    if must_exist && !dir.join(ebb_engine::journal::JOURNAL_FILE).exists() {
        ebb_out::errln!(
            "ebb: no journal in {} (no run has been started there; `ebb run POOL.toml` starts one)",
            dir.display()
        );
        return Err(EXIT_USAGE);
    }
    Journal::open(&dir).map_err(|e| {
        ebb_out::errln!("ebb: {e}");
        1
    })
}

/// The pool's name when a valid pool file was given: a state dir may hold several pools.
pub fn pool_name(sel: &RunSel) -> Option<String> {
    sel.pool
        .as_ref()
        .and_then(|p| ebb_engine::config::load(p, &ebb_drivers::registry()).ok())
        .map(|p| p.pool.name)
}
