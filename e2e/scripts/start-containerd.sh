#!/bin/sh
# Starts Debian's containerd 1.6 with a root, state, socket, registry config and CNI network of
# its own under <dir>, for the e2e interop test and the runtime benchmark. Its pods' sandbox
# image is a `pause` of one layer (busybox-static's sleep, sharing no layer with the test
# images) pushed to <registry>, which it pulls from over plain HTTP. Prints the CRI socket's
# path; the daemon's pid is in <dir>/containerd.pid.
#
# usage: start-containerd.sh <dir> <registry-addr>
set -eu
dir=${1:?usage: start-containerd.sh <dir> <registry-addr>}
reg=${2:?registry address}
mkdir -p "$dir/certs.d/$reg" "$dir/net.d"

layout="$dir/pause-oci"
umoci init --layout "$layout" >/dev/null
umoci new --image "$layout:pause" >/dev/null
umoci unpack --image "$layout:pause" "$dir/pause-bundle" >/dev/null
mkdir -p "$dir/pause-bundle/rootfs/bin"
cp /bin/busybox "$dir/pause-bundle/rootfs/bin/busybox"
ln -s busybox "$dir/pause-bundle/rootfs/bin/sleep"
umoci repack --image "$layout:pause" "$dir/pause-bundle" >/dev/null
rm -rf "$dir/pause-bundle"
umoci config --image "$layout:pause" --config.entrypoint /bin/sleep --config.cmd 2147483647 \
    --architecture amd64 --os linux >/dev/null
skopeo copy -q --dest-tls-verify=false "oci:$layout:pause" "docker://$reg/pause:skiff"

cat >"$dir/certs.d/$reg/hosts.toml" <<TOML
server = "http://$reg"
[host."http://$reg"]
  capabilities = ["pull", "resolve"]
TOML
cat >"$dir/net.d/10-containerd.conflist" <<JSON
{"cniVersion": "0.4.0", "name": "skiff-containerd", "plugins": [
  {"type": "bridge", "bridge": "cnictrd0", "isGateway": true, "ipMasq": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.199.0.0/16"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
cat >"$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
[grpc]
  address = "$dir/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$reg/pause:skiff"
  # This machine lacks CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$dir/certs.d"
TOML
containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
echo $! >"$dir/containerd.pid"
for _ in $(seq 150); do
    [ -S "$dir/containerd.sock" ] && { echo "$dir/containerd.sock"; exit 0; }
    sleep 0.2
done
echo "containerd did not open $dir/containerd.sock:" >&2
tail -20 "$dir/containerd.log" >&2
exit 1
