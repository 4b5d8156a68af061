"""The plugin's in-process commands in the gateway's /metrics: run without a gateway, then scraped from one."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flatnet.cni import command_metrics
from tests.cni.conftest import FAST, HOST_ID, IN_PROCESS, Plugin, PluginHost, container_address
from tests.conftest import require_root
from tests.gateway.harness import GatewayProcess, http

pytestmark = pytest.mark.root

COMMANDS = "flatnet_plugin_commands_total"
DURATION_COUNT = "flatnet_plugin_command_duration_seconds_count"
DURATION_SUM = "flatnet_plugin_command_duration_seconds_sum"
DURATION_BUCKET = "flatnet_plugin_command_duration_seconds_bucket"


@pytest.fixture
def host(tmp_path):
    """A host namespace whose gateway is configured on the plugin's data directory but not started."""
    require_root("the in-process metrics tests", tools=("ip", "nsenter", "curl"))
    host = PluginHost(tmp_path, gateway=False)
    host.start()
    host.gateway = GatewayProcess(host.name, tmp_path, HOST_ID, [])
    try:
        yield host
    finally:
        host.stop()


def _samples(gateway: GatewayProcess) -> dict[tuple[str, tuple], float]:
    status, body = http(gateway.netns, "GET", f"{gateway.api}/metrics")
    assert status == 200, body
    samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_in_process_runs_show_in_metrics(host):
    plugin = Plugin(host, IN_PROCESS, host.gateway.data_dir)
    netns = plugin.container()
    container_id = uuid.uuid4().hex

    plugin.add(container_id, netns)
    plugin.delete(container_id, netns)
    failed = plugin.run("CHECK", container_id, netns)
    host.gateway.start()
    samples = _samples(host.gateway)

    assert failed.returncode == 1
    assert _value(samples, COMMANDS, command="ADD", path="in-process", result="ok") == 1
    assert _value(samples, COMMANDS, command="ADD", path="in-process", result="error") == 0
    assert _value(samples, COMMANDS, command="DEL", path="in-process", result="ok") == 1
    assert _value(samples, COMMANDS, command="CHECK", path="in-process", result="error") == 1
    assert _value(samples, DURATION_COUNT, command="ADD", path="in-process") == 1
    assert _value(samples, DURATION_COUNT, command="DEL", path="in-process") == 1
    assert _value(samples, DURATION_SUM, command="ADD", path="in-process") > 0
    assert _value(samples, DURATION_BUCKET, command="ADD", path="in-process", le="+Inf") == 1
    assert _value(samples, COMMANDS, command="ADD", path="fast", result="ok") is None


def test_fast_path_and_in_process_are_counted_apart(host):
    in_process = Plugin(host, IN_PROCESS, host.gateway.data_dir)
    fast = Plugin(host, FAST, host.gateway.data_dir)
    in_process.add(uuid.uuid4().hex, in_process.container())
    host.gateway.start()
    container_id = uuid.uuid4().hex

    fast.add(container_id, fast.container())
    samples = _samples(host.gateway)

    assert fast.used_fast_path("ADD", container_id)
    assert _value(samples, COMMANDS, command="ADD", path="fast", result="ok") == 1
    assert _value(samples, COMMANDS, command="ADD", path="in-process", result="ok") == 1
    assert _value(samples, DURATION_COUNT, command="ADD", path="fast") == 1
    assert _value(samples, DURATION_COUNT, command="ADD", path="in-process") == 1


def test_in_process_totals_outlive_gateway_restart(host):
    plugin = Plugin(host, IN_PROCESS, host.gateway.data_dir)
    plugin.add(uuid.uuid4().hex, plugin.container())
    host.gateway.start()
    before = _samples(host.gateway)

    host.gateway.stop()
    plugin.add(uuid.uuid4().hex, plugin.container())
    host.gateway.start()
    after = _samples(host.gateway)

    assert _value(before, COMMANDS, command="ADD", path="in-process", result="ok") == 1
    assert _value(after, COMMANDS, command="ADD", path="in-process", result="ok") == 2
    assert _value(after, DURATION_COUNT, command="ADD", path="in-process") == 2


def test_unwritable_metrics_file_does_not_fail_add(host):
    plugin = Plugin(host, IN_PROCESS, host.gateway.data_dir)
    # A directory in the file's place: neither reading nor renaming over it works, even for root.
    (host.gateway.data_dir / command_metrics.FILE_NAME).mkdir(parents=True)
    container_id = uuid.uuid4().hex

    result = plugin.add(container_id, plugin.container())
    host.gateway.start()
    samples = _samples(host.gateway)

    assert container_address(result) == f"10.100.{HOST_ID}.10/24"
    assert list(plugin.reservations()) == [container_id]
    cni_log = (host.gateway.data_dir / "cni.log").read_text()
    assert "failed to record the in-process ADD" in cni_log
    assert _value(samples, COMMANDS, command="ADD", path="in-process", result="ok") is None
    assert "failed to read the plugin's in-process metrics" in host.gateway.log_text()
