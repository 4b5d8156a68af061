"""The plugin's entry point (`/opt/cni/bin/flatnet`): standard library only.

podman runs VERSION for every network each time it loads its config, so
VERSION is answered here without importing netlink or HTTP code. Exactly one
JSON document goes to stdout; diagnostics go to stderr.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    from flatnet.cni import spec

    cni_version = "1.0.0"
    try:
        stdin = sys.stdin.buffer.read()
        request = spec.parse_request(dict(os.environ), stdin)
        cni_version = request.cni_version
        if request.command == "VERSION":
            result = spec.version_result(cni_version)
        else:
            from flatnet.cni.commands import run

            result = run(request)
    except spec.CniError as error:
        _emit(error.as_dict(cni_version))
        sys.exit(1)
    except Exception as error:  # noqa: BLE001 - the runtime must get a CNI error object, not a traceback
        import traceback

        traceback.print_exc(file=sys.stderr)
        _emit(spec.CniError(spec.INTERNAL_FAILURE, f"internal error: {error}").as_dict(cni_version))
        sys.exit(1)
    if result is not None:
        _emit(result)


def _emit(document: dict) -> None:
    sys.stdout.write(json.dumps(document))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
