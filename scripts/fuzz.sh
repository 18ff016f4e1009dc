#!/usr/bin/env bash
# fuzz.sh: a bounded, coverage-guided run of every fuzz target (fuzz/, cargo-fuzz and
# libFuzzer) from its committed corpus.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   each target for SECONDS (default 10), all by default
#
# New inputs go to a temporary directory; the committed corpus (fuzz/corpus/TARGET) is only
# read. A crash stops the script with exit 1 and leaves its input in
# fuzz/artifacts/TARGET/: fix it, copy the input into fuzz/corpus/TARGET/ under a name
# saying what it was, and the replay test (crates/ebb/tests/fuzz_corpus.rs) keeps it
# fixed. Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and a C++ compiler; only
# the stable toolchain is used (RUSTC_BOOTSTRAP=1 lets it take the sanitizer flags).
# The first build compiles the whole dependency tree with AddressSanitizer: minutes.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs=${1:-10}
case $secs in '' | *[!0-9]*) echo "fuzz.sh: SECONDS must be a whole number, not \"$secs\"" >&2; exit 2 ;; esac
shift $(($# > 0 ? 1 : 0))
command -v cargo-fuzz >/dev/null 2>&1 || {
  echo "fuzz.sh: cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
  exit 2
}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(ls fuzz_targets | sed 's/\.rs$//')

export RUSTC_BOOTSTRAP=1
cargo fuzz build
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
  [ -d "corpus/$t" ] || { echo "fuzz.sh: no target \"$t\" (fuzz/corpus/$t is missing)" >&2; exit 2; }
  mkdir -p "$work/$t"
  echo "fuzz.sh: $t for ${secs}s from $(ls "corpus/$t" | wc -l) committed inputs"
  if ! cargo fuzz run "$t" "$work/$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 \
    >"$work/$t.log" 2>&1; then
    tail -n 60 "$work/$t.log" >&2
    echo "fuzz.sh: $t crashed; its input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E '^Done [0-9]+ runs' "$work/$t.log" | sed "s/^/  $t: /" || true
done
echo "fuzz.sh: no crash in ${#targets[@]} target(s), ${secs}s each"
