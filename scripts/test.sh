#!/usr/bin/env bash
# The whole test suite from a clean clone: install dependencies, build, run
# every GoogleTest through CTest. Tests read ../shared/reference (or
# $OCLIP_REFERENCE_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
# Helm and the npm packages of the deployment tests (tests/deploy/), into the
# build tree; the tests themselves run offline.
scripts/install-deploy-tools.sh build/deploy-tools
ctest --test-dir build --output-on-failure --parallel "$(nproc)" --timeout 300
