#!/bin/sh
# Generates the Python gRPC stubs that oclip_client.py imports:
#
#   OUT_DIR/oclip/v1/clip_pb2.py, clip_pb2_grpc.py         (proto/oclip/v1/clip.proto)
#   OUT_DIR/grpc_health/v1/health_pb2.py, health_pb2_grpc.py (proto/grpc/health/v1/health.proto)
#
# The health stubs are laid out as the grpcio-health-checking package lays out
# its own (module grpc_health.v1), so `from grpc_health.v1 import health_pb2`
# works whether that package is installed or not; they cannot live under
# OUT_DIR/grpc/, which the grpc runtime package would shadow. The wire names
# (grpc.health.v1.Health) are unchanged.
#
# Usage: generate_stubs.sh OUT_DIR
# Tools: protoc and grpc_python_plugin (Debian: protobuf-compiler,
# protobuf-compiler-grpc), found on PATH or named by $PROTOC and
# $GRPC_PYTHON_PLUGIN. Stubs are build outputs: never commit them.
set -eu

if [ "$#" -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 OUT_DIR" >&2
  exit 2
fi
out_dir=$1
here=$(cd "$(dirname "$0")" && pwd)
proto_dir=$(cd "$here/../../proto" && pwd)
protoc=${PROTOC:-protoc}
plugin=${GRPC_PYTHON_PLUGIN:-$(command -v grpc_python_plugin || true)}

if ! command -v "$protoc" >/dev/null 2>&1; then
  echo "$0: protoc not found (install protobuf-compiler or set PROTOC)" >&2
  exit 1
fi
if [ -z "$plugin" ] || [ ! -x "$plugin" ]; then
  echo "$0: grpc_python_plugin not found (install protobuf-compiler-grpc or set GRPC_PYTHON_PLUGIN)" >&2
  exit 1
fi

mkdir -p "$out_dir"

"$protoc" --proto_path="$proto_dir" \
  --python_out="$out_dir" --grpc_python_out="$out_dir" \
  --plugin=protoc-gen-grpc_python="$plugin" \
  "$proto_dir/oclip/v1/clip.proto"

# health.proto is compiled from a copy under grpc_health/v1/ (see above).
health_root=$(mktemp -d)
trap 'rm -rf "$health_root"' EXIT
mkdir -p "$health_root/grpc_health/v1"
cp "$proto_dir/grpc/health/v1/health.proto" "$health_root/grpc_health/v1/health.proto"
"$protoc" --proto_path="$health_root" \
  --python_out="$out_dir" --grpc_python_out="$out_dir" \
  --plugin=protoc-gen-grpc_python="$plugin" \
  "$health_root/grpc_health/v1/health.proto"
