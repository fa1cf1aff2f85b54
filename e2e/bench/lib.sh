# Shared by the benchmarks that run skiff's runtime beside containerd: installs the Debian
# packages named in "$@" that are missing, then builds the release binary, the CRI client and
# the shim. Sets $skiff and $bench. Sourced from the repository root.
need=("$@")
missing=()
for p in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/skiff-target}"
cargo build --release -q --bin skiff -p skiff
cargo build --release -q -p e2e --bin cri-bench
bash scripts/build-shim.sh release >/dev/null
# shellcheck disable=SC2034
skiff="$CARGO_TARGET_DIR/release/skiff"
# shellcheck disable=SC2034
bench="$CARGO_TARGET_DIR/release/cri-bench"
