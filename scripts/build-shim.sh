#!/usr/bin/env bash
# Builds skiff-shim, the per-container monitor skiff's monitors exec into, as a static binary
# and puts it next to the skiff binary of the same profile, where the runtime looks for it.
# Static, so a running container costs about a megabyte of memory instead of several: a
# dynamically linked Rust binary maps glibc and the loader into every shim.
#
# usage: scripts/build-shim.sh [debug|release]   (default: debug)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-debug}
target_dir="${CARGO_TARGET_DIR:-target}"
triple=$(rustc -vV | sed -n 's/^host: //p')
flags=()
[ "$profile" = release ] && flags+=(--release)
# An explicit --target keeps RUSTFLAGS off build scripts and off the host build's cache.
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build "${flags[@]}" -p skiff-shim --bin skiff-shim --target "$triple"
mkdir -p "$target_dir/$profile"
cp "$target_dir/$triple/$profile/skiff-shim" "$target_dir/$profile/skiff-shim"
echo "built $target_dir/$profile/skiff-shim (static)"
