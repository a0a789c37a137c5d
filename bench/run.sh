#!/usr/bin/env bash
# Side-by-side benchmarks: oclip and the Python reference in one run, on one
# machine. Prints JSON lines. Needs a build (scripts/build.sh) and, for the
# Python side, Debian's python3-pil, python3-numpy and python3-regex.
#   bench/run.sh [IMAGE]
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:-../shared/reference/images/landscape.jpg}"
oclip="${OCLIP_BINARY:-build/cli/oclip}"
seconds="${OCLIP_BENCH_SECONDS:-5}"

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# commit: $(git rev-parse --short HEAD) date: $(date -u +%F)"
/usr/bin/python3 bench/python/preprocess_reference.py "$image" 224 "$seconds"
"$oclip" bench preprocess --image "$image" --size 224 --seconds "$seconds"
"$oclip" bench preprocess --image "$image" --size 224 --seconds "$seconds" --fast
bpe="${OCLIP_BPE:-../shared/reference/bpe_simple_vocab_16e6.txt.gz}"
/usr/bin/python3 bench/python/tokenize_reference.py "$bpe" "$seconds"
"$oclip" bench tokenize --tokenizer "$bpe" --seconds "$seconds"

# Serving: ViT-B-32 with random weights (fp32), the offline model throughput
# at one batch size against a saturated `oclip serve` at the same max batch
# size, then single images on an idle server (what the server adds to the
# model time; its own metrics give the model and preprocessing times).
batch="${OCLIP_BENCH_BATCH:-32}"
serve_seconds="${OCLIP_BENCH_SERVE_SECONDS:-30}"
work="$(mktemp -d)"
trap 'kill "${server_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
/usr/bin/python3 -c "from PIL import Image; Image.open('$image').convert('RGB').resize((224, 224)).save('$work/224.jpg', quality=90)"
"$oclip" bench encode --model ViT-B-32 --pretrained random --batch "$batch" --seconds "$seconds"
"$oclip" bench encode --model ViT-B-32 --pretrained random --batch 1 --seconds "$seconds"
"$oclip" serve --model ViT-B-32 --pretrained random --tokenizer "$bpe" --host 127.0.0.1 \
  --port 0 --metrics-host 127.0.0.1 --metrics-port 0 --max-batch-size "$batch" \
  >"$work/serve.out" 2>"$work/serve.err" &
server_pid=$!
until grep -q "ready" "$work/serve.out"; do
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/serve.err" >&2; exit 1; }
  sleep 0.2
done
address="$(grep -o 'listening on [0-9.:]*' "$work/serve.out" | cut -d' ' -f3)"
metrics="$(grep -o 'metrics on [0-9.:]*' "$work/serve.out" | cut -d' ' -f3)"
"$oclip" bench serve --address "$address" --image "$image" --streams 8 --items 8 \
  --seconds "$serve_seconds" --warmup-calls 1
for single in "$image" "$work/224.jpg"; do
  "$oclip" bench serve --address "$address" --metrics-address "$metrics" --image "$single" \
    --streams 1 --items 1 --seconds 15 --warmup-calls 0
done
kill "$server_pid"
wait "$server_pid" || true

# Embedding job: `oclip embed` over a folder of copies of the image against the
# offline model at the same batch size (measured before and after the job).
"$oclip" bench embed --model ViT-B-32 --pretrained random --image "$image" \
  --samples "${OCLIP_BENCH_EMBED_SAMPLES:-1024}" --batch-size "$batch" --seconds "$seconds"

# Index: build time and peak memory of `oclip index build` over N synthetic
# clustered 512-d vectors (float16 partitions, as `oclip embed` writes them),
# then batch and single-query search speed and held-out recall@10.
"$oclip" bench index --vectors "${OCLIP_BENCH_INDEX_VECTORS:-1000000}" --dim 512 \
  --max-index-memory-usage 4G --min-recall 0.9 --seconds "$seconds"
