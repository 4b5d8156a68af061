#!/bin/sh
# Install the Debian packages flatnet and its lab need, only those missing.
# podman with the CNI backend, runc, Nebula, the reference CNI plugins (the
# lab's chaining and the benchmarks' reference), busybox for the lab's image,
# and the tools the lab drives: curl, iproute2, iptables (a WSL2 host's Windows), nsenter.
# wrk and nginx are for bench/proxy.py, which starts its own nginx; iptables
# also stalls event streams in the proxy's tests.
set -eu

packages="podman runc nebula containernetworking-plugins busybox-static curl iproute2 iptables util-linux python3 python3-venv wrk nginx"

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
# Debian's nginx package starts a system nginx on port 80 unless policy-rc.d
# says no; the benchmark runs its own, so none is started during the install.
added_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    added_policy=yes
fi
status=0
DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing || status=$?
if [ -n "$added_policy" ]; then
    rm -f /usr/sbin/policy-rc.d
fi
exit $status
