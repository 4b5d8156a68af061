"""flatnet install and uninstall, into a scratch root directory."""

import json
import os
import subprocess

import pytest

from flatnet.cni.config import load_netconf
from flatnet.errors import FlatnetError
from flatnet.gateway.settings import load_settings
from flatnet.install import install, uninstall


def _tree(root):
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def test_install_then_uninstall_leaves_nothing(tmp_path):
    install(5, root=tmp_path)

    uninstall(root=tmp_path, purge=True)

    assert _tree(tmp_path) == []


def test_install_writes_every_file(tmp_path):
    install(5, root=tmp_path)

    assert (tmp_path / "opt/cni/bin/flatnet").stat().st_mode & 0o111
    assert (tmp_path / "etc/cni/net.d/flatnet.conflist").is_file()
    assert (tmp_path / "etc/flatnet/gateway.toml").is_file()
    assert (tmp_path / "etc/systemd/system/flatnet-gateway.service").is_file()
    assert (tmp_path / "var/lib/flatnet").is_dir()


def test_conflist_is_valid_for_the_host(tmp_path):
    install(5, root=tmp_path)

    document = json.loads((tmp_path / "etc/cni/net.d/flatnet.conflist").read_text())
    conf = load_netconf(dict(document["plugins"][0], cniVersion=document["cniVersion"], name=document["name"]))

    assert conf.host_id == 5
    assert str(conf.subnet) == "10.100.5.0/24"
    assert conf.registry_endpoints == ("http://10.100.0.5:8080",)


def test_gateway_config_loads(tmp_path):
    install(5, root=tmp_path)

    settings = load_settings(tmp_path / "etc/flatnet/gateway.toml")

    assert settings.host_id == 5
    assert settings.api_listen == "10.100.0.5:8080"


def test_installed_plugin_answers_version(tmp_path):
    install(5, root=tmp_path)

    result = subprocess.run(
        [str(tmp_path / "opt/cni/bin/flatnet")], input=b'{"cniVersion": "1.0.0"}',
        env=dict(os.environ, CNI_COMMAND="VERSION"), capture_output=True, timeout=30,
    )

    assert result.returncode == 0, result.stderr
    assert "1.0.0" in json.loads(result.stdout)["supportedVersions"]


def test_changed_file_is_not_overwritten_without_force(tmp_path):
    install(5, root=tmp_path)
    gateway_config = tmp_path / "etc/flatnet/gateway.toml"
    gateway_config.write_text(gateway_config.read_text() + "# edited by the operator\n")

    plugin = tmp_path / "opt/cni/bin/flatnet"
    plugin.unlink()

    with pytest.raises(FlatnetError, match="gateway.toml already exists"):
        install(5, root=tmp_path)

    assert "edited by the operator" in gateway_config.read_text()
    assert not plugin.exists()


def test_force_overwrites_changed_files(tmp_path):
    install(5, root=tmp_path)

    install(6, root=tmp_path, force=True)

    assert '"hostId": 6' in (tmp_path / "etc/cni/net.d/flatnet.conflist").read_text()


def test_dry_run_writes_nothing(tmp_path):
    lines = install(5, root=tmp_path, dry_run=True)

    assert _tree(tmp_path) == []
    assert any("flatnet.conflist" in line for line in lines)


def test_uninstall_keeps_foreign_files_and_data(tmp_path):
    install(5, root=tmp_path)
    foreign = tmp_path / "etc/cni/net.d/flatnet.conflist"
    foreign.write_text('{"written": "by hand"}')

    uninstall(root=tmp_path)

    assert foreign.exists()
    assert (tmp_path / "var/lib/flatnet").is_dir()
    assert not (tmp_path / "opt/cni/bin/flatnet").exists()


@pytest.mark.parametrize("host_id", [0, 255])
def test_invalid_host_id_is_rejected(tmp_path, host_id):
    with pytest.raises(FlatnetError, match=f"host id {host_id} is invalid"):
        install(host_id, root=tmp_path)
