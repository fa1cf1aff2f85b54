#!/usr/bin/env bash
# Pod-spec benchmark (figures, not a pass/fail test), on one `skiff up` node with the busybox
# images from a local registry:
#   - an exec probe: CRI ExecSync of `true` in a running container, skiff's runtime side by
#     side with containerd 1.6 (Debian's) through the same client (`cri-bench exec`);
#   - the CPU that 100 pods with an exec liveness probe every 10 s and an httpGet readiness
#     probe every 5 s cost, in % of one core, against the same 100 pods without probes: the
#     node (`skiff agent` with skiff's runtime: agent and runtime in one process, its zygote,
#     the containers' monitors, the exec helpers) runs in a cgroup of its own, the control
#     plane (`skiff controller`: API, store, scheduler, controllers) in another; the pods'
#     cgroups are shown beside them (an exec probe's command and the part of its setup that
#     runs in the container's cgroup, httpd answering the readiness probes);
#   - how long a ConfigMap update takes to show in a running pod's mounted file (the kubelet
#     takes up to its sync period plus its cache TTL, about a minute);
#   - a 100-replica Deployment with an httpGet readiness probe: `apply` to all Ready, with the
#     p50 and p99 of each pod's apply→Ready time (polled every 50 ms), and the same without
#     probes.
#
# usage: bash e2e/bench/pod-spec.sh      (as root on a machine of this kind; RUNS=200 exec calls)
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=e2e/bench/lib.sh
source e2e/bench/lib.sh containerd docker-registry busybox-static skopeo umoci \
    containernetworking-plugins iptables nftables python3 curl
RUNS=${RUNS:-200}

work=$(mktemp -d /tmp/skiff-podbench-XXXXXX)
pids=()
# skiff's monitors and shims: children of its zygote (or of skiff itself without one).
skiff_procs() {
    local parents="${skiff_pid:-} $(pgrep -f -P "${skiff_pid:-0}" __zygote || true)"
    for p in $parents; do pgrep -P "$p" -f 'skiff-shim|__monitor' || true; done
}
cleanup() {
    local procs
    procs=$(skiff_procs)
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pkill -f "containerd-shim-runc-v2 .*$work" 2>/dev/null || true
    # Containers outlive skiff by design: their monitors go too.
    for p in $procs; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    findmnt -rn -o TARGET | grep "^$work" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    ip link del cnictrd0 2>/dev/null || true
    rm -rf /var/lib/cni/networks/skiff-containerd "$work"
    [ -n "${cg:-}" ] && rmdir "$cg" 2>/dev/null || true
    [ -n "${cp_cg:-}" ] && rmdir "$cp_cg" 2>/dev/null || true
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
field() { sed -n "s/.* $1=\\([0-9.]*\\).*/\\1/p"; }

# --- a registry with busybox, and busybox serving HTTP on port 80 ---
reg="127.0.0.1:$(port)"
bash e2e/scripts/make-busybox-image.sh "$work/image" "$reg" busybox:1.36 >/dev/null 2>&1
pids+=("$(cat "$work/image/registry.pid")")
sh e2e/scripts/make-busybox-image.sh "$work/httpd-image" "$reg" httpd:1 httpd >/dev/null 2>&1
image="$reg/busybox:1.36"

# --- skiff's control plane and node in a cgroup each, and containerd 1.6 with its own root,
# socket and CNI ---
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    cg_root=/sys/fs/cgroup
else
    cg_root=/sys/fs/cgroup/cpuacct
fi
cg="$cg_root/skiff-podbench-$$"
cp_cg="$cg_root/skiff-podbench-cp-$$"
mkdir "$cg" "$cp_cg"
api="127.0.0.1:$(port)"
# shellcheck disable=SC2016
sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cp_cg" \
    "$skiff" controller --name bench-cp --data-dir "$work/cp" --listen "$api" \
    --peer-listen "127.0.0.1:$(port)" >"$work/controller.log" 2>&1 &
pids+=("$!")
for _ in $(seq 150); do [ -s "$work/cp/kubeconfig" ] && break; sleep 0.2; done
# shellcheck disable=SC2016
sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" \
    "$skiff" --kubeconfig "$work/cp/kubeconfig" agent --data-dir "$work/skiff" \
    --agent-port "$(port)" --node-name bench >"$work/skiff.log" 2>&1 &
skiff_pid=$!; pids+=("$skiff_pid")
cd_dir="$work/containerd"
cd_sock=$(sh e2e/scripts/start-containerd.sh "$cd_dir" "$reg")
pids+=("$(cat "$cd_dir/containerd.pid")")
for s in "$work/skiff/runtime/cri.sock" "$cd_sock"; do
    for _ in $(seq 150); do [ -S "$s" ] && break; sleep 0.2; done
    [ -S "$s" ] || { echo "no CRI socket at $s" >&2; tail -20 "$work"/*.log >&2; exit 1; }
done
for _ in $(seq 150); do
    curl -fsS "http://$api/api/v1/nodes/bench" 2>/dev/null | grep -q '"type":"Ready","status":"True"' && break
    sleep 0.2
done

echo "pod-spec benchmark: skiff $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(nproc) cores, $RUNS ExecSync calls each"
# host-local reads every lease of the network on each pod's ADD: leases that runs killed
# without CNI DEL left behind slow every pod start, so they are counted in the figures' header.
stale=$(find /var/lib/cni/networks/skiff -maxdepth 1 -name '*.*.*.*' 2>/dev/null | wc -l)
[ "$stale" -gt 0 ] && echo "note: $stale host-local leases of other sandboxes in /var/lib/cni/networks/skiff"
containers_before=$(pgrep -c httpd || true)
[ "${containers_before:-0}" -gt 0 ] && echo "note: $containers_before httpd processes from earlier runs are running"
sk_exec=$("$bench" "$work/skiff/runtime/cri.sock" "$image" exec "$RUNS")
cd_exec=$("$bench" "$cd_sock" "$image" exec "$RUNS")

python3 - "$api" "$reg" "$cg" "$cg_root/skiff" "$work/skiff" "$(field mean_ms <<<"$sk_exec")" \
    "$(field p50_ms <<<"$sk_exec")" "$(field mean_ms <<<"$cd_exec")" \
    "$(field p50_ms <<<"$cd_exec")" "$RUNS" "$cp_cg" <<'EOF'
import json, os, sys, time, urllib.error, urllib.request

api, reg, node_cg, pods_cg, data = sys.argv[1:6]
sk_mean, sk_p50, cd_mean, cd_p50, runs, cp_cg = sys.argv[6:12]
base = f"http://{api}"


def call(method, path, body=None, ctype="application/json"):
    req = urllib.request.Request(base + path, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def pods(selector):
    return call("GET", f"/api/v1/namespaces/default/pods?labelSelector={selector}")["items"]


def ready(p):
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in p.get("status", {}).get("conditions", []))


def deployment(name, replicas, probes):
    c = {"name": "web", "image": f"{reg}/httpd:1", "ports": [{"containerPort": 80}]}
    if probes:
        c["readinessProbe"] = {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 5}
        c["livenessProbe"] = {"exec": {"command": ["true"]}, "periodSeconds": 10}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"terminationGracePeriodSeconds": 1,
                                           "containers": [c]}}}}


def roll_out(replicas, probes):
    """Creates the Deployment and waits for every pod to be Ready: per-pod apply→Ready."""
    t0 = time.monotonic()
    call("POST", "/apis/apps/v1/namespaces/default/deployments",
         deployment("bench", replicas, probes))
    seen = {}
    while len(seen) < replicas and time.monotonic() - t0 < 300:
        now = time.monotonic()
        for p in pods("app=bench"):
            if ready(p) and p["metadata"]["name"] not in seen:
                seen[p["metadata"]["name"]] = now - t0
        time.sleep(0.05)
    if len(seen) < replicas:
        sys.exit(f"only {len(seen)} of {replicas} pods became Ready")
    return sorted(seen.values())


def tear_down():
    call("DELETE", "/apis/apps/v1/namespaces/default/deployments/bench")
    t0 = time.monotonic()
    while pods("app=bench") and time.monotonic() - t0 < 300:
        time.sleep(0.5)
    time.sleep(2)


def pct(xs, q):
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def usage_ns(cg):
    """CPU time of everything in the cgroup `cg` and below, in ns (v1 cpuacct or v2 cpu.stat)."""
    try:
        return int(open(f"{cg}/cpuacct.usage").read())
    except FileNotFoundError:
        for line in open(f"{cg}/cpu.stat"):
            k, v = line.split()
            if k == "usage_usec":
                return int(v) * 1000
    return 0


def cpu_percent(seconds=60):
    """% of one core used by the node's, the control plane's and the pods' cgroups over
    `seconds`."""
    cgs = (node_cg, cp_cg, pods_cg)
    before, t0 = [usage_ns(g) for g in cgs], time.monotonic()
    time.sleep(seconds)
    after, t1 = [usage_ns(g) for g in cgs], time.monotonic()
    return [(b - a) / 1e9 / (t1 - t0) * 100 for a, b in zip(before, after)]


rows = []
rows.append(("exec probe: ExecSync of true, mean ms", sk_mean, cd_mean, "containerd 1.6"))
rows.append(("  p50 ms", sk_p50, cd_p50, ""))

# A 100-replica Deployment: all Ready, without and with readiness probes.
plain = roll_out(100, False)
idle_cpu, idle_cp, idle_pods = cpu_percent()
tear_down()
probed = roll_out(100, True)
time.sleep(10)
probe_cpu, probe_cp, probe_pods = cpu_percent()
tear_down()
rows.append(("100 replicas, no probes: apply -> all Ready, s", f"{plain[-1]:.2f}", "", ""))
rows.append(("  per pod p50 / p99, s", f"{pct(plain, .5):.2f} / {pct(plain, .99):.2f}", "", ""))
rows.append(("100 replicas, httpGet readiness: -> all Ready, s", f"{probed[-1]:.2f}", "", ""))
rows.append(("  per pod p50 / p99, s", f"{pct(probed, .5):.2f} / {pct(probed, .99):.2f}", "", ""))
rows.append(("100 pods, no probes: node CPU, % of a core", f"{idle_cpu:.2f}", "", ""))
rows.append(("  control plane / the pods' own cgroups, %", f"{idle_cp:.2f} / {idle_pods:.2f}", "", ""))
rows.append(("100 pods, exec 10s + httpGet 5s probes: node %", f"{probe_cpu:.2f}", "", ""))
rows.append(("  control plane / the pods' own cgroups, %", f"{probe_cp:.2f} / {probe_pods:.2f}", "", ""))

# A ConfigMap update reaching a running pod's mounted file.
call("POST", "/api/v1/namespaces/default/configmaps",
     {"metadata": {"name": "cfg"}, "data": {"v": "0"}})
call("POST", "/api/v1/namespaces/default/pods", {
    "metadata": {"name": "cfg-reader", "labels": {"app": "cfg"}},
    "spec": {"terminationGracePeriodSeconds": 1,
             "containers": [{"name": "c", "image": f"{reg}/busybox:1.36", "command": ["sleep", "3600"],
                             "volumeMounts": [{"name": "cfg", "mountPath": "/cfg"}]}],
             "volumes": [{"name": "cfg", "configMap": {"name": "cfg"}}]}})
t0 = time.monotonic()
while time.monotonic() - t0 < 60:
    p = call("GET", "/api/v1/namespaces/default/pods/cfg-reader")
    if p.get("status", {}).get("phase") == "Running":
        break
    time.sleep(0.1)
path = f"{data}/agent/pods/{p['metadata']['uid']}/volumes/kubernetes.io~configmap/cfg/v"
lat = []
for i in range(1, 21):
    t0 = time.monotonic()
    call("PATCH", "/api/v1/namespaces/default/configmaps/cfg", {"data": {"v": str(i)}},
         "application/merge-patch+json")
    while time.monotonic() - t0 < 10:
        try:
            if open(path).read() == str(i):
                break
        except OSError:
            pass
        time.sleep(0.002)
    lat.append(time.monotonic() - t0)
lat.sort()
rows.append(("ConfigMap update visible in the pod, p50 ms", f"{pct(lat, .5) * 1000:.0f}", "", ""))
rows.append(("  max of 20 updates, ms", f"{lat[-1] * 1000:.0f}", "", ""))
call("DELETE", "/api/v1/namespaces/default/pods/cfg-reader")
t0 = time.monotonic()
while time.monotonic() - t0 < 60:
    try:
        call("GET", "/api/v1/namespaces/default/pods/cfg-reader")
    except urllib.error.HTTPError:
        break
    time.sleep(0.2)

print(f"{'':52} {'skiff':>14} {'reference':>12}")
for name, a, b, ref in rows:
    print(f"{name:52} {a:>14} {b:>12} {ref}")
print("(a kubelet shows a ConfigMap update after up to its sync period plus its cache TTL,")
print(" about a minute; there is no kubelet on this machine to measure side by side)")
EOF
