"""Gateway config errors name the file, the key and what would be valid."""

import pytest

from flatnet.errors import FlatnetError
from flatnet.gateway.settings import load_settings

VALID = 'host_id = 1\ndata_dir = "/tmp/x"\napi_listen = "10.100.0.1:8080"\nproxy_listen = "0.0.0.0:80"\n'


def _load(tmp_path, text: str):
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return load_settings(path)


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
    with pytest.raises(FlatnetError, match=r"host_id: .*254.* \(got 300\)"):
        _load(tmp_path, VALID.replace("host_id = 1", "host_id = 300"))


def test_directory_as_config_is_explained(tmp_path):
    with pytest.raises(FlatnetError, match="is a directory"):
        load_settings(tmp_path)


def test_invalid_toml_is_named(tmp_path):
    with pytest.raises(FlatnetError, match="is not valid TOML"):
        _load(tmp_path, "host_id = = 1\n")
