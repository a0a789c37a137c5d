#!/usr/bin/env bash
# Configures and builds oclip in ./build (ccache + precompiled headers).
# Extra arguments go to cmake, e.g. -DCMAKE_PREFIX_PATH=<torch>/share/cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
cmake --build build --parallel "$(nproc)"
