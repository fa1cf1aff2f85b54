#!/usr/bin/env bash
# `skiff cluster` benchmark (figures, not a pass/fail test), issue 13's targets:
#   - `skiff cluster create` of 1 control plane + 3 workers until every node is Ready (at most
#     3 s; kind takes tens of seconds for one node and needs Docker, which this machine lacks),
#     and `delete`, over RUNS runs;
#   - memory of one idle worker node (the agent with its runtime, and the runtime's zygote):
#     at most 25 MiB;
#   - the Service data path across nodes: TCP round trips (`rr`, kept connections) and whole
#     connections (`crr`) from a pod on one worker to a pod on another, through the Service's
#     cluster IP against straight to the pod IP, in the same run (ratio at least 0.95);
#   - cluster DNS asked from inside a pod at 1,000 queries/s (p99 at most 1 ms).
# The load generators (`tcp-bench`, `dns-bench`, in e2e) run in the pods' network namespaces
# (nsenter), so their packets take the pods' own path: veth, node bridge, pod routes, the
# service proxy's rules.
#
# usage: bash e2e/bench/cluster.sh      (as root; RUNS=3 SECONDS_EACH=10 by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=e2e/bench/lib.sh
source e2e/bench/lib.sh containernetworking-plugins iptables nftables busybox-static umoci skopeo
cargo build --release -q -p e2e --bin tcp-bench --bin dns-bench
RUNS=${RUNS:-3}
SECS=${SECONDS_EACH:-10}
tcpbench="$CARGO_TARGET_DIR/release/tcp-bench"
dnsbench="$CARGO_TARGET_DIR/release/dns-bench"
work=$(mktemp -d /tmp/skiff-clusterbench-XXXXXX)
export SKIFF_CLUSTERS_DIR="$work/clusters" HOME="$work/home"
unset KUBECONFIG
mkdir -p "$HOME"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    "$skiff" cluster delete bench >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
sh scripts/busybox-image.sh "$work/busybox.tar" >/dev/null
echo "skiff $("$skiff" version | head -1), binary $(du -m "$skiff" | cut -f1) MiB"

echo "--- skiff cluster create bench --nodes 3 (1 control plane + 3 workers, until all Ready)"
for i in $(seq 1 "$RUNS"); do
    t0=$(date +%s.%N)
    out=$("$skiff" cluster create bench --nodes 3)
    t1=$(date +%s.%N)
    ready=$(echo "$out" | sed -n 's/.*Ready in \([0-9.]*\) s.*/\1/p')
    rss=0
    for pid in $(pgrep -f "nodes/bench-worker/agent" || true); do
        rss=$((rss + $(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)))
    done
    if [ "$i" -lt "$RUNS" ]; then
        sleep 5
        d0=$(date +%s.%N)
        "$skiff" cluster delete bench >/dev/null
        d1=$(date +%s.%N)
        del=$(echo "$d1 - $d0" | bc)
    else
        del="(kept for the data path)"
    fi
    printf 'run %d: create %.2f s (nodes Ready after %s s), worker RSS %d KiB at start, delete %s s\n' \
        "$i" "$(echo "$t1 - $t0" | bc)" "$ready" "$rss" "$del"
done
sleep 10
# RSS counts the skiff binary's pages each node's processes map; they are one copy in memory
# for all of them, which PSS shares out and anonymous memory leaves out.
rss=0 anon=0 pss=0
for pid in $(pgrep -f "nodes/bench-worker/agent" || true); do
    rss=$((rss + $(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)))
    anon=$((anon + $(awk '/RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)))
    pss=$((pss + $(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)))
done
echo "idle worker node (agent with its runtime) after 10 s: RSS $((rss / 1024)) MiB, of it anonymous $((anon / 1024)) MiB; PSS $((pss / 1024)) MiB (the binary's pages shared with the cluster's other $(($(pgrep -fc "$SKIFF_CLUSTERS_DIR/bench/nodes") - 1)) skiff processes)"

"$skiff" cluster load-image bench "$work/busybox.tar" >/dev/null
kubectl() { /usr/lib/google-cloud-sdk/bin/kubectl.1.33 --context skiff-bench "$@"; }
cat >"$work/pods.yaml" <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: server, labels: {app: server}}
spec:
  nodeName: bench-worker2
  containers: [{name: c, image: docker.io/library/busybox:1.36, imagePullPolicy: IfNotPresent, command: [sleep, '3601']}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  nodeName: bench-worker
  containers: [{name: c, image: docker.io/library/busybox:1.36, imagePullPolicy: IfNotPresent, command: [sleep, '3602']}]
---
apiVersion: v1
kind: Service
metadata: {name: server}
spec:
  selector: {app: server}
  ports: [{port: 9000}]
YAML
kubectl apply -f "$work/pods.yaml" >/dev/null
kubectl wait --for=condition=Ready pod/server pod/client --timeout=60s >/dev/null
server_pid=$(pgrep -f '^sleep 3601$' | head -1)
client_pid=$(pgrep -f '^sleep 3602$' | head -1)
in_server() { nsenter --net="/proc/$server_pid/ns/net" "$@"; }
in_client() { nsenter --net="/proc/$client_pid/ns/net" "$@"; }
# Started directly, not through the function: a backgrounded function is a subshell, and
# killing it would leave the server running after the benchmark.
nsenter --net="/proc/$server_pid/ns/net" "$tcpbench" serve 9000 &
pids+=($!)
pod_ip=$(kubectl get pod server -o jsonpath='{.status.podIP}')
cluster_ip=$(kubectl get service server -o jsonpath='{.spec.clusterIP}')
for _ in $(seq 1 50); do
    in_client "$tcpbench" rr "$cluster_ip:9000" 1 1 | grep -q 'errors=0' && break
    sleep 0.2
done
echo "--- Service data path, pod on bench-worker -> pod on bench-worker2 ($SECS s each, 8 connections)"
for mode in rr crr; do
    for round in 1 2; do
        direct=$(in_client "$tcpbench" "$mode" "$pod_ip:9000" 8 "$SECS")
        service=$(in_client "$tcpbench" "$mode" "$cluster_ip:9000" 8 "$SECS")
        echo "pod IP    $direct"
        echo "ClusterIP $service"
        d=$(echo "$direct" | sed -n 's/.*rate=\([0-9]*\).*/\1/p')
        s=$(echo "$service" | sed -n 's/.*rate=\([0-9]*\).*/\1/p')
        echo "$mode round $round: ClusterIP/pod IP rate ratio $(echo "scale=3; $s / $d" | bc)"
    done
done

echo "--- cluster DNS from inside the client pod (10.96.0.10:53, 1000 q/s for 20 s)"
name=server.default.svc.cluster.local
for _ in $(seq 1 50); do
    in_client "$dnsbench" 10.96.0.10:53 "$name" 10 1 | grep -q 'answered=10' && break
    sleep 0.2
done
in_client "$dnsbench" 10.96.0.10:53 "$name" 1000 20
