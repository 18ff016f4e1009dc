//! Replays the committed corpus of every fuzz target (`fuzz/corpus/TARGET/*`: seeds, and
//! the inputs of crashes found and fixed) through the same function the target fuzzes, so
//! a reader that regresses on any of them fails the normal test suite. Longer, coverage-
//! guided runs: docs/testing.md.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("pool_file", ebb_drivers::fuzzing::pool_file),
    ("lb_control", ebb_lb::fuzzing::control_request),
    ("haproxy_status", ebb_drivers::fuzzing::haproxy_status),
    ("nlb_output", ebb_drivers::fuzzing::nlb_output),
    ("services_output", ebb_drivers::fuzzing::services_output),
    ("logs_output", ebb_drivers::fuzzing::logs_output),
];

#[test]
fn every_fuzz_target_accepts_its_whole_committed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut failures = Vec::new();
    for (name, target) in TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: no corpus", dir.display());
        for f in files {
            let data = std::fs::read(&f).expect("read corpus file");
            if let Err(p) = std::panic::catch_unwind(|| target(&data)) {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{}: {msg}", f.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "inputs that panic:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_fuzz_crate_has_a_target_for_every_replayed_function() {
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/Cargo.toml"),
    )
    .expect("fuzz/Cargo.toml");
    for (name, _) in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
    }
}
