"""The plugin's entry point (`/opt/cni/bin/flatnet`): standard library only.

podman runs VERSION for every network each time it loads its config, and ADD
or DEL for every container it starts or stops, so this module starts fast. It
uses the C modules ``_json``, ``_socket`` and ``posix`` instead of ``json``,
``socket`` and ``os``, which pull in ``re``, ``enum`` and more (about 7 ms each
at start-up, measured with Python 3.11 on this project's 2-core test machine).

VERSION is answered here without touching the network or the gateway. Every
other command goes to the host's gateway over a Unix socket (the fast path),
where pyroute2 is already loaded. If the socket is missing or the gateway does
not take the request within ANSWER_TIMEOUT_SECONDS, the command runs in this
process instead, through flatnet.cni.dispatch: the same code and the same
locks as in the gateway. Exactly one JSON document, or none, goes to stdout.

The wire protocol on the socket, one request per connection:

    plugin:  b"FLATNET-CNI 1 <environment length> <stdin length>\\n",
             then the environment (NAME=VALUE entries joined by NUL bytes),
             then stdin
    gateway: TAKEN, or REFUSED (the plugin then runs the command itself)
    plugin:  COMMIT (the gateway starts only now, so a plugin that gave up
             waiting and runs the command itself never runs it twice)
    gateway: b"<exit code>\\n" and the plugin's stdout, then it closes
"""

import posix
import sys

# Result formats this plugin emits. 0.3.x and 0.4.0 results carry a version on
# each IP; 1.1.0 results have the 1.0.0 shape. podman 4.3.1 (libcni 1.1.2)
# parses results up to 1.0.0 and requests only the version its conflist names.
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
DEFAULT_DATA_DIR = "/var/lib/flatnet"
SOCKET_NAME = "gateway.sock"

PROTOCOL_MAGIC = b"FLATNET-CNI 1"
TAKEN = b"+"
REFUSED = b"-"
COMMIT = b"+"
# Environment variables the gateway gets: the CNI ones, the fault injection
# hook of flatnet.cni.faults used by the crash tests, and the locale, so that
# the gateway writes error messages in the plugin's language, not its own.
FORWARDED_PREFIX = b"CNI_"
FAULT_VARIABLE = b"FLATNET_CNI_FAULT"
# In their order of precedence, as flatnet.i18n.locale_is_japanese reads them.
LOCALE_VARIABLES = (b"LC_ALL", b"LC_MESSAGES", b"LANG")

# The launcher's own CNI errors: key -> (English, Japanese). flatnet.cni.spec
# adds them to the flatnet.i18n catalog, which this module cannot import
# because it runs without site-packages.
MESSAGES = {
    "cni.gateway_failed": (
        "the host's gateway failed while running {command}; the runtime's DEL cleans up, then retry",
        "ホストのゲートウェイが {command} の実行中に失敗しました。ランタイムの DEL が後始末をするので、その後で再試行してください",
    ),
    "cni.gateway_no_reply": ("the gateway at {path} did not reply: {error}", "{path} のゲートウェイが応答しませんでした: {error}"),
    "cni.gateway_reply_incomplete": (
        "the gateway at {path} closed the connection without a complete reply",
        "{path} のゲートウェイが応答を最後まで送らずに接続を閉じました",
    ),
    "cni.plugin_failed": ("the flatnet plugin failed", "flatnet プラグインが失敗しました"),
}

# A gateway takes a request in well under a millisecond. One that has not taken it
# within this bound is hung or overloaded, so the plugin runs the command itself.
ANSWER_TIMEOUT_SECONDS = 1.0
# Once the gateway has taken a request, the plugin waits this long for the
# reply. An ADD takes milliseconds; this bound only ends a wait on a hung gateway.
REPLY_TIMEOUT_SECONDS = 60.0
# Unix socket addresses hold at most 107 bytes of path on Linux.
MAX_SOCKET_PATH = 107

TRY_AGAIN_LATER = 11
INTERNAL_FAILURE = 999


class _DecodeContext:
    """The attributes ``_json.make_scanner`` reads from a ``json.JSONDecoder``, with their defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = None
    memo = None


def decode_config(stdin: bytes) -> dict | None:
    """Decode the network config, or return None if stdin is not one JSON object."""
    import _json

    try:
        text = stdin.decode("utf-8")
        scanner = _json.make_scanner(_DecodeContext())
        start = len(text) - len(text.lstrip())
        config, end = scanner(text, start)
    except (UnicodeDecodeError, StopIteration, ValueError, TypeError, RecursionError, SystemError):
        # _json builds its error from json.decoder, found only in sys.modules:
        # without it (as here) a syntax error surfaces as a bare SystemError.
        return None
    if text[end:].strip() or not isinstance(config, dict):
        return None
    return config


def forwarded_environment(environ: dict[bytes, bytes]) -> dict[str, str]:
    """Return the CNI variables, the fault hook and the locale of ``environ``, decoded as ``os.environ`` does."""
    return {
        name.decode("utf-8", "surrogateescape"): value.decode("utf-8", "surrogateescape")
        for name, value in environ.items()
        if name.startswith(FORWARDED_PREFIX) or name == FAULT_VARIABLE or name in LOCALE_VARIABLES
    }


def locale_is_japanese(environment: dict[str, str]) -> bool:
    """Tell whether ``environment`` selects Japanese, by the rule of flatnet.i18n.locale_is_japanese.

    The rule is repeated here because that module is not importable without
    site-packages, and tests/cni/test_spec.py checks that the two agree.
    """
    for name in LOCALE_VARIABLES:
        value = environment.get(name.decode())
        if value:
            return value.lower().startswith("ja")
    return False


def format_message(key: str, japanese: bool, **values: object) -> str:
    """Format the launcher's message ``key`` in Japanese or English."""
    english, japanese_text = MESSAGES[key]
    return (japanese_text if japanese else english).format(**values)


def version_document(config: dict | None) -> bytes:
    """Return the VERSION result: the requested version if supported, else the newest supported."""
    requested = config.get("cniVersion") if config is not None else None
    version = requested if requested in SUPPORTED_VERSIONS else SUPPORTED_VERSIONS[-1]
    listed = ", ".join(f'"{supported}"' for supported in SUPPORTED_VERSIONS)
    return f'{{"cniVersion": "{version}", "supportedVersions": [{listed}]}}'.encode()


def socket_path(config: dict) -> str:
    """Return the gateway's socket path: the config's ``socket``, else ``<dataDir>/gateway.sock``."""
    path = config.get("socket")
    if isinstance(path, str) and path:
        return path
    data_dir = config.get("dataDir")
    if not isinstance(data_dir, str) or not data_dir:
        data_dir = DEFAULT_DATA_DIR
    return data_dir.rstrip("/") + "/" + SOCKET_NAME


def encode_request(environment: dict[str, str], stdin: bytes) -> bytes:
    block = b"\0".join(
        f"{name}={value}".encode("utf-8", "surrogateescape") for name, value in sorted(environment.items())
    )
    header = PROTOCOL_MAGIC + f" {len(block)} {len(stdin)}\n".encode()
    return header + block + stdin


def decode_reply(reply: bytes) -> tuple[bytes, int] | None:
    """Split a gateway reply into stdout and exit code; None if it is cut short or malformed."""
    line, separator, stdout = reply.partition(b"\n")
    if not separator or not line.isdigit() or len(line) > 3:
        return None
    return stdout, int(line)


class GatewayFailed(Exception):
    """The gateway took a request, then closed the connection or went silent without a reply."""

    def __init__(self, key: str, **values: object):
        super().__init__(format_message(key, False, **values))
        self.key = key
        self.values = values

    def render(self, japanese: bool) -> str:
        return format_message(self.key, japanese, **self.values)


def ask_gateway(path: str, environment: dict[str, str], stdin: bytes) -> tuple[bytes, int] | None:
    """Run a command through the gateway at ``path``.

    Return None when no gateway takes the request in time, so the caller runs
    it itself. Raise GatewayFailed when the gateway took it but gave no reply.
    """
    import _socket

    connection = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    directory_fd = -1
    try:
        connection.settimeout(ANSWER_TIMEOUT_SECONDS)
        address = path
        if len(path.encode("utf-8", "surrogateescape")) > MAX_SOCKET_PATH:
            directory, _, name = path.rpartition("/")
            directory_fd = posix.open(directory or "/", posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
            address = f"/proc/self/fd/{directory_fd}/{name}"
        try:
            connection.connect(address)
            connection.sendall(encode_request(environment, stdin))
            if connection.recv(1) != TAKEN:
                return None
            connection.sendall(COMMIT)
        except OSError:
            return None

        connection.settimeout(REPLY_TIMEOUT_SECONDS)
        chunks = []
        try:
            while chunk := connection.recv(65536):
                chunks.append(chunk)
        except OSError as error:
            raise GatewayFailed("cni.gateway_no_reply", path=path, error=error) from None
        reply = decode_reply(b"".join(chunks))
        if reply is None:
            raise GatewayFailed("cni.gateway_reply_incomplete", path=path)
        return reply
    finally:
        connection.close()
        if directory_fd >= 0:
            posix.close(directory_fd)


def error_document(config: dict, code: int, message: str, details: str) -> bytes:
    """Build a CNI error object without ``json``, in the config's version if supported."""
    from _json import encode_basestring_ascii as quoted

    version = config.get("cniVersion")
    if version not in SUPPORTED_VERSIONS:
        version = "1.0.0"
    return (
        f'{{"cniVersion": "{version}", "code": {code}, "msg": {quoted(message)}, "details": {quoted(details)}}}'
    ).encode("ascii")


def gateway_failure_document(config: dict, command: str, failure: GatewayFailed, japanese: bool = False) -> bytes:
    """Build the CNI error for an ADD that the gateway took and then dropped."""
    text = format_message("cni.gateway_failed", japanese, command=command)
    return error_document(config, TRY_AGAIN_LATER, text, failure.render(japanese))


def run_in_process(environment: dict[str, str], stdin: bytes, site_packages: str | None) -> tuple[bytes, int]:
    """Run the command in this process, with stdout held back for the one result."""
    if site_packages is not None:
        import site

        site.addsitedir(site_packages)
    from flatnet.cni import dispatch

    # Anything a library prints goes to stderr, so stdout carries only the result.
    saved_stdout = posix.dup(1)
    posix.dup2(2, 1)
    try:
        return dispatch.execute_in_process(environment, stdin)
    finally:
        sys.stdout.flush()
        posix.dup2(saved_stdout, 1)
        posix.close(saved_stdout)


def respond(environ: dict[bytes, bytes], stdin: bytes, site_packages: str | None = None) -> tuple[bytes, int]:
    """Return the stdout bytes and exit code for one plugin invocation."""
    environment = forwarded_environment(environ)
    command = environment.get("CNI_COMMAND", "")
    config = decode_config(stdin)
    if command == "VERSION":
        return version_document(config), 0

    # A config that does not decode gets its error from the full parser, in-process.
    if config is not None and command in ("ADD", "DEL", "CHECK", "GC", "STATUS"):
        try:
            reply = ask_gateway(socket_path(config), environment, stdin)
        except GatewayFailed as failure:
            # ADD may have been half done in the gateway; running it again here
            # could race with that half. The runtime's DEL after a failed ADD
            # cleans up. Every other command is safe to run again.
            if command == "ADD":
                return gateway_failure_document(config, command, failure, locale_is_japanese(environment)), 1
            reply = None
        if reply is not None:
            return reply
    return run_in_process(environment, stdin, site_packages)


def main(site_packages: str | None = None) -> None:
    """Run one plugin invocation; ``site_packages`` is for launchers started with ``python -S``."""
    stdin = sys.stdin.buffer.read()
    try:
        stdout, code = respond(dict(posix.environ), stdin, site_packages)
    except Exception as error:  # noqa: BLE001 - the runtime must get a CNI error object, not a traceback
        import traceback

        traceback.print_exc()
        details = f"{type(error).__name__}: {error}"
        text = format_message("cni.plugin_failed", locale_is_japanese(forwarded_environment(dict(posix.environ))))
        stdout, code = error_document(decode_config(stdin) or {}, INTERNAL_FAILURE, text, details), 1
    view = memoryview(stdout)
    while view:
        view = view[posix.write(1, view):]
    sys.exit(code)


def render_script(python: str, site_packages: str, launcher_dir: str) -> str:
    """Return the text of a plugin executable that starts Python without ``site`` (about 12 ms less).

    ``python -S`` skips site-packages, so the script imports this module from
    ``launcher_dir`` by file and hands ``site_packages`` on for the in-process
    path. ``-I`` also ignores PYTHON* variables from the runtime's environment.
    """
    return (
        f"#!{python} -SI\n"
        "# The flatnet CNI plugin, generated by flatnet.cni.launcher.render_script.\n"
        "import sys\n"
        f"sys.path.insert(0, {launcher_dir!r})\n"
        "import launcher\n"
        "del sys.path[0]\n"
        f"launcher.main(site_packages={site_packages!r})\n"
    )


if __name__ == "__main__":
    main()
