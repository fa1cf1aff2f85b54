#!/usr/bin/env bash
# Scheduler benchmark (figures, not a pass/fail test): NODES Node objects without agents
# (Ready, 32 cpu, 128Gi, 110 pods, ten zones) are made cordoned, PODS pods wait for them, then
# every node is uncordoned and the time from the first uncordon to the last binding is
# measured on a single-member `skiff controller` (issue 13's target: at least 3,000 pods/s at
# 5,000 nodes and 10,000 pods). Prints the member's RSS after the run. kube-scheduler cannot
# run here (no Kubernetes binaries), so there is nothing beside it.
#
# usage: bash e2e/bench/scheduler.sh     (SIZES="1000:3000 5000:10000" by default, NODES:PODS)
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/skiff-target}"
cargo build --release -q --bin skiff -p skiff
cargo build --release -q -p e2e --bin sched-bench
skiff="$CARGO_TARGET_DIR/release/skiff"
SIZES=${SIZES:-"1000:3000 5000:10000"}
work=$(mktemp -d /tmp/skiff-sched-bench-XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

for size in $SIZES; do
    nodes=${size%:*}; pods=${size#*:}
    api=$(port); peer=$(port)
    rm -rf "$work/data"
    # Node monitoring would mark the agentless nodes Unknown after its grace period.
    "$skiff" controller --name bench --data-dir "$work/data" --listen "127.0.0.1:$api" \
        --peer-listen "127.0.0.1:$peer" --node-monitor-grace-period 1h \
        --cluster-cidr 10.128.0.0/9 >"$work/controller.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$api/readyz" >/dev/null 2>&1 && break; kill -0 "$pid" 2>/dev/null || { cat "$work/controller.log" >&2; exit 1; }; sleep 0.2; done
    line=$("$CARGO_TARGET_DIR/release/sched-bench" "http://127.0.0.1:$api" "$nodes" "$pods")
    echo "$line member_rss_mib=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$pid/status")"
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
done
