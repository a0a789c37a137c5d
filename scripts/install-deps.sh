#!/usr/bin/env bash
# Installs oclip's build and test dependencies from Debian 12 packages.
# Idempotent: packages already present are left as they are.
set -euo pipefail

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
  # LibTorch's fp32 GEMMs go through libblas.so.3: without OpenBLAS that is
  # Debian's reference BLAS, ~30x slower (measured: ViT-B-32 0.48 vs 16
  # images/s on 2 cores).
  libopenblas0-pthread
  # Training: LibTorch's c10d headers (ProcessGroupGloo) include gloo's.
  libgloo-dev
)

missing=()
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
