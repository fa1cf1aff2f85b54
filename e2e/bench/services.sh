#!/usr/bin/env bash
# Service proxy benchmark (figures, not a pass/fail test): how long the node agent's proxy
# takes to make one EndpointSlice change live in the kernel (one endpoint of a random Service
# replaced, then one sync: plan + one nftables transaction over netlink), and the first sync
# of the whole table, at 100, 1,000 and 5,000 Services of 5 endpoints each (issue 13's target:
# p99 at most 100 ms at 1,000 Services and 5,000 endpoints). Each size runs in a network
# namespace of its own, removed afterwards. There is no kube-proxy on this machine to run
# beside it.
#
# usage: bash e2e/bench/services.sh        (as root; ROUNDS=200 changes per size by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/skiff-target}"
cargo build --release -q -p e2e --bin proxy-bench
ROUNDS=${ROUNDS:-200}
ns=skiff-bench-proxy-$$
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT
for size in 100 1000 5000; do
    ip netns del "$ns" 2>/dev/null || true
    ip netns add "$ns"
    ip netns exec "$ns" "$CARGO_TARGET_DIR/release/proxy-bench" "$size" 5 "$ROUNDS"
done
