#!/usr/bin/env bash
# Store write benchmark (figures, not a pass/fail test): 256-byte writes through the REST API of
# a 3-member skiff control plane, side by side with a 3-member etcd 3.4 (Debian's etcd-server,
# its v3 JSON gateway), both on loopback in the same run, at 1 and 16 concurrent clients; then
# the RSS of each skiff member idle and after 60,000 writes.
#
# usage: bash e2e/bench/store-writes.sh        (as root on a machine of this kind)
#        ROUNDS=N (default 4): rounds, alternating the two systems, that each figure is summed over
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v etcd >/dev/null; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/skiff-target}"
cargo build --release -q --bin skiff -p skiff
cargo build --release -q -p e2e --bin loadgen
skiff="$CARGO_TARGET_DIR/release/skiff"
loadgen="$CARGO_TARGET_DIR/release/loadgen"
SIZE=256
N1=${N1:-2000}      # writes at 1 client
N16=${N16:-20000}   # writes at 16 clients
ROUNDS=${ROUNDS:-4} # rounds per figure, alternating etcd and skiff
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a whole number of at least 1, not '$ROUNDS'" >&2; exit 2; }

work=$(mktemp -d /tmp/skiff-bench-XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- etcd: three members ---
ecluster=""; eclients=""
declare -a epeer eclient
for i in 1 2 3; do epeer[$i]=$(port); eclient[$i]=$(port); done
for i in 1 2 3; do ecluster+="e$i=http://127.0.0.1:${epeer[$i]},"; eclients+="http://127.0.0.1:${eclient[$i]},"; done
ecluster=${ecluster%,}; eclients=${eclients%,}
for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$work/etcd$i" \
        --listen-client-urls "http://127.0.0.1:${eclient[$i]}" --advertise-client-urls "http://127.0.0.1:${eclient[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${epeer[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${epeer[$i]}" \
        --initial-cluster "$ecluster" --initial-cluster-state new --log-level error >"$work/etcd$i.log" 2>&1 &
    pids+=($!)
done

# --- skiff: three controller members ---
smembers=""; sapis=""
declare -a speer sapi
for i in 1 2 3; do speer[$i]=$(port); sapi[$i]=$(port); done
for i in 1 2 3; do smembers+="c$i=127.0.0.1:${speer[$i]},"; sapis+="http://127.0.0.1:${sapi[$i]},"; done
smembers=${smembers%,}; sapis=${sapis%,}
declare -a spid
for i in 1 2 3; do
    "$skiff" controller --name "c$i" --data-dir "$work/skiff$i" --listen "127.0.0.1:${sapi[$i]}" \
        --peer-listen "127.0.0.1:${speer[$i]}" --initial-members "$smembers" >"$work/skiff$i.log" 2>&1 &
    spid[$i]=$!; pids+=($!)
done

wait_ok() { for _ in $(seq 100); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done; echo "not ready: $1" >&2; return 1; }
for i in 1 2 3; do wait_ok "http://127.0.0.1:${eclient[$i]}/health"; wait_ok "http://127.0.0.1:${sapi[$i]}/readyz"; done
# A write must go through before measuring (leaders elected).
for _ in $(seq 50); do "$loadgen" k8s "$sapis" 1 1 $SIZE | grep -q "errors=0" && break; sleep 0.2; done
for _ in $(seq 50); do "$loadgen" etcd "$eclients" 1 1 $SIZE | grep -q "errors=0" && break; sleep 0.2; done

rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
idle=$(for i in 1 2 3; do printf "c%d=%sMiB " "$i" "$(rss "${spid[$i]}")"; done)

# Each figure is summed over ROUNDS rounds that alternate the two systems (and which goes first),
# so a change in the machine's speed during the run (shared VMs drift by a third within minutes)
# weighs on both alike instead of on whichever ran in the slow minute.
# One line per target, as loadgen prints it, from its rounds: writes, errors and seconds summed,
# percentiles over every write's latency.
summary() { # target clients
    python3 - "$work/$1-$2" "$1" "$2" "$ROUNDS" <<'PY'
import sys
base, target, clients, rounds = sys.argv[1:]
w = e = 0; s = 0.0
for line in open(base + ".out"):
    f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
    w += int(f["writes"]); e += int(f["errors"]); s += float(f["seconds"])
lat = sorted(int(x) for x in open(base + ".raw") if x.strip())
pct = lambda p: lat[min(int(len(lat) * p), len(lat) - 1)] / 1000 if lat else 0
print(f"target={target} clients={clients} writes={w} errors={e} seconds={s:.2f} "
      f"throughput={w / s:.0f}/s p50_ms={pct(0.5):.2f} p99_ms={pct(0.99):.2f} ({rounds} rounds)")
PY
}
run_round() { # target urls clients writes
    LOADGEN_RAW="$work/$1-$3.raw" "$loadgen" "$1" "$2" "$3" "$4" $SIZE >>"$work/$1-$3.out"
}

echo "== 256-byte writes, 3 members on loopback (skiff: Kubernetes REST POST ConfigMap; etcd 3.4: v3 JSON gateway /v3/kv/put)"
done_writes=2
for c in 1 16; do
    n=$N1; [ "$c" = 16 ] && n=$N16
    per=$((n / ROUNDS))
    for r in $(seq "$ROUNDS"); do
        if [ $((r % 2)) = 1 ]; then
            run_round etcd "$eclients" "$c" "$per"; run_round k8s "$sapis" "$c" "$per"
        else
            run_round k8s "$sapis" "$c" "$per"; run_round etcd "$eclients" "$c" "$per"
        fi
    done
    etcd_line=$(summary etcd "$c"); skiff_line=$(summary k8s "$c")
    echo "$etcd_line"; echo "$skiff_line"
    python3 - "$etcd_line" "$skiff_line" "$c" <<'PY'
import sys
f = [dict(kv.split("=", 1) for kv in l.split() if "=" in kv) for l in sys.argv[1:3]]
t = [float(x["throughput"].rstrip("/s")) for x in f]
p = [float(x["p99_ms"]) for x in f]
print(f"== skiff/etcd at {sys.argv[3]} client(s): throughput {t[1] / t[0]:.2f}x, p99 {p[1] / p[0]:.2f}x")
PY
    done_writes=$((done_writes + per * ROUNDS))
done
rest=$((60000 - done_writes))
[ "$rest" -gt 0 ] && "$loadgen" k8s "$sapis" 16 "$rest" $SIZE >/dev/null
after=$(for i in 1 2 3; do printf "c%d=%sMiB " "$i" "$(rss "${spid[$i]}")"; done)
echo "== skiff member RSS: idle: $idle"
echo "== skiff member RSS after 60000 writes: $after"
