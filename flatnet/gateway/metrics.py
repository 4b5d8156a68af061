"""Prometheus metrics of one gateway, served as `GET /metrics` on the API listener.

Counters move where things happen (appends, stream reconnects, proxied
requests); levels that can be read off the gateway's state (lag, outbox depth,
containers, expired origins) are computed when Prometheus scrapes. So are the
plugin's in-process commands, which the plugin adds to a file in the data
directory (flatnet.cni.command_metrics).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.utils import floatToGoString

from flatnet.cni import command_metrics
from flatnet.events import outbox
from flatnet.logs import gateway as logger

if TYPE_CHECKING:
    from flatnet.gateway.state import Gateway

# Proxy latency buckets, in seconds: from a local hop (well under a millisecond)
# to the default upstream timeout.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The metric objects of one gateway, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.events_appended = Counter(
            "flatnet_events_appended", "Events written to the log, per origin", ["origin"], registry=self.registry,
        )
        self.events_applied = Counter(
            "flatnet_events_applied", "Events that changed the registry view, per origin", ["origin"], registry=self.registry,
        )
        self.stream_reconnects = Counter(
            "flatnet_stream_reconnects", "Times a follower lost a peer's stream and reconnected", ["peer"], registry=self.registry,
        )
        self.stream_resets = Counter(
            "flatnet_stream_resets", "Times a peer started a new log and its replica started over", ["peer"], registry=self.registry,
        )
        self.snapshot_repairs = Counter(
            "flatnet_snapshot_repairs", "Divergences from a peer repaired by the snapshot backstop", ["peer"], registry=self.registry,
        )
        self.proxy_requests = Counter(
            "flatnet_proxy_requests", "Proxied requests by decision and HTTP status", ["decision", "status"], registry=self.registry,
        )
        self.proxy_duration = Histogram(
            "flatnet_proxy_request_duration_seconds", "Time from request to the end of the response, by decision",
            ["decision"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.plugin_commands = _PluginCommandCollector()
        self.registry.register(self.plugin_commands)

    def watch(self, gateway: Gateway) -> None:
        """Add the levels read off ``gateway`` at scrape time, and the plugin's in-process commands in its data directory."""
        self.registry.register(_StateCollector(gateway))
        self.plugin_commands.data_dir = gateway.settings.data_dir

    def observe_plugin_command(self, command: str, ok: bool, seconds: float) -> None:
        """Count a command this gateway ran for the plugin's fast path."""
        self.plugin_commands.observe_fast(command, ok, seconds)

    def observe_request(self, decision: str, status: int, seconds: float) -> None:
        self.proxy_requests.labels(decision, str(status)).inc()
        self.proxy_duration.labels(decision).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PluginCommandCollector:
    """``flatnet_plugin_commands_total`` and ``flatnet_plugin_command_duration_seconds``, on both paths.

    The ``path`` label is ``fast`` for commands this gateway ran, counted in
    memory, and ``in-process`` for the totals the plugin keeps in
    ``<data_dir>/plugin-metrics.json``, read at each scrape.
    """

    def __init__(self) -> None:
        self.data_dir: Path | None = None
        self._fast = command_metrics.Totals()
        self._fast_lock = threading.Lock()
        self._last_read_error: str | None = None

    def observe_fast(self, command: str, ok: bool, seconds: float) -> None:
        with self._fast_lock:
            self._fast.observe(command, ok, seconds)

    def collect(self):
        commands = CounterMetricFamily(
            "flatnet_plugin_commands", "CNI commands of the plugin, by command, path (fast or in-process) and result (ok or error)",
            labels=["command", "path", "result"],
        )
        durations = HistogramMetricFamily(
            "flatnet_plugin_command_duration_seconds", "Duration of CNI commands, by command and path (fast or in-process)",
            labels=["command", "path"],
        )
        with self._fast_lock:
            _add_totals(commands, durations, "fast", self._fast)
        in_process = self._read_in_process()
        if in_process is not None:
            _add_totals(commands, durations, "in-process", in_process)
        yield commands
        yield durations

    def _read_in_process(self) -> command_metrics.Totals | None:
        if self.data_dir is None:
            return None
        try:
            totals = command_metrics.read(self.data_dir)
        except (OSError, ValueError) as error:
            # Logged once per distinct error: Prometheus scrapes every few seconds.
            message = f"{type(error).__name__}: {error}"
            if message != self._last_read_error:
                logger.warning("failed to read the plugin's in-process metrics in %s, so /metrics leaves them out: %s; "
                               "remove the file to start the totals over", self.data_dir / command_metrics.FILE_NAME, message)
                self._last_read_error = message
            return None
        if self._last_read_error is not None:
            logger.info("the plugin's in-process metrics in %s are readable again", self.data_dir / command_metrics.FILE_NAME)
            self._last_read_error = None
        return totals


def _add_totals(commands: CounterMetricFamily, durations: HistogramMetricFamily, path: str, totals: command_metrics.Totals) -> None:
    bounds = [floatToGoString(bound) for bound in totals.bounds] + ["+Inf"]
    for command, entry in sorted(totals.commands.items()):
        for result, count in entry.results.items():
            commands.add_metric([command, path, result], count)
        cumulative, buckets = 0, []
        for bound, count in zip(bounds, entry.bucket_counts):
            cumulative += count
            buckets.append((bound, cumulative))
        durations.add_metric([command, path], buckets, entry.seconds)


class _StateCollector:
    def __init__(self, gateway: Gateway):
        self.gateway = gateway

    def collect(self):
        gateway = self.gateway
        now = time.monotonic()
        lag = GaugeMetricFamily("flatnet_peer_lag_events", "Events a peer has announced that are not stored here yet", labels=["peer"])
        heard = GaugeMetricFamily("flatnet_peer_last_heard_seconds", "Seconds since the last frame from a peer", labels=["peer"])
        connected = GaugeMetricFamily("flatnet_peer_connected", "1 while the follower holds the peer's stream", labels=["peer"])
        for host_id, status in gateway.peers.items():
            peer = str(host_id)
            lag.add_metric([peer], max(0, status.remote_head - gateway.journal.head(host_id)))
            last = gateway.liveness.last_heard.get(host_id)
            heard.add_metric([peer], now - last if last is not None else float("nan"))
            connected.add_metric([peer], 1 if status.state.value == "connected" else 0)
        yield lag
        yield heard
        yield connected

        expired = gateway.expired_origins()
        yield GaugeMetricFamily("flatnet_expired_origins", "Origins silent for longer than the ttl", value=len(expired))

        containers = GaugeMetricFamily("flatnet_containers", "Containers in the view, per host", labels=["host"])
        per_host: dict[int, int] = {}
        for container in gateway.journal.view.containers.values():
            per_host[container.host_id] = per_host.get(container.host_id, 0) + 1
        for host_id, count in sorted(per_host.items()):
            containers.add_metric([str(host_id)], count)
        yield containers

        head = GaugeMetricFamily("flatnet_log_head", "Last seq stored per origin", labels=["origin"])
        for origin, seq in gateway.journal.log.vector().items():
            head.add_metric([str(origin)], seq)
        yield head

        yield GaugeMetricFamily(
            "flatnet_outbox_depth", "Changes waiting in the outbox", value=len(outbox.pending(gateway.settings.data_dir)),
        )


async def serve_metrics(request: web.Request) -> web.Response:
    from flatnet.gateway.state import GATEWAY

    body = request.app[GATEWAY].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
