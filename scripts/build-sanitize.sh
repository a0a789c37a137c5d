#!/usr/bin/env bash
# Configures and builds the clang ASan + UBSan build in ./build-sanitize:
# the test executables and the `oclip` binary instrumented, plus the libFuzzer
# targets of tests/fuzz (OCLIP_BUILD_FUZZERS). One directory serves both
# scripts/test.sh's sanitizer test run and scripts/fuzz.sh.
#   build-sanitize.sh [NINJA_TARGET...]     (default: everything)
# -O1 and line tables only: the instrumented code is oclip's, the heavy math
# is in (uninstrumented) LibTorch, and full debug info would double link
# times for nothing the sanitizers' stack traces need.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${OCLIP_SANITIZE_BUILD_DIR:-build-sanitize}"
cxx="${OCLIP_SANITIZE_CXX:-clang++-14}"
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER="$cxx" -DOCLIP_BUILD_FUZZERS=ON \
  "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -gline-tables-only -DNDEBUG" >/dev/null
cmake --build "$dir" --parallel "$(nproc)" ${1:+--target "$@"}
