#!/bin/sh
# Make this host's routes to the other hosts' container subnets match the fleet.
#
# A thin wrapper over `flatnet routes apply`, for operators who expect a script:
#   cross-host-routing.sh [--dry-run] [--config /etc/flatnet/gateway.toml]
# Every option goes to `flatnet routes apply` as it is. The gateway keeps the routes right by
# itself when [routes] mode is "dev" or "via"; this runs the same reconcile once, by hand.
set -eu

if [ -n "${FLATNET:-}" ]; then
    flatnet="$FLATNET"
elif command -v flatnet >/dev/null 2>&1; then
    flatnet=flatnet
else
    # A checkout's virtualenv, as `make deps` creates it.
    flatnet="$(dirname "$0")/../.venv/bin/flatnet"
fi

if [ ! -x "$flatnet" ] && ! command -v "$flatnet" >/dev/null 2>&1; then
    echo "cross-host-routing.sh: flatnet not found; install flatnet or set FLATNET=/path/to/flatnet" >&2
    exit 127
fi

exec "$flatnet" routes apply "$@"
