#!/usr/bin/env bash
# The Docker image's runtime stage without Docker (this machine has no engine):
# stages the runtime layout with scripts/stage-runtime.sh, the script the
# Dockerfile's final stage uses, and checks that it is complete and works
# on its own:
#   - the Dockerfile really stages with that script and installs the package
#     list it writes (so this test and the image cannot drift apart);
#   - bin/oclip's RUNPATH points into the prefix, never into the build tree;
#   - every library bin/oclip loads is in the prefix or owned by a package of
#     share/oclip/runtime-packages.txt (what the image installs);
#   - with an empty environment (no LD_LIBRARY_PATH, PATH of the image's base)
#     `oclip serve --help` runs, `oclip serve` serves the tiny ViT fixture from
#     the staged prefix, `oclip client health` from the prefix reports it
#     SERVING (server and model), /metrics answers, and SIGTERM exits 0.
#
#   runtime_stage_test.sh SOURCE_DIR BUILD_DIR REFERENCE_DIR
# Prints "N passed, N failed"; exits 1 on any failure.
set -uo pipefail

source_dir=$1
build_dir=$2
# $OCLIP_REFERENCE_DIR overrides the reference folder, as for the C++ tests.
reference_dir=${OCLIP_REFERENCE_DIR:-$3}

passed=0
failed=0
check() {  # check NAME COMMAND...: runs COMMAND, records the outcome.
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
  fi
}
finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit $?
}

scratch=$(mktemp -d "${TMPDIR:-/tmp}/oclip-runtime-stage.XXXXXX")
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null
  fi
  rm -rf "$scratch"
}
trap cleanup EXIT

prefix=$scratch/opt/oclip
if ! "$source_dir/scripts/stage-runtime.sh" "$build_dir" "$prefix"; then
  echo "FAIL stage-runtime.sh"
  failed=$((failed + 1))
  finish
fi

# --- The Dockerfile uses this layout. -------------------------------------
dockerfile=$source_dir/Dockerfile
dockerfile_stages_with_script() {
  grep -Eq '(^RUN|&&)\s+scripts/stage-runtime\.sh build /opt/oclip$' "$dockerfile"
}
dockerfile_installs_package_list() {
  grep -q 'COPY --from=build /opt/oclip /opt/oclip' "$dockerfile" &&
    grep -q '/opt/oclip/share/oclip/runtime-packages.txt' "$dockerfile"
}
check "Dockerfile stages with scripts/stage-runtime.sh" dockerfile_stages_with_script
check "Dockerfile copies /opt/oclip and installs runtime-packages.txt" dockerfile_installs_package_list

# --- Layout. ----------------------------------------------------------------
check "bin/oclip is executable" test -x "$prefix/bin/oclip"
check "share/oclip/server.example.yaml" test -s "$prefix/share/oclip/server.example.yaml"
check "share/oclip/proto/oclip/v1/clip.proto" test -s "$prefix/share/oclip/proto/oclip/v1/clip.proto"
check "share/oclip/proto/grpc/health/v1/health.proto" \
  test -s "$prefix/share/oclip/proto/grpc/health/v1/health.proto"
check "share/oclip/examples/python/oclip_client.py" \
  test -s "$prefix/share/oclip/examples/python/oclip_client.py"
check "runtime-packages.txt lists packages" test -s "$prefix/share/oclip/runtime-packages.txt"
check "runtime-packages.txt has ca-certificates (oclip fetch over HTTPS)" \
  grep -qx ca-certificates "$prefix/share/oclip/runtime-packages.txt"

runpath_is_relocatable() {
  local runpath
  runpath=$(readelf -d "$prefix/bin/oclip" | awk '/RUNPATH|RPATH/ { print $NF }' | tr -d '[]')
  echo "     RUNPATH: ${runpath:-(none)}"
  [ "$runpath" = '$ORIGIN/../lib/oclip' ]
}
check "RUNPATH is \$ORIGIN/../lib/oclip (nothing from the build tree)" runpath_is_relocatable

# Every loaded library: inside the prefix, or owned by a listed package
# (asked of dpkg independently of stage-runtime.sh, in one call).
libraries_are_provided() {
  local ok=0 library real candidate owner line
  local -A owner_of=()
  local -a libraries candidates
  mapfile -t libraries < <(env -i ldd "$prefix/bin/oclip" |
    awk '/=>/ && $3 ~ /^\// { print $3; next } /^\s*\// { print $1 }' | grep -v "^$prefix/")
  for library in "${libraries[@]}"; do
    real=$(readlink -f "$library")
    candidates+=("$real" "$library" "${real#/usr}" "/usr${real}")
  done
  while IFS= read -r line; do
    owner_of["${line##*: }"]=$(sed -E 's/^([^:,]+).*/\1/' <<<"${line%: *}")
  done < <(dpkg-query -S "${candidates[@]}" 2>/dev/null | grep -v '^diversion')
  echo "     ${#libraries[@]} libraries outside the prefix"
  for library in "${libraries[@]}"; do
    real=$(readlink -f "$library")
    owner=""
    for candidate in "$real" "$library" "${real#/usr}" "/usr${real}"; do
      owner=${owner_of[$candidate]:-}
      [ -n "$owner" ] && break
    done
    if [ -z "$owner" ]; then
      echo "     $library: in no package and not bundled"
      ok=1
    elif ! grep -qx "$owner" "$prefix/share/oclip/runtime-packages.txt"; then
      echo "     $library: package $owner is not in runtime-packages.txt"
      ok=1
    fi
  done
  [ "${#libraries[@]}" -gt 0 ] && return $ok
}
check "every library bin/oclip loads is bundled or in runtime-packages.txt" libraries_are_provided

# --- Running from the prefix, in an empty environment. ----------------------
home=$scratch/home
mkdir -p "$home" "$scratch/cache" "$scratch/cwd"
image_env=(env -i "HOME=$home" "PATH=$prefix/bin:/usr/sbin:/usr/bin:/sbin:/bin"
           "OCLIP_CACHE=$scratch/cache")

serve_help() {
  local help
  help=$(cd "$scratch/cwd" && "${image_env[@]}" oclip serve --help) || return 1
  grep -q -- '--config' <<<"$help" && grep -q -- '--metrics-port' <<<"$help"
}
check "oclip serve --help from the prefix" serve_help

# The server's stdout goes through a FIFO so that its "listening on" line is
# read as soon as it is printed (no sleeping).
fifo=$scratch/serve.out
mkfifo "$fifo"
(cd "$scratch/cwd" && exec "${image_env[@]}" oclip serve \
  --model "$reference_dir/tiny-vit.json" \
  --pretrained "$reference_dir/tiny-vit.safetensors" \
  --tokenizer "$reference_dir/bpe_simple_vocab_16e6.txt.gz" \
  --name tiny-vit --host 127.0.0.1 --port 0 --metrics-host 127.0.0.1 --metrics-port 0 \
  --threads 1 --preprocess-threads 1 --log-json) >"$fifo" 2>"$scratch/serve.err" &
server_pid=$!
exec 3<"$fifo"
listening=""
if ! read -r -t 60 listening <&3; then
  echo "FAIL oclip serve did not start; its stderr:"
  cat "$scratch/serve.err"
  failed=$((failed + 1))
  finish
fi
echo "     $listening"
# "oclip serve: listening on 127.0.0.1:PORT (metrics on 127.0.0.1:MPORT)"
port=$(sed -E 's/.*listening on [^:]+:([0-9]+).*/\1/' <<<"$listening")
metrics_port=$(sed -E 's/.*metrics on [^:]+:([0-9]+).*/\1/' <<<"$listening")
# Keep draining stdout so that the server never blocks on a full pipe.
cat <&3 >"$scratch/serve.stdout" &

health() {  # health [FLAGS]
  (cd "$scratch/cwd" && "${image_env[@]}" oclip client health --address "127.0.0.1:$port" "$@")
}
check "oclip client health --wait (the whole server) is SERVING" health --wait --timeout 60s
check "oclip client health --service tiny-vit is SERVING" health --service tiny-vit
health_of_unknown_model_fails() { ! health --service no-such-model >/dev/null 2>&1; }
check "oclip client health of an unknown model fails" health_of_unknown_model_fails

metrics_page() {
  local page
  exec 4<>"/dev/tcp/127.0.0.1/$metrics_port" || return 1
  printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&4
  page=$(timeout 30 cat <&4)
  exec 4<&-
  grep -q '^HTTP/1\.[01] 200' <<<"$page" && grep -q '^oclip_model_ready{model="tiny-vit"} 1' <<<"$page"
}
check "GET /metrics reports oclip_model_ready 1" metrics_page

sigterm_exits_zero() {
  kill -TERM "$server_pid"
  wait "$server_pid"
  local code=$?
  server_pid=""
  echo "     exit code $code"
  [ "$code" -eq 0 ]
}
check "SIGTERM: graceful exit 0" sigterm_exits_zero
if [ "$failed" -ne 0 ]; then
  echo "--- oclip serve stderr:"
  tail -n 30 "$scratch/serve.err"
fi
finish
