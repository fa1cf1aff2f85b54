#!/bin/sh
# Builds the images the Kubernetes Python client's e2e suite names, from what is installed on
# this host, and pushes them to a plain-HTTP registry that serves as the node's mirror of
# docker.io and k8s.gcr.io (the machine has no internet):
#   library/busybox:latest     busybox-static with every applet linked (the suite runs date,
#                              seq, gzip, uptime)
#   library/nginx:latest, :1.15.4
#                              Debian's nginx with its shared libraries, serving Debian's
#                              "Welcome to nginx!" page on port 80
#   library/python:latest      Debian's python3 with its standard library and shared libraries
#   pause:2.0                  busybox that waits for SIGTERM, as the pause image does
#
# usage: make-suite-images.sh <workdir> <registry-addr>
# Needs root (umoci unpack), busybox-static, nginx-light, python3, umoci, skopeo.
set -eu
work=${1:?usage: make-suite-images.sh <workdir> <registry-addr>}
addr=${2:?usage: make-suite-images.sh <workdir> <registry-addr>}
mkdir -p "$work"
oci="$work/oci"

# A fresh one-layer image whose rootfs the caller fills in `$root`.
new_image() {
    rm -rf "$oci" "$work/bundle"
    umoci init --layout "$oci"
    umoci new --image "$oci:img"
    umoci unpack --image "$oci:img" "$work/bundle"
    root="$work/bundle/rootfs"
    mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root" "$root/var/tmp"
    chmod 1777 "$root/tmp" "$root/var/tmp"
    printf 'root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n' >"$root/etc/group"
    cp /bin/busybox "$root/bin/busybox"
    for app in $(/bin/busybox --list); do
        [ -e "$root/bin/$app" ] || ln -s busybox "$root/bin/$app"
    done
}

# Copies host files into the rootfs at the same paths, with the shared libraries they load.
copy_with_libs() {
    for f in "$@"; do
        mkdir -p "$root$(dirname "$f")"
        cp -aL "$f" "$root$f"
        ldd "$f" 2>/dev/null | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | while read -r lib; do
            mkdir -p "$root$(dirname "$lib")"
            [ -e "$root$lib" ] || cp -L "$lib" "$root$lib"
        done
    done
}

# Repacks the rootfs, sets the config and pushes it under every name given.
push() {
    umoci repack --image "$oci:img" "$work/bundle"
    rm -rf "$work/bundle"
    # shellcheck disable=SC2086
    umoci config --image "$oci:img" $config --architecture amd64 --os linux
    for name in "$@"; do
        skopeo copy -q --dest-tls-verify=false "oci:$oci:img" "docker://$addr/$name"
        echo "pushed $addr/$name"
    done
}

new_image
config="--config.cmd sh --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
push library/busybox:latest

new_image
copy_with_libs /usr/sbin/nginx
mkdir -p "$root/etc/nginx" "$root/usr/share/nginx/html" "$root/var/log/nginx" "$root/var/lib/nginx" "$root/run"
cp /etc/nginx/mime.types "$root/etc/nginx/mime.types"
cp /usr/share/nginx/html/index.html "$root/usr/share/nginx/html/index.html"
cat >"$root/etc/nginx/nginx.conf" <<'CONF'
user www-data;
worker_processes 1;
pid /run/nginx.pid;
daemon off;
error_log /dev/stderr;
events { worker_connections 256; }
http {
    include /etc/nginx/mime.types;
    access_log /dev/stdout;
    server {
        listen 80;
        root /usr/share/nginx/html;
        index index.html;
    }
}
CONF
config="--config.cmd nginx --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin --config.exposedports 80/tcp"
push library/nginx:latest library/nginx:1.15.4

new_image
py=$(readlink -f /usr/bin/python3)
copy_with_libs "$py"
ln -s "$(basename "$py")" "$root/usr/bin/python3"
ln -s "$(basename "$py")" "$root/usr/bin/python"
stdlib=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
mkdir -p "$root$stdlib"
tar -C "$stdlib" --exclude=test --exclude=idlelib --exclude=tkinter --exclude=ensurepip \
    --exclude=__pycache__ --exclude=site-packages --exclude=dist-packages -cf - . | tar -C "$root$stdlib" -xf -
# The extension modules' libraries (ssl, sqlite, ...), found the same way.
find "$root$stdlib/lib-dynload" -name '*.so' | while read -r so; do
    ldd "$so" 2>/dev/null | awk '/=> \// { print $3 }' | while read -r lib; do
        mkdir -p "$root$(dirname "$lib")"
        [ -e "$root$lib" ] || cp -L "$lib" "$root$lib"
    done
done
config="--config.cmd python3 --config.env PATH=/usr/local/bin:/usr/bin:/bin"
push library/python:latest

new_image
# The pause image's job: sleep until told to stop.
printf '#!/bin/sh\ntrap "exit 0" TERM INT\nwhile :; do sleep 3600 & wait $!; done\n' >"$root/pause"
chmod 755 "$root/pause"
config="--config.entrypoint /pause --config.env PATH=/bin"
push pause:2.0
rm -rf "$oci"
