#!/bin/sh
# Builds a busybox-static OCI image with umoci and pushes it with skopeo to a plain-HTTP
# registry, starting Debian's docker-registry on that address first if nothing listens there.
#
# usage: make-busybox-image.sh <workdir> [registry-addr] [image:tag] [httpd]
#   defaults: registry 127.0.0.1:5055, image busybox:1
#   `httpd`: the image serves /www on port 80 (busybox httpd) by default, for charts whose
#   pods have HTTP probes, and has wget.
# Needs root (umoci unpack), busybox-static, umoci, skopeo, docker-registry.
# The registry's pid is written to <workdir>/registry.pid (kill it when done).
set -eu
work=${1:?usage: make-busybox-image.sh <workdir> [registry-addr] [image:tag]}
addr=${2:-127.0.0.1:5055}
image=${3:-busybox:1}
flavour=${4:-}
mkdir -p "$work"

if ! curl -fsS "http://$addr/v2/" >/dev/null 2>&1; then
    mkdir -p "$work/registry-data"
    cat >"$work/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry-data
http:
  addr: $addr
YML
    /usr/bin/docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
    echo $! >"$work/registry.pid"
    for _ in $(seq 50); do
        curl -fsS "http://$addr/v2/" >/dev/null 2>&1 && break
        sleep 0.2
    done
fi

oci="$work/oci"
rm -rf "$oci" "$work/bundle"
umoci init --layout "$oci"
umoci new --image "$oci:img"
umoci unpack --image "$oci:img" "$work/bundle"
root="$work/bundle/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root"
cp /bin/busybox "$root/bin/busybox"
for app in sh echo sleep cat ls id hostname ps true false env; do
    ln -sf busybox "$root/bin/$app"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
chmod 1777 "$root/tmp"
# Files the second layer deletes, so pulls exercise whiteouts and opaque directories.
echo gone >"$root/etc/removed-by-layer2"
mkdir -p "$root/opq"
echo old >"$root/opq/old"
umoci repack --image "$oci:img" "$work/bundle"
rm -rf "$work/bundle"
umoci unpack --image "$oci:img" "$work/bundle"
rm "$root/etc/removed-by-layer2"
rm -rf "$root/opq"
mkdir "$root/opq"
echo new >"$root/opq/new"
umoci repack --image "$oci:img" "$work/bundle"
cmd="--config.cmd sh"
if [ "$flavour" = httpd ]; then
    umoci unpack --image "$oci:img" "$work/bundle-httpd"
    ln -sf busybox "$work/bundle-httpd/rootfs/bin/httpd"
    # `helm create`'s test pod runs `wget <service>:<port>` in a busybox image.
    ln -sf busybox "$work/bundle-httpd/rootfs/bin/wget"
    mkdir -p "$work/bundle-httpd/rootfs/www"
    echo "hello from skiff" >"$work/bundle-httpd/rootfs/www/index.html"
    umoci repack --image "$oci:img" "$work/bundle-httpd"
    rm -rf "$work/bundle-httpd"
    cmd="--config.cmd httpd --config.cmd -f --config.cmd -p --config.cmd 80 --config.cmd -h --config.cmd /www"
fi
# shellcheck disable=SC2086
umoci config --image "$oci:img" $cmd \
    --config.env PATH=/bin --config.workingdir / --architecture amd64 --os linux
skopeo copy --dest-tls-verify=false "oci:$oci:img" "docker://$addr/$image"
echo "pushed $addr/$image"
