#!/usr/bin/env bash
# Stages oclip's runtime layout into PREFIX: what the Dockerfile's final stage
# copies, and what tests/deploy/runtime_stage_test.sh runs, so that the image's
# runtime and the tested one are made by the same steps.
#
#   scripts/stage-runtime.sh BUILD_DIR PREFIX
#
# Steps:
#   1. `cmake --install BUILD_DIR --prefix PREFIX --strip`: bin/oclip (RUNPATH
#      $ORIGIN/../lib/oclip) and share/oclip/ (server.example.yaml, the proto,
#      the Python client example).
#   2. Every shared library that bin/oclip loads (ldd: the whole transitive
#      closure) is sorted into one of
#      two kinds:
#        - owned by an installed OS package (dpkg -S): that package's name goes
#          into PREFIX/share/oclip/runtime-packages.txt, which the image's
#          runtime stage installs with apt-get (Debian's for the CPU image,
#          Ubuntu's for the CUDA one);
#        - owned by none (the official LibTorch unpacked in /opt/libtorch, for
#          the CUDA image): copied into PREFIX/lib/oclip/, where the RUNPATH
#          finds it.
#      Packages needed at run time without being linked (ca-certificates for
#      `oclip fetch` over HTTPS) are added to the list.
#   3. A missing library ("not found") is an error: the layout would not start.
#
# BUILD_DIR is a configured and built oclip build tree (target oclip).
# Needs: cmake, ldd, readlink, dpkg-query (Debian/Ubuntu). Exits non-zero with a message
# on any failure.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 BUILD_DIR PREFIX" >&2
  exit 2
fi
build_dir=$1
prefix=$2

# Packages the runtime needs that ldd cannot see.
extra_packages=(ca-certificates)

cmake --install "$build_dir" --prefix "$prefix" --strip >/dev/null
binary="$prefix/bin/oclip"
if [ ! -x "$binary" ]; then
  echo "stage-runtime: $binary was not installed (is the oclip target built in $build_dir?)" >&2
  exit 1
fi

bundle_dir="$prefix/lib/oclip"
mkdir -p "$bundle_dir" "$prefix/share/oclip"

# Libraries the NVIDIA container toolkit mounts from the host's driver at run
# time: never bundled, never packaged, and absent where the image is built.
driver_libraries='^(libcuda\.so\.1|libnvidia-ml\.so\.1)$'

# ldd prints "name => /path (addr)" for resolved libraries, "name => not found"
# for missing ones, and "/lib64/ld-linux-x86-64.so.2 (addr)" for the loader.
# The libraries are found through the build tree's binary, whose build RUNPATH
# still names where they were linked from (/opt/libtorch/lib); the installed
# one already has $ORIGIN/../lib/oclip, which is empty until this script fills
# it. LD_LIBRARY_PATH is dropped so that only RUNPATH and the system paths
# count, as in the image.
unresolved() {  # the ldd lines of missing libraries other than the driver's
  grep "not found" | awk '{ print $1 }' | grep -Ev "$driver_libraries" || true
}
build_binary="$build_dir/cli/oclip"
ldd_output=$(env -u LD_LIBRARY_PATH ldd "$build_binary")
missing=$(unresolved <<<"$ldd_output")
if [ -n "$missing" ]; then
  echo "stage-runtime: $build_binary has unresolved libraries:" $missing >&2
  exit 1
fi

mapfile -t libraries < <(awk '/=>/ && $3 ~ /^\// { print $3; next } /^\s*\// { print $1 }' <<<"$ldd_output")

# The package that owns each library, from one dpkg-query call (one call per
# file takes a minute for LibTorch's ~100 libraries). dpkg knows a file under
# the path its package shipped, which may differ from the resolved one on a
# merged-/usr system (/lib/x86_64-linux-gnu vs /usr/lib/x86_64-linux-gnu), and
# shared-library alternatives (libblas.so.3 -> openblas-pthread/libblas.so.3)
# are owned only at their real path: every spelling is asked for.
candidates_of() {  # the spellings of $1, most specific first
  local path=$1 real
  real=$(readlink -f "$path")
  printf '%s\n' "$real" "$path" "${real#/usr}" "/usr${real}" "${path#/usr}" "/usr${path}"
}
declare -A owner_of=()
mapfile -t all_candidates < <(for library in "${libraries[@]}"; do candidates_of "$library"; done | sort -u)
# "pkg:arch[, pkg2:arch]: /path"; files of no package are reported on stderr.
while IFS= read -r line; do
  owner_of["${line##*: }"]=$(sed -E 's/^([^:,]+).*/\1/' <<<"${line%: *}")
done < <(dpkg-query -S "${all_candidates[@]}" 2>/dev/null | grep -v '^diversion')

packages=("${extra_packages[@]}")
bundled=0
for library in "${libraries[@]}"; do
  owner=""
  while read -r candidate; do
    owner=${owner_of[$candidate]:-}
    [ -n "$owner" ] && break
  done < <(candidates_of "$library")
  if [ -n "$owner" ]; then
    packages+=("$owner")
  else
    # Not from a package: bundle the real file under the name the binary
    # asks for (its SONAME).
    cp -L "$library" "$bundle_dir/$(basename "$library")"
    bundled=$((bundled + 1))
  fi
done
rmdir --ignore-fail-on-non-empty "$bundle_dir"

# The installed binary must now resolve everything from the prefix and the
# system alone.
missing=$(env -u LD_LIBRARY_PATH ldd "$binary" | unresolved)
if [ -n "$missing" ]; then
  echo "stage-runtime: $binary does not find:" $missing >&2
  exit 1
fi

printf '%s\n' "${packages[@]}" | sort -u >"$prefix/share/oclip/runtime-packages.txt"
echo "stage-runtime: $prefix: $(wc -l <"$prefix/share/oclip/runtime-packages.txt") OS packages" \
  "(share/oclip/runtime-packages.txt), $bundled bundled libraries (lib/oclip/)"
