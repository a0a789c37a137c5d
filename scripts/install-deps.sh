#!/usr/bin/env bash
# Installs oclip's build and test dependencies from Debian 12 packages.
# Idempotent: packages already present are left as they are.
#
#   install-deps.sh                  build + test + CI dependencies
#   install-deps.sh --image          build dependencies only: the Dockerfile's
#                                    build stages (no test tools)
#   install-deps.sh --image --without-libtorch
#                                    the same without Debian's LibTorch: the
#                                    CUDA image builds against the official
#                                    LibTorch CUDA distribution (on Ubuntu,
#                                    the NVIDIA CUDA base)
#   install-deps.sh --bench          also the Python side of bench/run.sh, for
#                                    /usr/bin/python3: Debian's PyTorch 1.13
#                                    (the LibTorch oclip links; OpenCLIP's model
#                                    is bench/python/encode_reference.py), numpy,
#                                    PIL (preprocessing) and regex (tokenizer)
set -euo pipefail

image=0
without_libtorch=0
bench=0
for arg in "$@"; do
  case "$arg" in
    --image) image=1 ;;
    --without-libtorch) without_libtorch=1 ;;
    --bench) bench=1 ;;
    *) echo "usage: $0 [--image] [--without-libtorch] [--bench]" >&2; exit 2 ;;
  esac
done

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev libabsl-dev libspdlog-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libvips-dev
  libjpeg62-turbo-dev libicu-dev zlib1g-dev libcurl4-openssl-dev
  # The server: gRPC + Protobuf (the libprotobuf 3.21 LibTorch links too),
  # yaml-cpp for server.yaml.
  libgrpc++-dev protobuf-compiler protobuf-compiler-grpc libyaml-cpp-dev
  # Embedding jobs and retrieval: tar shards, FAISS, the SQLite metadata store.
  libarchive-dev libfaiss-dev libsqlite3-dev
  # Tests: the Python grpcio client example, TLS certificates made at test time.
  python3-grpcio python3-protobuf python3-numpy openssl
  # Tests: PIL computes the train transform's expected pixels (tests/model).
  python3-pil
  # Tests: Debian's PyTorch runs OpenCLIP's model (bench/python/encode_reference.py)
  # on a checkpoint of `oclip train` (tests/training/train_e2e_test.cc).
  python3-torch
  # LibTorch's fp32 GEMMs go through libblas.so.3: without OpenBLAS that is
  # Debian's reference BLAS, ~30x slower (measured: ViT-B-32 0.48 vs 16
  # images/s on 2 cores).
  libopenblas0-pthread
  # Training: LibTorch's c10d headers (ProcessGroupGloo) include gloo's.
  libgloo-dev
  # Tests: the ASan + UBSan build and the libFuzzer targets (scripts/fuzz.sh)
  # are built with clang; libclang-rt-14-dev holds the sanitizer and
  # libFuzzer runtimes on Debian 12.
  clang-14 libclang-rt-14-dev
)

# Only the test suite needs these (the images leave them out).
test_only=(libgtest-dev libgmock-dev python3-grpcio python3-protobuf python3-numpy openssl
  python3-torch clang-14 libclang-rt-14-dev)
# Opt-in (--bench): the Python reference implementations bench/run.sh times
# next to oclip (bench/python/*.py), run with Debian's /usr/bin/python3.
bench_packages=(python3-torch python3-numpy python3-pil python3-regex)
# The deployment tests: scripts/install-deploy-tools.sh unpacks Helm with
# unzip; tests/deploy/ validates manifests with Node.js (npm packages).
test_tools=(unzip)

selected=()
for p in "${packages[@]}"; do
  if [ "$image" -eq 1 ] && [[ " ${test_only[*]} " == *" $p "* ]]; then continue; fi
  if [ "$without_libtorch" -eq 1 ] && [ "$p" = libtorch-dev ]; then continue; fi
  # Ubuntu (the CUDA image's base) names libjpeg-turbo's package differently.
  if [ "$p" = libjpeg62-turbo-dev ] && grep -qs '^ID=ubuntu' /etc/os-release; then
    p=libjpeg-turbo8-dev
  fi
  selected+=("$p")
done
if [ "$image" -eq 0 ]; then
  selected+=("${test_tools[@]}")
fi
if [ "$bench" -eq 1 ]; then
  for p in "${bench_packages[@]}"; do
    [[ " ${selected[*]} " == *" $p "* ]] || selected+=("$p")
  done
fi
packages=("${selected[@]}")

missing=()
# Node.js may come from another package than Debian's (whose npm is separate):
# only ask apt for it when there is no npm at all.
if [ "$image" -eq 0 ] && ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "installing: ${missing[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
