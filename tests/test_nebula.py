"""The fleet's part of a Nebula config, merging it into a file, and certificates signed with nebula-cert."""

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from flatnet import nebula
from flatnet.errors import FlatnetError

needs_nebula_cert = pytest.mark.skipif(
    shutil.which("nebula-cert") is None, reason="needs nebula-cert (apt-get install -y nebula)",
)

OPERATOR_CONFIG = """\
# written by an operator
pki: {ca: /etc/nebula/ca.crt, cert: /etc/nebula/host.crt, key: /etc/nebula/host.key}
tun:
  dev: nebula1
  unsafe_routes:
    - {route: 192.168.50.0/24, via: 10.100.0.9}
    - {route: 10.100.9.0/24, via: 10.100.0.9}
firewall:
  inbound:
    - {port: 22, proto: tcp, cidr: 10.100.0.0/24}
    - {port: any, proto: any, cidr: 10.100.9.0/24}
"""


def test_fleet_config_routes_via_peer_address():
    config = nebula.fleet_config(1, [1, 3, 2])

    assert config["tun"]["unsafe_routes"] == [
        {"route": "10.100.2.0/24", "via": "10.100.0.2", "metric": 100},
        {"route": "10.100.3.0/24", "via": "10.100.0.3", "metric": 100},
    ]


def test_fleet_config_firewall_admits_peers_and_their_containers():
    config = nebula.fleet_config(1, [2])

    expected = [
        {"port": "any", "proto": "any", "cidr": "10.100.0.2/32"},
        {"port": "any", "proto": "any", "cidr": "10.100.2.0/24"},
    ]
    assert config["firewall"]["inbound"] == expected
    assert config["firewall"]["outbound"] == expected


def test_rendered_fleet_config_is_yaml_with_a_comment():
    text = nebula.render_fleet_config(1, [2])

    assert text.startswith("# The fleet-dependent part of host 1's Nebula config (peers: 2).")
    assert yaml.safe_load(text) == nebula.fleet_config(1, [2])


def test_merge_keeps_what_the_operator_wrote():
    merged = nebula.merge_fleet_config(yaml.safe_load(OPERATOR_CONFIG), 1, [2], path=Path("config.yml"))

    assert merged["pki"]["cert"] == "/etc/nebula/host.crt"
    assert merged["tun"]["dev"] == "nebula1"
    assert merged["tun"]["unsafe_routes"] == [
        {"route": "192.168.50.0/24", "via": "10.100.0.9"},
        {"route": "10.100.2.0/24", "via": "10.100.0.2", "metric": 100},
    ]
    assert merged["firewall"]["inbound"][0] == {"port": 22, "proto": "tcp", "cidr": "10.100.0.0/24"}
    assert {"port": "any", "proto": "any", "cidr": "10.100.9.0/24"} not in merged["firewall"]["inbound"]


def test_update_rewrites_file_only_when_the_fleet_changes(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text(OPERATOR_CONFIG)
    path.chmod(0o640)

    first = nebula.update_config_file(path, 1, [2, 3])
    written = path.read_text()
    second = nebula.update_config_file(path, 1, [2, 3])

    assert first.changed
    assert first.routes_after == (
        "192.168.50.0/24 via 10.100.0.9", "10.100.2.0/24 via 10.100.0.2", "10.100.3.0/24 via 10.100.0.3",
    )
    assert not second.changed
    assert path.read_text() == written
    assert path.stat().st_mode & 0o777 == 0o640
    assert list(tmp_path.iterdir()) == [path]


def test_update_rejects_non_mapping_file(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text("- just\n- a list\n")

    with pytest.raises(FlatnetError, match="must be a YAML mapping"):
        nebula.update_config_file(path, 1, [2])


BROKEN_YAML = "pki:\n  ca: /etc/nebula/ca.crt\n tun:\n  dev: nebula1\n"


def test_update_names_line_of_bad_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("LC_ALL", "C")
    path = tmp_path / "config.yml"
    path.write_text(BROKEN_YAML)

    with pytest.raises(FlatnetError) as raised:
        nebula.update_config_file(path, 1, [2])

    message = str(raised.value)
    assert message.startswith(f"Nebula config {path} is not valid YAML: line 3, column 2: expected <block end>")
    assert "\n" not in message
    assert path.read_text() == BROKEN_YAML


def test_bad_yaml_in_japanese(tmp_path, monkeypatch):
    monkeypatch.setenv("LC_ALL", "ja_JP.UTF-8")
    path = tmp_path / "config.yml"
    path.write_text('tun: {dev: "nebula1}\n')

    with pytest.raises(FlatnetError) as raised:
        nebula.update_config_file(path, 1, [2])

    message = str(raised.value)
    assert message.startswith(f"Nebula 設定 {path} は正しい YAML ではありません: 2 行 1 列: ")
    assert "\n" not in message


def test_update_rejects_non_list_routes(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text("tun: {unsafe_routes: 10.100.2.0/24}\n")

    with pytest.raises(FlatnetError, match=r"tun.unsafe_routes in Nebula config .* must be a list"):
        nebula.update_config_file(path, 1, [2])


def test_update_names_a_missing_file(tmp_path):
    with pytest.raises(FlatnetError, match="cannot read Nebula config .*missing.yml"):
        nebula.update_config_file(tmp_path / "missing.yml", 1, [2])


def _ca(directory: Path) -> tuple[Path, Path]:
    ca_crt, ca_key = directory / "ca.crt", directory / "ca.key"
    nebula.create_ca("flatnet-test", ca_crt, ca_key)
    return ca_crt, ca_key


@needs_nebula_cert
def test_signed_certificate_carries_nebula_address_and_subnet(tmp_path):
    ca_crt, ca_key = _ca(tmp_path)

    nebula.sign(7, ca_crt=ca_crt, ca_key=ca_key, out_crt=tmp_path / "h7.crt", out_key=tmp_path / "h7.key")
    certificate = nebula.read_certificate(tmp_path / "h7.crt")

    assert certificate.name == "h7"
    assert [str(network) for network in certificate.networks] == ["10.100.0.7/24"]
    assert [str(subnet) for subnet in certificate.subnets] == ["10.100.7.0/24"]
    assert certificate.problems(7) == []


@needs_nebula_cert
def test_certificate_without_subnet_names_the_fix(tmp_path):
    ca_crt, ca_key = _ca(tmp_path)
    subprocess.run(
        ["nebula-cert", "sign", "-ca-crt", str(ca_crt), "-ca-key", str(ca_key), "-name", "h7", "-ip", "10.100.0.7/24",
         "-out-crt", str(tmp_path / "h7.crt"), "-out-key", str(tmp_path / "h7.key")],
        check=True, capture_output=True, timeout=30,
    )

    problems = nebula.read_certificate(tmp_path / "h7.crt").problems(7)

    assert len(problems) == 1
    assert "not 10.100.7.0/24" in problems[0]
    assert "flatnet nebula sign --host-id 7" in problems[0]


@needs_nebula_cert
def test_sign_never_overwrites(tmp_path):
    ca_crt, ca_key = _ca(tmp_path)
    (tmp_path / "h2.crt").write_text("keep me")

    with pytest.raises(FlatnetError, match="h2.crt already exists"):
        nebula.sign(2, ca_crt=ca_crt, ca_key=ca_key, out_crt=tmp_path / "h2.crt", out_key=tmp_path / "h2.key")
    assert (tmp_path / "h2.crt").read_text() == "keep me"


def test_sign_rejects_host_id_out_of_range(tmp_path):
    with pytest.raises(FlatnetError, match="host id 255 is out of range: use 1 to 254"):
        nebula.sign(255, ca_crt=tmp_path / "ca.crt", ca_key=tmp_path / "ca.key",
                    out_crt=tmp_path / "x.crt", out_key=tmp_path / "x.key")


@needs_nebula_cert
def test_sign_reports_nebula_cert_error(tmp_path):
    with pytest.raises(FlatnetError, match="nebula-cert sign failed with exit status 1"):
        nebula.sign(2, ca_crt=tmp_path / "no-ca.crt", ca_key=tmp_path / "no-ca.key",
                    out_crt=tmp_path / "h2.crt", out_key=tmp_path / "h2.key")


def test_certificate_path_is_relative_to_the_config(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text("pki: {ca: ca.crt, cert: host.crt, key: host.key}\n")

    assert nebula.certificate_path(path) == tmp_path / "host.crt"


@pytest.mark.parametrize("target", ["", "nebula/../x", "-x"])
def test_restart_rejects_unknown_target(target):
    with pytest.raises(FlatnetError, match="neither a systemd unit"):
        nebula.restart(target)


def test_restart_rejects_a_process_that_is_not_nebula():
    with pytest.raises(FlatnetError, match="not nebula"):
        nebula.restart_process(1)
