#!/usr/bin/env bash
# `make fuzz`: builds the libFuzzer targets (scripts/build-sanitize.sh, clang
# ASan + UBSan), generates their seed corpora from shared/reference
# (scripts/fuzz-seeds.sh) and runs every target for SECONDS (default 30).
# Fails on any crash, leak, timeout, out-of-memory or sanitizer report; each
# failing input is copied to tests/fuzz/regressions/<target>/, which
# oclip_fuzz_replay_test replays in the normal test run once it is fixed.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# Environment: OCLIP_SANITIZE_BUILD_DIR (default build-sanitize),
# OCLIP_FUZZ_SKIP_BUILD=1 (use the built targets as they are),
# OCLIP_FUZZ_SEED=N (libFuzzer's -seed; default 0, a new one each run).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
shift || true
dir="${OCLIP_SANITIZE_BUILD_DIR:-build-sanitize}"

if [ "${OCLIP_FUZZ_SKIP_BUILD:-0}" != 1 ]; then
  scripts/build-sanitize.sh oclip_fuzzers
fi
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < "$dir/tests/fuzz/targets.txt"
fi

work="$dir/fuzz"
rm -rf "$work/tmp" "$work/artifacts"
mkdir -p "$work/tmp" "$work/corpus" "$work/artifacts"
scripts/fuzz-seeds.sh "$work/seeds" >/dev/null
# shellcheck source=scripts/sanitizer-env.sh
. scripts/sanitizer-env.sh
# One libvips worker: the image target decodes one small image per input.
export VIPS_CONCURRENCY=1
# Scratch files of the targets that read paths.
export TMPDIR="$(cd "$work/tmp" && pwd)"

failed=()
for t in "${targets[@]}"; do
  exe="$dir/tests/fuzz/fuzz_$t"
  [ -x "$exe" ] || { echo "fuzz.sh: no fuzz target $exe" >&2; exit 2; }
  mkdir -p "$work/corpus/$t" "$work/artifacts/$t"
  seeds="$work/seeds/$t"
  mkdir -p "$seeds"
  log="$work/$t.log"
  echo "== fuzz_$t: ${seconds}s"
  # -timeout: one input taking 10 s is a hang; -rss_limit_mb: a few-KB input
  # must not make oclip allocate gigabytes. New corpus entries go to corpus/,
  # the seeds are read only.
  if "$exe" -max_total_time="$seconds" -seed="${OCLIP_FUZZ_SEED:-0}" -timeout=10 -rss_limit_mb=2048 -max_len=131072 \
      -print_final_stats=1 -artifact_prefix="$work/artifacts/$t/" \
      "$work/corpus/$t" "$seeds" >"$log" 2>&1; then
    grep -E '^stat::number_of_executed_units|^#[0-9]+.*DONE' "$log" | tail -n 2 || true
  else
    echo "fuzz_$t FAILED (log: $log):"
    grep -E 'ERROR: |SUMMARY: |fuzz check failed|runtime error' "$log" | head -n 5 || tail -n 20 "$log"
    mkdir -p "tests/fuzz/regressions/$t"
    for a in "$work/artifacts/$t"/*; do
      [ -f "$a" ] || continue
      cp "$a" "tests/fuzz/regressions/$t/"
      echo "   input kept as tests/fuzz/regressions/$t/$(basename "$a")"
    done
    failed+=("$t")
  fi
done
rm -rf "$work/tmp"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets ran ${seconds}s each without a finding"
