#!/bin/sh
# Install the Debian packages flatnet and its lab need, only those missing.
# podman with the CNI backend, runc, Nebula, the reference CNI plugins (the
# lab's chaining and the benchmarks' reference), busybox for the lab's image,
# and the tools the lab drives: curl, iproute2, nsenter.
set -eu

packages="podman runc nebula containernetworking-plugins busybox-static curl iproute2 util-linux python3 python3-venv"

missing=""
for package in $packages; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $package"
    fi
done

if [ -z "$missing" ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "flatnet: these Debian packages are missing:$missing" >&2
    echo "flatnet: run 'make deps' as root (or install them with apt-get) and try again" >&2
    exit 1
fi
echo "flatnet: installing Debian packages:$missing"
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
