#!/usr/bin/env bash
# Soak test of `oclip serve` (issue 9): 64 clients, a mix of valid and invalid
# requests, for SECONDS (default 600); prints one JSON report and exits
# non-zero on a wrong answer or a crash.
#   bench/soak.sh [SECONDS] [MODEL]
# MODEL: tiny-vit (default; the reference fixture, so that the server, not the
# model, is what runs most of the time) or a model config name such as
# ViT-B-32 (random weights).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
model="${2:-tiny-vit}"
oclip="${OCLIP_BINARY:-build/cli/oclip}"
reference="${OCLIP_REFERENCE_DIR:-../shared/reference}"
if [[ "$model" == tiny-vit ]]; then
  weights=(--model "$reference/tiny-vit.json" --pretrained "$reference/tiny-vit.safetensors")
else
  weights=(--model "$model" --pretrained random)
fi
images=()
for name in landscape.jpg portrait.png gray.jpg wide.webp tiny.png alpha.png CLIP.png; do
  images+=(--image "$reference/images/$name")
done
echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" >&2
echo "# commit: $(git rev-parse --short HEAD) date: $(date -u +%F)" >&2
exec "$oclip" bench soak "${weights[@]}" --tokenizer "$reference/bpe_simple_vocab_16e6.txt.gz" \
  "${images[@]}" --clients "${OCLIP_SOAK_CLIENTS:-64}" --seconds "$seconds"
