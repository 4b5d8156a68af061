"""flatnet install and uninstall, into a scratch root directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flatnet.cni.config import load_netconf
from flatnet.errors import FlatnetError
from flatnet.gateway.app import lock_data_dir
from flatnet.gateway.settings import load_settings
from flatnet.install import install, uninstall

FLATNET = Path(sys.executable).parent / "flatnet"
PEERS = '\n[[peers]]\nhost_id = 2\napi = "http://10.100.0.2:8080"\n'


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


def _run_flatnet(*args, lang="C"):
    env = {name: value for name, value in os.environ.items() if name not in ("LC_ALL", "LC_MESSAGES")}
    env["LANG"] = lang
    return subprocess.run([str(FLATNET), *args], env=env, capture_output=True, text=True, timeout=60)


def _kept_line(lines, path):
    return next(line for line in lines if str(path) in line)


def test_dry_run_shows_file_contents(tmp_path):
    lines = install(5, root=tmp_path, dry_run=True)
    output = "\n".join(lines)

    assert f"would write {tmp_path}/etc/cni/net.d/flatnet.conflist (mode 0644):" in lines
    assert '"hostId": 5,' in output
    assert "    host_id = 5" in lines
    assert '    api_listen = "10.100.0.5:8080"' in lines
    assert "    [Service]" in lines
    assert "{host_id}" not in output
    assert _tree(tmp_path) == []


def test_uninstall_keeps_edited_config(tmp_path):
    install(1, root=tmp_path)
    gateway_config = tmp_path / "etc/flatnet/gateway.toml"
    gateway_config.write_text(gateway_config.read_text() + PEERS)

    lines = uninstall(root=tmp_path)

    assert PEERS in gateway_config.read_text()
    assert "changed since flatnet install wrote it; remove it with --force" in _kept_line(lines, gateway_config)
    assert not (tmp_path / "opt/cni/bin/flatnet").exists()
    assert not (tmp_path / "etc/systemd/system/flatnet-gateway.service").exists()


def test_uninstall_force_removes_edited_config(tmp_path):
    install(1, root=tmp_path)
    gateway_config = tmp_path / "etc/flatnet/gateway.toml"
    gateway_config.write_text(gateway_config.read_text() + PEERS)
    uninstall(root=tmp_path)

    lines = uninstall(root=tmp_path, force=True, purge=True)

    assert f"removed    {gateway_config}" in lines
    assert _tree(tmp_path) == []


def test_uninstall_dry_run_reports_edited_config(tmp_path):
    install(1, root=tmp_path)
    gateway_config = tmp_path / "etc/flatnet/gateway.toml"
    gateway_config.write_text(gateway_config.read_text() + PEERS)

    lines = uninstall(root=tmp_path, dry_run=True)

    assert "remove it with --force" in _kept_line(lines, gateway_config)
    assert (tmp_path / "opt/cni/bin/flatnet").exists()


def test_reinstall_with_force_updates_record(tmp_path):
    install(5, root=tmp_path)
    install(6, root=tmp_path, force=True)

    uninstall(root=tmp_path, purge=True)

    assert _tree(tmp_path) == []


def test_uninstall_keeps_unrecorded_files(tmp_path):
    install(5, root=tmp_path)
    # An older flatnet recorded the directories it created, but no checksums.
    manifest = tmp_path / "etc/flatnet/install-manifest.json"
    directories = json.loads(manifest.read_text())["directories"]
    manifest.unlink()
    (tmp_path / "etc/flatnet/installed-directories.json").write_text(json.dumps({"directories": directories}))
    plugin = tmp_path / "opt/cni/bin/flatnet"

    lines = uninstall(root=tmp_path, purge=True)

    assert plugin.exists()
    assert "recorded no checksum" in _kept_line(lines, plugin)

    uninstall(root=tmp_path, purge=True, force=True)

    assert _tree(tmp_path) == []


def test_uninstall_force_keeps_foreign_file(tmp_path):
    foreign = tmp_path / "etc/cni/net.d/flatnet.conflist"
    foreign.parent.mkdir(parents=True)
    foreign.write_text('{"written": "by hand"}')

    lines = uninstall(root=tmp_path, force=True)

    assert foreign.exists()
    assert "not written by flatnet install" in _kept_line(lines, foreign)


def test_uninstall_names_each_kept_directory(tmp_path):
    install(5, root=tmp_path)

    lines = uninstall(root=tmp_path)

    data_line = _kept_line(lines, tmp_path / "var/lib/flatnet")
    log_line = _kept_line(lines, tmp_path / "var/log/flatnet")
    assert "event log" in data_line
    assert "access log" in log_line
    assert "event log" not in log_line


def test_uninstall_rejects_running_gateway(tmp_path):
    install(5, root=tmp_path)
    lock = lock_data_dir(tmp_path / "var/lib/flatnet")
    try:
        with pytest.raises(FlatnetError, match=f"gateway \\(pid {os.getpid()}\\) is running"):
            uninstall(root=tmp_path, force=True, purge=True)
    finally:
        os.close(lock)

    assert (tmp_path / "opt/cni/bin/flatnet").exists()
    assert (tmp_path / "var/lib/flatnet/gateway.lock").exists()


def test_uninstall_runs_after_gateway_stops(tmp_path):
    install(5, root=tmp_path)
    os.close(lock_data_dir(tmp_path / "var/lib/flatnet"))

    uninstall(root=tmp_path, purge=True)

    assert _tree(tmp_path) == []


def test_uninstall_rejects_enabled_unit(tmp_path):
    install(5, root=tmp_path)
    wants = tmp_path / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir()
    (wants / "flatnet-gateway.service").symlink_to("../flatnet-gateway.service")

    with pytest.raises(FlatnetError, match="systemctl disable --now flatnet-gateway"):
        uninstall(root=tmp_path)

    assert (tmp_path / "etc/systemd/system/flatnet-gateway.service").exists()


@pytest.mark.parametrize("value", ["0", "255", "-1", "two"])
def test_cli_invalid_host_id_is_usage_error(tmp_path, value):
    result = _run_flatnet("install", f"--host-id={value}", "--root", str(tmp_path))

    assert result.returncode == 2
    assert f"argument --host-id: host id {value!r} is invalid: give a whole number from 1 to 254" in result.stderr
    assert _tree(tmp_path) == []


def test_cli_invalid_host_id_in_japanese(tmp_path):
    result = _run_flatnet("install", "--host-id", "0", "--root", str(tmp_path), lang="ja_JP.UTF-8")

    assert result.returncode == 2
    assert "引数 --host-id: ホスト ID '0' は無効です。1 から 254 の整数" in result.stderr


def test_cli_uninstall_force_removes_edited_config(tmp_path):
    install(1, root=tmp_path)
    gateway_config = tmp_path / "etc/flatnet/gateway.toml"
    gateway_config.write_text(gateway_config.read_text() + PEERS)

    without_force = _run_flatnet("uninstall", "--root", str(tmp_path))
    with_force = _run_flatnet("uninstall", "--root", str(tmp_path), "--force", "--purge")

    assert without_force.returncode == 0, without_force.stderr
    assert f"kept       {gateway_config} (changed since" in without_force.stdout
    assert with_force.returncode == 0, with_force.stderr
    assert _tree(tmp_path) == []
