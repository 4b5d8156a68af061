"""The lab's pure parts: addresses, rendered configuration files, state file, image tree, CLI parsing."""

import json
import shutil
import socket
import subprocess
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml

from flatnet.cli import build_parser
from flatnet.errors import FlatnetError
from flatnet.lab import config, layout, services
from flatnet.lab.build import validate_settings
from flatnet.lab.config import LabSettings
from flatnet.lab.image import REQUIRED_APPLETS, START_PATH, big_file_bytes, write_root_tree
from flatnet.lab.layout import LabPaths
from flatnet.lab.state import LabState, new_state

LAB = LabPaths(Path("/var/lib/flatnet-lab"))
THREE_HOSTS = LabSettings(hosts=3, ttl=300, mtu=1300)


def test_addresses_follow_the_host_id():
    assert str(layout.lan_address(7)) == "198.18.0.7"
    assert str(layout.nebula_address(7)) == "10.100.0.7"
    assert str(layout.container_subnet(7)) == "10.100.7.0/24"
    assert str(layout.bridge_address(7)) == "10.100.7.1"
    assert layout.api_url(7) == "http://10.100.0.7:8080"
    assert layout.netns_name(layout.host_name(7)) == "flatnet-h7"


def test_lab_dir_comes_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FLATNET_LAB_DIR", str(tmp_path / "elsewhere"))
    assert layout.default_lab_dir() == tmp_path / "elsewhere"

    monkeypatch.delenv("FLATNET_LAB_DIR")
    assert layout.default_lab_dir() == Path("/var/lib/flatnet-lab")


def _nebula_config(host_id: int, settings: LabSettings = THREE_HOSTS, fleet=None) -> dict:
    return yaml.safe_load(config.render_nebula_config(LAB, host_id, settings, fleet))


def test_lighthouse_config_has_no_lighthouse_hosts():
    nebula = _nebula_config(1)

    assert nebula["lighthouse"]["am_lighthouse"] is True
    assert nebula["lighthouse"]["hosts"] == []
    assert nebula["static_host_map"] == {"10.100.0.1": ["198.18.0.1:4242"]}


def test_member_config_points_at_lighthouse():
    nebula = _nebula_config(2)

    assert nebula["lighthouse"]["am_lighthouse"] is False
    assert nebula["lighthouse"]["hosts"] == ["10.100.0.1"]
    assert nebula["static_host_map"] == {"10.100.0.1": ["198.18.0.1:4242"]}
    assert nebula["pki"]["cert"] == "/var/lib/flatnet-lab/pki/h2.crt"


def test_unsafe_routes_cover_every_other_host():
    nebula = _nebula_config(2)

    assert nebula["tun"]["unsafe_routes"] == [
        {"route": "10.100.1.0/24", "via": "10.100.0.1", "metric": 100},
        {"route": "10.100.3.0/24", "via": "10.100.0.3", "metric": 100},
    ]
    assert nebula["tun"]["dev"] == "nebula1"
    assert nebula["tun"]["mtu"] == 1300


def test_firewall_admits_only_the_fleet():
    nebula = _nebula_config(2)

    cidrs = [rule["cidr"] for rule in nebula["firewall"]["inbound"]]
    assert cidrs == ["10.100.0.1/32", "10.100.1.0/24", "10.100.0.3/32", "10.100.3.0/24"]
    assert nebula["firewall"]["outbound"] == nebula["firewall"]["inbound"]


def test_host_joined_later_is_left_out_of_the_fleet():
    settings = LabSettings(hosts=3, ttl=300, mtu=1300, joined_later=(3,))

    nebula = _nebula_config(1, settings)
    gateway = tomllib.loads(config.render_gateway_config(LAB, 1, settings))

    assert [route["route"] for route in nebula["tun"]["unsafe_routes"]] == ["10.100.2.0/24"]
    assert [peer["host_id"] for peer in gateway["peers"]] == [2]


def test_single_host_has_empty_unsafe_routes():
    nebula = _nebula_config(1, LabSettings(hosts=1, ttl=300, mtu=1300))

    assert nebula["tun"]["unsafe_routes"] == []


def test_gateways_keep_routes_through_nebula():
    settings = tomllib.loads(config.render_gateway_config(LAB, 2, THREE_HOSTS))

    assert settings["routes"] == {"mode": "dev", "device": "nebula1"}


def test_wsl_host_routes_via_its_windows():
    wsl = LabSettings(hosts=3, ttl=300, mtu=1300, wsl=(3,))

    settings = tomllib.loads(config.render_gateway_config(LAB, 3, wsl))
    network = json.loads(config.render_conflist(LAB, 3, wsl))

    assert settings["routes"] == {"mode": "via", "via": "198.18.103.1"}
    assert settings["api_listen"] == "198.18.103.2:8080"
    assert network["plugins"][0]["registryEndpoints"] == ["http://198.18.103.2:8080"]


@pytest.mark.skipif(shutil.which("nebula") is None or shutil.which("nebula-cert") is None,
                    reason="needs nebula and nebula-cert (apt-get install -y nebula)")
def test_nebula_accepts_rendered_config(tmp_path):
    from flatnet.lab.pki import create_pki

    paths = LabPaths(tmp_path)
    create_pki(paths, THREE_HOSTS.host_ids)
    for host_id in THREE_HOSTS.host_ids:
        config_file = tmp_path / f"h{host_id}.yml"
        config_file.write_text(config.render_nebula_config(paths, host_id, THREE_HOSTS))

        result = subprocess.run(["nebula", "-test", "-config", str(config_file)],
                                capture_output=True, text=True, timeout=30)

        assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("nebula-cert") is None, reason="needs nebula-cert (apt-get install -y nebula)")
def test_certificate_carries_address_and_subnet(tmp_path):
    from flatnet.lab.pki import create_pki

    paths = LabPaths(tmp_path)
    create_pki(paths, [2])
    printed = subprocess.run(["nebula-cert", "print", "-json", "-path", str(paths.host_cert("h2"))],
                             capture_output=True, text=True, check=True, timeout=30)
    details = json.loads(printed.stdout)["details"]

    assert details["ips"] == ["10.100.0.2/24"]
    assert details["subnets"] == ["10.100.2.0/24"]
    assert details["name"] == "h2"


def test_gateway_config_lists_peers_but_not_itself():
    settings = tomllib.loads(config.render_gateway_config(LAB, 2, THREE_HOSTS))

    assert settings["host_id"] == 2
    assert settings["api_listen"] == "10.100.0.2:8080"
    assert settings["proxy_listen"] == "198.18.0.2:80"
    assert settings["data_dir"] == "/var/lib/flatnet-lab/h2/data"
    assert settings["access_log"] == "/var/lib/flatnet-lab/h2/access.log"
    assert settings["domain"] == "flatnet"
    assert settings["ttl"] == 300
    assert settings["resync"] == 30
    assert settings["heartbeat"] == 5
    assert settings["peers"] == [
        {"host_id": 1, "api": "http://10.100.0.1:8080"},
        {"host_id": 3, "api": "http://10.100.0.3:8080"},
    ]


def test_gateway_config_quotes_unusual_paths():
    paths = LabPaths(Path('/tmp/odd "lab" \\ dir'))
    settings = tomllib.loads(config.render_gateway_config(paths, 1, THREE_HOSTS))

    assert settings["data_dir"] == '/tmp/odd "lab" \\ dir/h1/data'


@pytest.mark.parametrize(("ttl", "heartbeat"), [(300, 5), (15, 5), (9, 3), (6, 2), (2, 1), (1, 1)])
def test_heartbeat_stays_below_ttl(ttl, heartbeat):
    assert config.heartbeat_seconds(ttl) == heartbeat


def test_short_ttl_reaches_gateway_config():
    settings = tomllib.loads(config.render_gateway_config(LAB, 1, LabSettings(hosts=2, ttl=6, mtu=1300)))

    assert settings["ttl"] == 6
    assert settings["heartbeat"] == 2


def test_containers_conf_selects_cni_runc_and_lab_dirs():
    plugin_dirs = [LAB.cni_bin_dir, Path("/usr/lib/cni")]
    conf = tomllib.loads(config.render_containers_conf(LAB, 2, plugin_dirs))

    assert conf["containers"]["default_ulimits"] == []
    assert conf["containers"]["annotations"] == ["flatnet.lab.host=2"]
    assert conf["network"]["network_backend"] == "cni"
    assert conf["network"]["cni_plugin_dirs"] == ["/var/lib/flatnet-lab/cni-bin", "/usr/lib/cni"]
    assert conf["network"]["network_config_dir"] == "/var/lib/flatnet-lab/h2/cni"
    assert conf["network"]["default_network"] == "flatnet"
    assert conf["engine"]["runtime"] == "runc"
    assert conf["engine"]["cgroup_manager"] == "cgroupfs"
    assert conf["engine"]["events_logger"] == "file"
    assert conf["engine"]["events_logfile_path"] == "/var/lib/flatnet-lab/h2/podman-events.log"


def test_conflist_runs_flatnet_plugin():
    network = json.loads(config.render_conflist(LAB, 2, LabSettings(hosts=2, ttl=300, mtu=1400)))

    assert network == {
        "cniVersion": "1.0.0",
        "name": "flatnet",
        "plugins": [{
            "type": "flatnet",
            "hostId": 2,
            "ipRange": "10.100.2.0/24",
            "gateway": "10.100.2.1",
            "registryEndpoints": ["http://10.100.0.2:8080"],
            "dataDir": "/var/lib/flatnet-lab/h2/data",
            "bridge": "flatnet0",
            "mtu": 1400,
            "capabilities": {"portMappings": True, "aliases": True},
            "reuseDelay": 300,
        }],
    }


def test_chained_conflist_runs_portmap_and_tuning_after_flatnet():
    network = json.loads(config.render_conflist(LAB, 2, THREE_HOSTS, chained=config.PORTMAP_AND_TUNING))

    assert [plugin["type"] for plugin in network["plugins"]] == ["flatnet", "portmap", "tuning"]
    assert network["plugins"][1]["capabilities"] == {"portMappings": True}


@pytest.mark.parametrize(("hosts", "ttl", "mtu", "named"), [
    (0, 300, 1300, "--hosts 0"),
    (100, 300, 1300, "--hosts 100"),
    (2, 0, 1300, "--ttl 0"),
    (2, 300, 1441, "--mtu 1441"),
    (2, 300, 575, "--mtu 575"),
])
def test_invalid_settings_name_the_option(hosts, ttl, mtu, named):
    with pytest.raises(FlatnetError) as raised:
        validate_settings(hosts, ttl, mtu)

    assert named in str(raised.value)


def test_largest_lab_and_mtu_are_accepted():
    settings = validate_settings(99, 1, 1440)

    assert settings.host_ids == range(1, 100)


def test_state_survives_json_round_trip():
    state = new_state(LAB, THREE_HOSTS, "localhost/flatnet-lab/web:latest")
    state.members["h2"].processes["nebula"].pid = 1234

    again = LabState.from_json(state.to_json())

    assert again == state
    assert [member.name for member in again.hosts] == ["h1", "h2", "h3"]
    assert again.members["client"].lan_address == "198.18.0.100"
    assert not again.members["client"].is_host
    assert again.members["h3"].subnet == "10.100.3.0/24"


@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox-static (apt-get install -y busybox-static)")
def test_image_tree_has_busybox_applets_and_start_script(tmp_path):
    from flatnet.lab.image import _busybox

    busybox, applets = _busybox()
    tar_path = tmp_path / "root.tar"

    write_root_tree(tar_path, busybox, applets)

    with tarfile.open(tar_path) as archive:
        members = {member.name: member for member in archive.getmembers()}
        script = archive.extractfile(members[START_PATH.lstrip("/")]).read().decode()
        big = archive.extractfile(members["www/big.bin"]).read()
    assert members["bin/busybox"].mode & 0o111
    for applet in REQUIRED_APPLETS:
        assert members[f"bin/{applet}"].issym()
        assert members[f"bin/{applet}"].linkname == "busybox"
    assert members[START_PATH.lstrip("/")].mode & 0o111
    assert "/etc/hosts" in script
    assert members["tmp"].mode == 0o1777
    assert big == big_file_bytes()
    assert len(big) == 1 << 20


@pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox-static (apt-get install -y busybox-static)")
@pytest.mark.parametrize(("hosts_file", "containerenv", "expected"), [
    ("127.0.0.1\tlocalhost\n10.100.1.10\tabc123def456 web-b1\n", None, "web-b1"),
    ("127.0.0.1\tlocalhost\n127.0.0.1\tabc123def456 web-none\n", None, "web-none"),
    ("127.0.0.1\tlocalhost\n", None, "abc123def456"),
    ("10.100.1.11\tabc123def456 web-b2\n", 'engine="podman-4.3.1"\nname="web-priv"\n', "web-priv"),
])
def test_start_script_finds_container_name(tmp_path, hosts_file, containerenv, expected):
    from flatnet.lab.image import START_SCRIPT

    # Run the name lookup of the start script against fake files, stopping before httpd starts.
    lookup = START_SCRIPT.split("# httpd runs")[0]
    lookup = lookup.replace("/etc/hosts", str(tmp_path / "hosts"))
    lookup = lookup.replace("/run/.containerenv", str(tmp_path / "containerenv"))
    lookup = lookup.replace("/www/index.html", str(tmp_path / "index.html"))
    lookup = lookup.replace("$(hostname)", "abc123def456")
    (tmp_path / "hosts").write_text(hosts_file)
    if containerenv is not None:
        (tmp_path / "containerenv").write_text(containerenv)

    subprocess.run(["busybox", "sh", "-c", lookup], check=True, timeout=10)

    assert (tmp_path / "index.html").read_text() == expected


def test_exec_takes_command_after_double_dash():
    args = build_parser().parse_args(["lab", "exec", "h1", "--", "podman", "ps", "-a"])

    assert args.member == "h1"
    assert args.command == ["podman", "ps", "-a"]


def test_stop_accepts_only_known_services(capsys):
    args = build_parser().parse_args(["lab", "stop", "h2", "nebula"])
    assert (args.host, args.service) == ("h2", "nebula")

    with pytest.raises(SystemExit):
        build_parser().parse_args(["lab", "stop", "h2", "podman"])


def test_invalid_service_error_names_usage_metavar(capsys, monkeypatch):
    monkeypatch.setenv("LC_ALL", "C")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["lab", "stop", "h1", "foo"])

    usage, error = capsys.readouterr().err.strip().splitlines()
    assert usage == "usage: flatnet lab stop [-h] HOST SERVICE"
    assert "argument SERVICE: invalid choice: 'foo'" in error


def test_down_accepts_force():
    assert build_parser().parse_args(["lab", "down"]).force is False
    assert build_parser().parse_args(["lab", "down", "--force"]).force is True


def test_lab_dir_assignment_only_when_needed(monkeypatch, tmp_path):
    monkeypatch.delenv("FLATNET_LAB_DIR", raising=False)
    assert layout.lab_dir_assignment(Path("/var/lib/flatnet-lab")) == ""
    assert layout.lab_dir_assignment(tmp_path / "my lab") == f"FLATNET_LAB_DIR='{tmp_path}/my lab' "

    monkeypatch.setenv("FLATNET_LAB_DIR", str(tmp_path))
    assert layout.lab_dir_assignment(Path("/var/lib/flatnet-lab")) == "FLATNET_LAB_DIR=/var/lib/flatnet-lab "


@pytest.mark.parametrize(("language", "expected"), [
    ("C", "connection to {address} refused"),
    ("ja_JP.UTF-8", "{address} への接続が拒否されました"),
])
def test_refused_connection_is_described_in_locale(monkeypatch, language, expected):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    host, port = listener.getsockname()
    listener.close()  # nothing listens on the port now, so a connection is refused
    address = f"{host}:{port}"
    monkeypatch.setenv("LC_ALL", language)

    with pytest.raises(ConnectionRefusedError) as raised:
        socket.create_connection((host, port), timeout=1)

    assert services.describe_connection_error(raised.value, address, 1.0) == expected.format(address=address)


def test_up_defaults():
    args = build_parser().parse_args(["lab", "up"])

    assert (args.hosts, args.ttl, args.mtu) == (2, 300, 1300)


@pytest.mark.parametrize("command", ["up", "down"])
def test_lab_commands_require_root(monkeypatch, tmp_path, command):
    from flatnet.lab import build, teardown

    monkeypatch.setattr("os.geteuid", lambda: 1000)
    run = build.up if command == "up" else teardown.down

    with pytest.raises(FlatnetError) as raised:
        run(lab_dir=tmp_path)

    assert f"flatnet lab {command} needs root" in str(raised.value)
