#!/bin/sh
# Builds the image manifests/pod.yaml runs, docker.io/library/busybox:1.36, as an OCI image
# layout archive from this host's busybox-static, with nothing but tar, gzip and sha256sum, for
# a machine without internet:
#
#   bash scripts/busybox-image.sh /tmp/busybox.tar && skiff image import /tmp/busybox.tar
#
# Installs busybox-static with apt when /bin/busybox is missing (Debian's mirrors are enough).
set -eu
out=${1:?usage: busybox-image.sh OUT.tar}
name=${2:-docker.io/library/busybox:1.36}
if ! [ -x /bin/busybox ]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q busybox-static
fi
case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    *) arch=$(uname -m) ;;
esac

w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
root="$w/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root" "$w/oci/blobs/sha256"
cp /bin/busybox "$root/bin/busybox"
for app in $(/bin/busybox --list); do
    [ "$app" = busybox ] || ln -s busybox "$root/bin/$app"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
chmod 1777 "$root/tmp"

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { wc -c <"$1" | tr -d ' '; }
# Puts a file into the layout under its digest; prints the digest.
blob() {
    d=$(sha "$1")
    mv "$1" "$w/oci/blobs/sha256/$d"
    echo "$d"
}

# The same files give the same layer: sorted, no times, no owners of this host.
tar -C "$root" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$w/layer.tar" .
diff_id=$(sha "$w/layer.tar")
gzip -n -9 <"$w/layer.tar" >"$w/layer.tar.gz"
layer_size=$(size "$w/layer.tar.gz")
layer=$(blob "$w/layer.tar.gz")

printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["sh"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"skiff scripts/busybox-image.sh"}]}' \
    "$arch" "$diff_id" >"$w/config.json"
config_size=$(size "$w/config.json")
config=$(blob "$w/config.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$config" "$config_size" "$layer" "$layer_size" >"$w/manifest.json"
manifest_size=$(size "$w/manifest.json")
manifest=$(blob "$w/manifest.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest" "$manifest_size" "$name" "${name##*:}" >"$w/oci/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$w/oci/oci-layout"
tar -C "$w/oci" -cf "$out" .
echo "wrote $out: $name (OCI layout); import it with: skiff image import $out"
