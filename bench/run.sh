#!/usr/bin/env bash
# Side-by-side benchmarks: oclip and the Python reference in one run, on one
# machine. Prints JSON lines. Needs a build (scripts/build.sh) and, for the
# Python side, Debian's python3-pil, python3-numpy and python3-regex.
#   bench/run.sh [IMAGE]
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:-../shared/reference/images/landscape.jpg}"
oclip=build/cli/oclip
seconds="${OCLIP_BENCH_SECONDS:-5}"

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# commit: $(git rev-parse --short HEAD) date: $(date -u +%F)"
/usr/bin/python3 bench/python/preprocess_reference.py "$image" 224 "$seconds"
"$oclip" bench preprocess --image "$image" --size 224 --seconds "$seconds"
"$oclip" bench preprocess --image "$image" --size 224 --seconds "$seconds" --fast
bpe="${OCLIP_BPE:-../shared/reference/bpe_simple_vocab_16e6.txt.gz}"
/usr/bin/python3 bench/python/tokenize_reference.py "$bpe" "$seconds"
"$oclip" bench tokenize --tokenizer "$bpe" --seconds "$seconds"
