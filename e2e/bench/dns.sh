#!/usr/bin/env bash
# Cluster DNS benchmark (figures, not a pass/fail test): a Service's name asked of skiff's
# node-local DNS at 1,000 queries/s for 20 s (issue 13's target: p99 at most 1 ms), beside
# dnsmasq (Debian's, a small reference DNS server) answering the same name from a host record
# in the same run, through the same client (`dns-bench`, in e2e). The queries come from the
# node itself, not from a pod: the path a pod adds is its veth and bridge.
#
# usage: bash e2e/bench/dns.sh        (as root; RATE=1000 DURATION=20 by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=e2e/bench/lib.sh
source e2e/bench/lib.sh containernetworking-plugins iptables nftables dnsmasq-base
cargo build --release -q -p e2e --bin dns-bench
RATE=${RATE:-1000}
DURATION=${DURATION:-20}
dnsbench="$CARGO_TARGET_DIR/release/dns-bench"
work=$(mktemp -d /tmp/skiff-dnsbench-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
"$skiff" up --data-dir "$work/data" --listen "127.0.0.1:$(free_port)" --agent-port "$(free_port)" \
    --node-name dns-bench \
    >"$work/up.log" 2>&1 &
pids+=($!)
kc=(--kubeconfig "$work/data/kubeconfig")
for _ in $(seq 1 100); do
    "$skiff" "${kc[@]}" get node dns-bench -o json 2>/dev/null | grep -q '"type": *"Ready"' && break
    sleep 0.2
done
cat >"$work/svc.yaml" <<'YAML'
apiVersion: v1
kind: Service
metadata: {name: bench}
spec:
  ports: [{port: 80}]
YAML
"$skiff" "${kc[@]}" apply -f "$work/svc.yaml" >/dev/null
name=bench.default.svc.cluster.local
for _ in $(seq 1 50); do
    "$dnsbench" 10.96.0.10:53 "$name" 10 1 | grep -q 'answered=10' && break
    sleep 0.2
done
echo "--- skiff cluster DNS (node agent, 10.96.0.10:53)"
"$dnsbench" 10.96.0.10:53 "$name" "$RATE" "$DURATION"
dnsmasq --no-daemon --keep-in-foreground --port=5353 --listen-address=127.0.0.1 \
    --bind-interfaces --no-resolv --no-hosts --address="/$name/10.96.5.5" \
    >"$work/dnsmasq.log" 2>&1 &
pids+=($!)
sleep 0.5
echo "--- dnsmasq $(dnsmasq --version | head -1 | awk '{print $3}') (127.0.0.1:5353)"
"$dnsbench" 127.0.0.1:5353 "$name" "$RATE" "$DURATION"
