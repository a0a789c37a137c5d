#!/usr/bin/env bash
# The whole test suite from a clean clone: install dependencies, build, run
# every GoogleTest through CTest; then the same tests again in the clang
# ASan + UBSan build (build-sanitize), and every fuzz target for a short
# budget (scripts/fuzz.sh). Tests read ../shared/reference (or
# $OCLIP_REFERENCE_DIR).
#
#   OCLIP_TEST_SANITIZERS=1   also the sanitizer build, its tests and fuzzing
#                             (off by default: on a shared 2-core machine the
#                             build took over 30 min and the tests 26 min, and
#                             the TLS tests' OpenSSL leak reports are open)
#   OCLIP_FUZZ_SECONDS=N      seconds per fuzz target (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
# Helm and the npm packages of the deployment tests (tests/deploy/), into the
# build tree; the tests themselves run offline.
scripts/install-deploy-tools.sh build/deploy-tools
# Tests run side by side, each with LibTorch's OpenMP threads: waiting threads
# sleep instead of spinning, or two tests' spinning threads starve each other
# on a 2-core machine (one training test ran 15x slower so).
export OMP_WAIT_POLICY=PASSIVE
ctest --test-dir build --output-on-failure --parallel "$(nproc)" --timeout 300

if [ "${OCLIP_TEST_SANITIZERS:-0}" = 0 ]; then exit 0; fi

scripts/build-sanitize.sh
(
  # shellcheck source=scripts/sanitizer-env.sh
  . scripts/sanitizer-env.sh
  # Left out of the sanitizer run, by label:
  #   deploy: Helm/Node.js checks of the manifests, no oclip code runs.
  ctest --test-dir build-sanitize --output-on-failure --parallel "$(nproc)" --timeout 600 \
    --label-exclude '^(deploy)$'
)
OCLIP_FUZZ_SKIP_BUILD=1 scripts/fuzz.sh "${OCLIP_FUZZ_SECONDS:-30}"
