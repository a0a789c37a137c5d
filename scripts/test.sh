#!/usr/bin/env bash
# The whole test suite from a clean clone: install dependencies, build, run
# every GoogleTest through CTest; then the same tests again in the clang
# ASan + UBSan build (build-sanitize), and every fuzz target for a short
# budget (scripts/fuzz.sh). Tests read ../shared/reference (or
# $OCLIP_REFERENCE_DIR). CI runs exactly this (.ci/run).
#
#   OCLIP_TEST_SANITIZERS=0   skip the sanitizer build, its tests and fuzzing
#                             (on a 2-core machine they add ~35 min to the
#                             ~25 of the normal build and tests)
#   OCLIP_FUZZ_SECONDS=N      seconds per fuzz target (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
# Prints each stage's start and the minutes since the run began, so a slow
# stage shows in the log against CI's time budget.
started=$(date +%s)
stage() { echo "== test.sh: $1 (at $(( ($(date +%s) - started) / 60 )) min)"; }
stage "dependencies"
scripts/install-deps.sh
stage "build"
scripts/build.sh
# Helm and the npm packages of the deployment tests (tests/deploy/), into the
# build tree; the tests themselves run offline.
scripts/install-deploy-tools.sh build/deploy-tools
# Tests run side by side, each with LibTorch's OpenMP threads: waiting threads
# sleep instead of spinning, or two tests' spinning threads starve each other
# on a 2-core machine (one training test ran 15x slower so).
export OMP_WAIT_POLICY=PASSIVE
stage "tests"
ctest --test-dir build --output-on-failure --parallel "$(nproc)" --timeout 300

if [ "${OCLIP_TEST_SANITIZERS:-1}" = 0 ]; then exit 0; fi

stage "sanitizer build"
scripts/build-sanitize.sh
stage "sanitizer tests"
(
  # shellcheck source=scripts/sanitizer-env.sh
  . scripts/sanitizer-env.sh
  # Left out of the sanitizer run, by label:
  #   deploy: Helm/Node.js checks of the manifests, no oclip code runs.
  ctest --test-dir build-sanitize --output-on-failure --parallel "$(nproc)" --timeout 600 \
    --label-exclude '^(deploy)$'
)
stage "fuzzing"
# A fixed seed: every run explores the same inputs, so a finding fails the
# commit that makes it reachable, not a later one by luck. Longer runs with
# fresh seeds (scripts/fuzz.sh 600) are what explores further.
OCLIP_FUZZ_SEED="${OCLIP_FUZZ_SEED:-1}" OCLIP_FUZZ_SKIP_BUILD=1 scripts/fuzz.sh "${OCLIP_FUZZ_SECONDS:-30}"
stage "done"
