#!/usr/bin/env bash
# Runtime benchmark (figures, not a pass/fail test): skiff's runtime side by side with the
# references, in one run, on the same busybox image from the same local registry:
#   - the lifecycle of a /bin/true container: `runc run` on a bundle of the image, against
#     skiff's CRI CreateContainer + StartContainer + wait for the exit + RemoveContainer in a
#     running pod (and containerd's, through the same client);
#   - pod start through CRI (RunPodSandbox + CreateContainer + StartContainer, image cached),
#     skiff against containerd 1.6;
#   - image pull + unpack: CRI PullImage on both, and `ctr images pull`;
#   - memory: the daemons' RSS, and what one running pod of one container adds (skiff's shim;
#     containerd's shim and pause process).
# Every CRI figure comes from the same client (`cri-bench`, in e2e) for both runtimes.
#
# usage: bash e2e/bench/runtime.sh        (as root on a machine of this kind; RUNS=20 by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=e2e/bench/lib.sh
source e2e/bench/lib.sh runc containerd docker-registry busybox-static skopeo umoci \
    containernetworking-plugins iptables nftables python3
RUNS=${RUNS:-20}

work=$(mktemp -d /tmp/skiff-rtbench-XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pkill -f "containerd-shim-runc-v2 .*$work" 2>/dev/null || true
    for p in $(skiff_procs); do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    findmnt -rn -o TARGET | grep "^$work" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    ip link del cnictrd0 2>/dev/null || true
    rm -rf /var/lib/cni/networks/skiff-containerd "$work"
}
trap cleanup EXIT
# skiff's monitors and shims: children of its zygote (or of skiff itself without one); their
# command lines name the task state under /run/skiff, not $work.
skiff_procs() {
    local parents="${skiff_pid:-} $(pgrep -f -P "${skiff_pid:-0}" __zygote || true)"
    for p in $parents; do pgrep -P "$p" -f 'skiff-shim|__monitor' || true; done
}
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
field() { sed -n "s/.* $1=\\([0-9.]*\\).*/\\1/p"; }

# --- a registry with busybox ---
reg="127.0.0.1:$(port)"
bash e2e/scripts/make-busybox-image.sh "$work/image" "$reg" busybox:1.36 >/dev/null 2>&1
pids+=("$(cat "$work/image/registry.pid")")
image="$reg/busybox:1.36"

# --- skiff up (its runtime serves CRI at <data>/runtime/cri.sock) ---
"$skiff" up --data-dir "$work/skiff" --listen "127.0.0.1:$(port)" --agent-port "$(port)" \
    --node-name bench >"$work/skiff.log" 2>&1 &
skiff_pid=$!; pids+=("$skiff_pid")
skiff_sock="$work/skiff/runtime/cri.sock"

# --- containerd 1.6 with its own root, socket, registry config and CNI network ---
cd_dir="$work/containerd"
cd_sock=$(sh e2e/scripts/start-containerd.sh "$cd_dir" "$reg")
cd_pid=$(cat "$cd_dir/containerd.pid"); pids+=("$cd_pid")

for s in "$skiff_sock" "$cd_sock"; do
    for _ in $(seq 150); do [ -S "$s" ] && break; sleep 0.2; done
    [ -S "$s" ] || { echo "no CRI socket at $s" >&2; tail -20 "$work"/*.log >&2; exit 1; }
done
sleep 1

# --- runc run of /bin/true on a bundle of the same image ---
bundle="$work/bundle"
umoci unpack --image "$work/image/oci:img" "$bundle" >/dev/null
python3 - "$bundle/config.json" <<'EOF'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["args"] = ["/bin/true"]
c["process"]["terminal"] = False
json.dump(c, open(p, "w"))
EOF
runc_ms() {
    local total=0 t0 t1 i
    # One untimed run first, as cri-bench does for the CRI lifecycles.
    runc --root "$work/runc" run -b "$bundle" "bench-true" >/dev/null
    for i in $(seq "$RUNS"); do
        t0=$(date +%s%N)
        runc --root "$work/runc" run -b "$bundle" "bench-true" >/dev/null
        t1=$(date +%s%N)
        total=$((total + t1 - t0))
    done
    awk -v t="$total" -v n="$RUNS" 'BEGIN { printf "%.1f", t / n / 1e6 }'
}

echo "runtime benchmark: $RUNS runs each, busybox image from a local registry; times are means in ms"
runc_true=$(runc_ms)
sk_true=$("$bench" "$skiff_sock" "$image" container "$RUNS" | field mean_ms)
cd_true=$("$bench" "$cd_sock" "$image" container "$RUNS" | field mean_ms)
sk_pod=$("$bench" "$skiff_sock" "$image" pod "$RUNS" | field mean_ms)
cd_pod=$("$bench" "$cd_sock" "$image" pod "$RUNS" | field mean_ms)
sk_pull=$("$bench" "$skiff_sock" "$image" pull "$RUNS" | field mean_ms)
# containerd's RemoveImage leaves the blobs and snapshots for a later collection; skiff's
# removes them. Removed with a synchronous collection instead, each pull starts from nothing.
cd_pull=$(CRI_BENCH_REMOVE="ctr --address $cd_sock -n k8s.io images rm --sync {} >/dev/null" \
    "$bench" "$cd_sock" "$image" pull "$RUNS" | field mean_ms)
ctr_total=0
for _ in $(seq "$RUNS"); do
    ctr --address "$cd_sock" images rm --sync "$image" >/dev/null 2>&1 || true
    t0=$(date +%s%N)
    ctr --address "$cd_sock" images pull --plain-http "$image" >/dev/null
    t1=$(date +%s%N)
    ctr_total=$((ctr_total + t1 - t0))
done
ctr_pull=$(awk -v t="$ctr_total" -v n="$RUNS" 'BEGIN { printf "%.1f", t / n / 1e6 }')

# Memory: the daemons idle, then one running pod of one container on each.
# skiff's figure includes its monitor zygote, the process that forks each container's monitor.
sk_rss=$(rss_kb "$skiff_pid")
for p in $(pgrep -f -P "$skiff_pid" __zygote || true); do sk_rss=$((sk_rss + $(rss_kb "$p"))); done
cd_rss=$(rss_kb "$cd_pid")
sk_hold=$("$bench" "$skiff_sock" "$image" hold 1 | sed -n 's/^pod=//p')
cd_hold=$("$bench" "$cd_sock" "$image" hold 1 | sed -n 's/^pod=//p')
sleep 1
sk_pod_rss=0
for p in $(skiff_procs); do sk_pod_rss=$((sk_pod_rss + $(rss_kb "$p"))); done
cd_pod_rss=0
for p in $(pgrep -f "containerd-shim-runc-v2 .*$cd_dir" || true); do
    cd_pod_rss=$((cd_pod_rss + $(rss_kb "$p")))
    for c in $(pgrep -P "$p" || true); do
        # The pause process; the workload (sleep) is the same on both sides and not counted.
        if tr '\0' ' ' <"/proc/$c/cmdline" | grep -q "2147483647"; then
            cd_pod_rss=$((cd_pod_rss + $(rss_kb "$c")))
        fi
    done
done
"$bench" "$skiff_sock" "$image" release "$sk_hold" >/dev/null
"$bench" "$cd_sock" "$image" release "$cd_hold" >/dev/null

printf '%-46s %12s %12s %s\n' "" "skiff" "reference" "(reference)"
printf '%-46s %12s %12s %s\n' "/bin/true create+start+wait+delete" "$sk_true" "$runc_true" "runc run"
printf '%-46s %12s %12s %s\n' "  the same through containerd's CRI" "" "$cd_true" "containerd 1.6"
printf '%-46s %12s %12s %s\n' "pod start via CRI (image cached)" "$sk_pod" "$cd_pod" "containerd 1.6"
printf '%-46s %12s %12s %s\n' "image pull+unpack via CRI" "$sk_pull" "$cd_pull" "containerd 1.6"
printf '%-46s %12s %12s %s\n' "  ctr images pull" "" "$ctr_pull" "ctr"
printf '%-46s %12s %12s %s\n' "daemon RSS, MiB (skiff: API+store+agent+runtime+zygote)" "$(mib "$sk_rss")" "$(mib "$cd_rss")" "containerd"
printf '%-46s %12s %12s %s\n' "RSS one running pod adds, MiB" "$(mib "$sk_pod_rss")" "$(mib "$cd_pod_rss")" "shim + pause"
# What a user downloads: skiff (control plane, agent and runtime) against containerd + runc.
size_mib() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.1f", b / 1048576 }'; }
cd_size=$(( $(stat -c %s "$(command -v containerd)") + $(stat -c %s "$(command -v runc)") ))
printf '%-46s %12s %12s %s\n' "binary size, MiB" "$(size_mib "$skiff")" \
    "$(awk -v b="$cd_size" 'BEGIN { printf "%.1f", b / 1048576 }')" "containerd + runc"
printf '%-46s %12s\n' "  skiff-shim, the per-container monitor" "$(size_mib "$(dirname "$skiff")/skiff-shim")"
