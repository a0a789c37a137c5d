#!/usr/bin/env bash
# From a clean clone to embeddings: install dependencies, build, and encode the
# example images with a randomly initialised ViT-B-32 (no download needed).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
out="${OCLIP_DEMO_OUTPUT:-/tmp/oclip-demo}"
build/cli/oclip encode --model ViT-B-32 --pretrained random \
  --image examples/images/shapes.png --image examples/images/stripes.png --output "$out"
