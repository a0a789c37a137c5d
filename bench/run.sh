#!/usr/bin/env bash
# Side-by-side benchmarks: oclip and the Python reference in one run, on one
# machine. Prints JSON lines (and, after the model section, a table as "#"
# comment lines). Needs a build (scripts/build.sh) and, for the Python side,
# Debian's Python packages for /usr/bin/python3 (not a pyenv/venv python3):
#   scripts/install-deps.sh --bench   (python3-torch, python3-numpy,
#                                      python3-pil, python3-regex)
# python3-torch is Debian's PyTorch 1.13, the LibTorch oclip links; OpenCLIP
# itself is not needed: bench/python/encode_reference.py is its model in plain
# torch.nn (`/usr/bin/python3 bench/python/encode_reference.py --check` proves
# it computes OpenCLIP's features on the tiny fixtures).
#
#   bench/run.sh [IMAGE]
# Environment: OCLIP_BINARY (default build/cli/oclip), OCLIP_BENCH_SECONDS (5),
# OCLIP_BENCH_BATCH (32), OCLIP_BENCH_THREADS (model section, 2),
# OCLIP_BENCH_MODELS ("ViT-B-32 RN50"), OCLIP_BENCH_PRECISIONS ("fp32 bf16 int8"),
# OCLIP_BENCH_TEXT_TOKENS (tokens per caption on oclip's side, 12; Python's
# reference always computes the whole context of 77),
# OCLIP_BENCH_ONLY (comma-separated sections to run: preprocess, tokenize,
# models, serve, embed, index; default all).
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:-../shared/reference/images/landscape.jpg}"
oclip="${OCLIP_BINARY:-build/cli/oclip}"
seconds="${OCLIP_BENCH_SECONDS:-5}"
batch="${OCLIP_BENCH_BATCH:-32}"
bpe="${OCLIP_BPE:-../shared/reference/bpe_simple_vocab_16e6.txt.gz}"
only="${OCLIP_BENCH_ONLY:-preprocess,tokenize,models,serve,embed,index}"
want() { [[ ",$only," == *",$1,"* ]]; }
for section in ${only//,/ }; do
  case "$section" in
    preprocess | tokenize | models | serve | embed | index) ;;
    *) echo "bench/run.sh: unknown section '$section' in OCLIP_BENCH_ONLY" >&2; exit 2 ;;
  esac
done

if want models && ! /usr/bin/python3 -c "import torch" 2>/dev/null; then
  echo "bench/run.sh: /usr/bin/python3 cannot import torch; run scripts/install-deps.sh --bench" >&2
  exit 1
fi
work="$(mktemp -d)"
trap 'kill "${server_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# commit: $(git rev-parse --short HEAD) date: $(date -u +%F)"
# Debian's OpenBLAS 0.3.21 picks its kernels by CPU model; on a model newer
# than it knows (Emerald Rapids, model 207, for one) it falls back to its SSE3
# "Prescott" kernels, ~4x slower, and Python's fp32 reference with it. Both
# sides then run with the AVX-512 kernels instead, so that the reference is
# what a tuned Python install gets; the header says so.
# The untuned reference, Python as Debian installs it, is measured too (fp32,
# the "python*" rows): it is what a user of python3-torch gets here.
as_installed=0
if want models && [[ -z "${OPENBLAS_CORETYPE:-}" ]] && grep -qw avx512f /proc/cpuinfo; then
  openblas_core="$(OPENBLAS_VERBOSE=2 /usr/bin/python3 -c \
    'import torch; torch.ones(64, 64) @ torch.ones(64, 64)' 2>&1 | sed -n 's/^Core: //p' | head -n 1)"
  if [[ "$openblas_core" == "Prescott" ]]; then
    export OPENBLAS_CORETYPE=SkylakeX
    as_installed=1
    echo "# OpenBLAS did not recognize this CPU (core Prescott): OPENBLAS_CORETYPE=SkylakeX for both sides"
  fi
fi
if want preprocess; then
  /usr/bin/python3 bench/python/preprocess_reference.py "$image" 224 "$seconds"
  "$oclip" bench preprocess --image "$image" --size 224 --seconds "$seconds"
  "$oclip" bench preprocess --image "$image" --size 224 --seconds "$seconds" --fast
fi
if want tokenize; then
  /usr/bin/python3 bench/python/tokenize_reference.py "$bpe" "$seconds"
  "$oclip" bench tokenize --tokenizer "$bpe" --seconds "$seconds"
fi

# Models: encode throughput of each tower with random weights, for each model
# and precision the Python reference (OpenCLIP v2.23's model in plain torch.nn,
# eager, as a Python user runs it: bf16 = model.to(torch.bfloat16), int8 =
# torch.quantization.quantize_dynamic on nn.Linear) and then `oclip bench
# encode`, one after the other, same batch for images and texts (oclip has one
# --batch; the texts are 12-token captions padded to 77 on both sides), same
# threads. A run that fails is shown as such and the section goes on. Then a
# table: rates and their ratio to Python fp32 of the same model.
if want models; then
  threads="${OCLIP_BENCH_THREADS:-2}"
  # oclip's text towers stop at the batch's longest caption; Python computes
  # all 77 positions whatever the caption. 77 measures oclip's worst case.
  text_tokens="${OCLIP_BENCH_TEXT_TOKENS:-12}"
  results="$work/models.tsv"
  : >"$results"
  # record IMPL MODEL PRECISION COMMAND...: runs the command, prints its JSON
  # line and adds it to the table's rows, or a FAILED row with its last error.
  record() {
    local impl="$1" model="$2" precision="$3" line
    shift 3
    if line="$("$@" 2>"$work/err")"; then
      echo "$line"
      printf '%s\t%s\t%s\t%s\n' "$impl" "$model" "$precision" "$line" >>"$results"
    else
      printf '%s\t%s\t%s\tFAILED: %s\n' "$impl" "$model" "$precision" \
        "$(tail -n 1 "$work/err")" >>"$results"
    fi
  }
  # python_reference MODEL PRECISION [PREFIX...]: the Python reference, run
  # under the command prefix given (none: as is).
  python_reference() {
    local model="$1" precision="$2"
    shift 2
    "$@" /usr/bin/python3 bench/python/encode_reference.py --model "$model" \
      --precision "$precision" --batch-images "$batch" --batch-texts "$batch" \
      --threads "$threads" --seconds "$seconds"
  }
  for model in ${OCLIP_BENCH_MODELS:-ViT-B-32 RN50}; do
    if [ "$as_installed" = 1 ]; then
      record 'python*' "$model" fp32 python_reference "$model" fp32 env -u OPENBLAS_CORETYPE
    fi
    for precision in ${OCLIP_BENCH_PRECISIONS:-fp32 bf16 int8}; do
      record python "$model" "$precision" python_reference "$model" "$precision"
      # fp32 is oclip's default precision; leaving the flag out for it keeps
      # the fp32 row working on builds from before --precision existed.
      precision_flag=()
      if [ "$precision" != fp32 ]; then precision_flag=(--precision "$precision"); fi
      record oclip "$model" "$precision" "$oclip" bench encode --model "$model" \
        --pretrained random "${precision_flag[@]}" --batch "$batch" --threads "$threads" \
        --text-tokens "$text_tokens" --seconds "$seconds"
    done
  done
  /usr/bin/python3 - "$results" "$batch" "$threads" "$text_tokens" <<'TABLE'
import json, sys
rows = [line.rstrip("\n").split("\t", 3) for line in open(sys.argv[1])]
base = {"python": {}, "python*": {}}  # fp32 references by model
for impl, model, precision, data in rows:
    if impl in base and precision == "fp32" and not data.startswith("FAILED"):
        base[impl][model] = json.loads(data)
def ratio(value, reference, model, key):
    known = base[reference].get(model, {}).get(key)
    return "%.2fx" % (value / known) if known else "-"
print("# %-9s %-5s %-7s %9s %7s %7s %9s %7s %7s" % (
    "model", "prec", "impl", "images/s", "ratio", "ratio*", "texts/s", "ratio", "ratio*"))
for impl, model, precision, data in rows:
    if data.startswith("FAILED"):
        print("# %-9s %-5s %-7s %s" % (model, precision, impl, data))
        continue
    r = json.loads(data)
    images, texts = r["images_per_second"], r["texts_per_second"]
    print("# %-9s %-5s %-7s %9.2f %7s %7s %9.2f %7s %7s" % (
        model, precision, impl, images,
        ratio(images, "python", model, "images_per_second"),
        ratio(images, "python*", model, "images_per_second"), texts,
        ratio(texts, "python", model, "texts_per_second"),
        ratio(texts, "python*", model, "texts_per_second")))
batch, threads, tokens = (sys.argv[i] if len(sys.argv) > i else "?" for i in (2, 3, 4))
print("# ratio: to Python fp32 of the same model; batch %s, %s threads; oclip's captions"
      " %s tokens (Python's: 77 computed)" % (batch, threads, tokens))
if base["python*"]:
    print("# python*, ratio*: Python fp32 as installed (OpenBLAS's own kernel choice, no"
          " OPENBLAS_CORETYPE), and ratios to it")
TABLE
fi

# Serving: ViT-B-32 with random weights (fp32), the offline model throughput
# at one batch size against a saturated `oclip serve` at the same max batch
# size, then single images on an idle server (what the server adds to the
# model time; its own metrics give the model and preprocessing times).
if want serve; then
  serve_seconds="${OCLIP_BENCH_SERVE_SECONDS:-30}"
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
fi

# Embedding job: `oclip embed` over a folder of copies of the image against the
# offline model at the same batch size (measured before and after the job).
if want embed; then
  "$oclip" bench embed --model ViT-B-32 --pretrained random --image "$image" \
    --samples "${OCLIP_BENCH_EMBED_SAMPLES:-1024}" --batch-size "$batch" --seconds "$seconds"
fi

# Index: build time and peak memory of `oclip index build` over N synthetic
# clustered 512-d vectors (float16 partitions, as `oclip embed` writes them),
# then batch and single-query search speed and held-out recall@10.
if want index; then
  "$oclip" bench index --vectors "${OCLIP_BENCH_INDEX_VECTORS:-1000000}" --dim 512 \
    --max-index-memory-usage 4G --min-recall 0.9 --seconds "$seconds"
fi
