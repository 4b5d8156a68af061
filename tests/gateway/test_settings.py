"""Gateway config errors name the file, the key and what would be valid, in English or Japanese."""

import subprocess
import sys
from pathlib import Path

import pytest

from flatnet.errors import FlatnetError
from flatnet.gateway.settings import load_settings

VALID = 'host_id = 1\ndata_dir = "/tmp/x"\napi_listen = "10.100.0.1:8080"\nproxy_listen = "0.0.0.0:80"\n'
FLATNET = str(Path(sys.executable).parent / "flatnet")
LOCALE_VARIABLES = ("LC_ALL", "LC_MESSAGES", "LANG")


@pytest.fixture(autouse=True)
def english(monkeypatch):
    for name in LOCALE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "C")


@pytest.fixture
def japanese(monkeypatch):
    monkeypatch.setenv("LANG", "ja_JP.UTF-8")


def _load(tmp_path, text: str):
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return load_settings(path)


def _problem(tmp_path, text: str) -> str:
    """Return the error message of loading ``text``, without the frame that names the file."""
    with pytest.raises(FlatnetError) as raised:
        _load(tmp_path, text)
    return str(raised.value).split(": ", 1)[1]


def test_valid_config_loads(tmp_path):
    settings = _load(tmp_path, VALID + '[[peers]]\nhost_id = 2\napi = "http://10.100.0.2:8080"\n')

    assert settings.host_id == 1
    assert settings.peers[0].base_url == "http://10.100.0.2:8080"


def test_unknown_key_lists_valid_keys(tmp_path):
    with pytest.raises(FlatnetError) as raised:
        _load(tmp_path, VALID + "hostid = 1\n")

    assert "unknown key 'hostid'" in str(raised.value)
    assert "host_id" in str(raised.value)
    assert str(tmp_path / "gateway.toml") in str(raised.value)


def test_single_bracket_peers_explained(tmp_path):
    with pytest.raises(FlatnetError, match=r"\[\[peers\]\] tables \(double brackets\)"):
        _load(tmp_path, VALID + '[peers]\nhost_id = 2\napi = "http://10.100.0.2:8080"\n')


def test_peer_that_is_not_a_table_explained(tmp_path):
    with pytest.raises(FlatnetError, match=r"\[\[peers\]\] tables \(double brackets\)"):
        _load(tmp_path, VALID + "peers = [5]\n")


def test_duplicate_peer_named_without_dumping_config(tmp_path):
    peer = '[[peers]]\nhost_id = 2\napi = "http://10.100.0.2:8080"\n'

    with pytest.raises(FlatnetError) as raised:
        _load(tmp_path, VALID + peer + peer)

    assert "peer host_id 2 is listed twice" in str(raised.value)
    assert "data_dir" not in str(raised.value)


def test_missing_key_is_named(tmp_path):
    with pytest.raises(FlatnetError, match="proxy_listen is missing"):
        _load(tmp_path, 'host_id = 1\ndata_dir = "/tmp/x"\napi_listen = "10.100.0.1:8080"\n')


def test_out_of_range_host_id_shows_value(tmp_path):
    with pytest.raises(FlatnetError, match=r"host_id = 300 is out of range: give a whole number from 1 to 254"):
        _load(tmp_path, VALID.replace("host_id = 1", "host_id = 300"))


def test_host_id_zero_names_the_range(tmp_path):
    problem = _problem(tmp_path, VALID.replace("host_id = 1", "host_id = 0"))

    assert problem == "host_id = 0 is out of range: give a whole number from 1 to 254"


def test_host_id_zero_in_japanese(tmp_path, japanese):
    with pytest.raises(FlatnetError) as raised:
        _load(tmp_path, VALID.replace("host_id = 1", "host_id = 0"))

    message = str(raised.value)
    assert message.startswith(f"ゲートウェイ設定 {tmp_path / 'gateway.toml'} が不正です: ")
    assert message.endswith("host_id = 0 は範囲外です。1 から 254 までの整数を指定してください")


def test_bad_peer_url_names_the_peer(tmp_path):
    peers = '[[peers]]\nhost_id = 2\napi = "http://10.100.0.2:8080"\n[[peers]]\nhost_id = 3\napi = "10.100.0.3"\n'

    problem = _problem(tmp_path, VALID + peers)

    assert problem.startswith('the peer with host_id 3: api = "10.100.0.3" is not a valid http(s) URL (')
    assert problem.endswith('; give one like "http://10.100.0.3:8080"')
    assert "peers.1" not in problem


def test_bad_peer_url_in_japanese(tmp_path, japanese):
    problem = _problem(tmp_path, VALID + '[[peers]]\nhost_id = 3\napi = "ftp://10.100.0.3"\n')

    assert problem == (
        'host_id 3 のピアの api = "ftp://10.100.0.3" は有効な http(s) URL ではありません'
        '（スキームは http か https にしてください）。"http://10.100.0.3:8080" のように指定してください'
    )


def test_peer_with_bad_host_id_named_by_position(tmp_path):
    peers = '[[peers]]\nhost_id = 2\napi = "http://10.100.0.2:8080"\n[[peers]]\nhost_id = 300\napi = "http://10.100.0.3:8080"\n'

    problem = _problem(tmp_path, VALID + peers)

    assert problem == "[[peers]] table 2: host_id = 300 is out of range: give a whole number from 1 to 254"


def test_missing_peer_key_gives_example(tmp_path):
    problem = _problem(tmp_path, VALID + "[[peers]]\nhost_id = 4\n")

    assert problem == 'the peer with host_id 4: api is missing; add it, e.g. api = "http://10.100.0.4:8080"'


def test_unknown_routes_key_lists_routes_keys(tmp_path):
    problem = _problem(tmp_path, VALID + '[routes]\nmdoe = "dev"\n')

    assert problem == "unknown key 'mdoe' in [routes]; valid keys there are mode, device, via, metric, interval"


def test_unknown_peer_key_lists_peer_keys(tmp_path):
    problem = _problem(tmp_path, VALID + '[[peers]]\nhost_id = 2\napi = "http://10.100.0.2:8080"\nurl = "x"\n')

    assert problem == "unknown key 'url' in the peer with host_id 2; valid keys there are host_id, api"


def test_wrong_type_gives_kind_and_example(tmp_path):
    problem = _problem(tmp_path, VALID + 'ttl = "5m"\n')

    assert problem == 'ttl = "5m" is not a number of seconds; e.g. ttl = 300.0'


def test_range_with_two_bounds_in_table(tmp_path):
    problem = _problem(tmp_path, VALID + "[routes]\ninterval = 0\n")

    assert problem == "[routes] interval = 0 is out of range: give a number of seconds above 0 and at most 3600"


def test_bad_choice_lists_the_choices(tmp_path):
    problem = _problem(tmp_path, VALID + 'stale_policy = "drop"\n')

    assert problem == 'stale_policy = "drop" is invalid: give one of "serve", "warn", "reject"'


def test_table_written_as_value_is_explained(tmp_path):
    problem = _problem(tmp_path, VALID + "routes = 5\n")

    assert problem == "routes = 5 is not a table; write it as a [routes] section with its own keys"


def test_validator_rule_in_japanese(tmp_path, japanese):
    problem = _problem(tmp_path, VALID + '[routes]\ndevice = "nebula/1"\n')

    assert problem.startswith("[routes] の device: 'nebula/1' は Linux のインターフェース名ではありません。")


def test_table_rule_names_the_table(tmp_path):
    problem = _problem(tmp_path, VALID + '[routes]\nmode = "via"\n')

    assert problem.startswith("[routes]: mode 'via' needs via = ")


def test_problems_joined_in_japanese(tmp_path, japanese):
    problem = _problem(tmp_path, 'host_id = 1\ndata_dir = "/tmp/x"\n')

    assert problem == (
        'api_listen がありません。api_listen = "10.100.0.1:8080" のように追加してください。'
        'proxy_listen がありません。proxy_listen = "0.0.0.0:80" のように追加してください'
    )


def test_missing_config_in_japanese(tmp_path, japanese):
    with pytest.raises(FlatnetError) as raised:
        load_settings(tmp_path / "absent.toml")

    assert str(raised.value) == f"ゲートウェイ設定 {tmp_path / 'absent.toml'} が見つかりません。--config で既存のファイルを指定してください"


@pytest.mark.parametrize("command", [
    ["nebula", "config"], ["routes", "show"], ["routes", "apply"], ["status"], ["doctor", "2"], ["gateway"],
    ["replay", "decisions"],
])
def test_commands_report_config_errors_in_japanese(tmp_path, command):
    config = tmp_path / "gateway.toml"
    config.write_text(VALID.replace("host_id = 1", "host_id = 0"))

    result = subprocess.run(
        [FLATNET, *command, "--config", str(config)], env={"PATH": "/usr/bin:/bin", "LANG": "ja_JP.UTF-8"},
        capture_output=True, text=True, timeout=60,
    )

    assert result.returncode in (1, 2), result.stderr
    assert f"ゲートウェイ設定 {config} が不正です: host_id = 0 は範囲外です。1 から 254 までの整数を指定してください" in result.stderr
    assert "Input should" not in result.stderr


def test_directory_as_config_is_explained(tmp_path):
    with pytest.raises(FlatnetError, match="is a directory"):
        load_settings(tmp_path)


def test_invalid_toml_is_named(tmp_path):
    with pytest.raises(FlatnetError, match="is not valid TOML"):
        _load(tmp_path, "host_id = = 1\n")
