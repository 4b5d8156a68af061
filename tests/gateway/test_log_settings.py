"""The [log] and [reconcile] tables of the gateway config."""

import pytest

from flatnet.errors import FlatnetError
from flatnet.gateway.settings import load_settings

VALID = 'host_id = 1\ndata_dir = "/tmp/x"\napi_listen = "10.100.0.1:8080"\nproxy_listen = "0.0.0.0:80"\n'


@pytest.fixture(autouse=True)
def english(monkeypatch):
    for name in ("LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "C")


def _load(tmp_path, text: str):
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return load_settings(path)


def test_defaults_keep_a_week_and_a_day(tmp_path):
    settings = _load(tmp_path, VALID)

    assert settings.log.retention == 7 * 24 * 3600
    assert settings.log.tombstone_retention == 24 * 3600
    assert settings.log.snapshot_every_events == 10_000
    assert settings.reconcile.enabled is True


def test_log_table_sets_the_journal_policy(tmp_path):
    settings = _load(tmp_path, VALID + "[log]\nsnapshot_every_events = 50\nsnapshot_every_seconds = 10\nretention = 0\n")

    policy = settings.log.policy()

    assert (policy.snapshot_every_events, policy.snapshot_every_seconds, policy.retention) == (50, 10, 0)


def test_tombstone_retention_not_above_ttl_plus_resync_is_rejected(tmp_path):
    with pytest.raises(FlatnetError) as raised:
        _load(tmp_path, VALID + "ttl = 300\nresync = 30\n[log]\ntombstone_retention = 330\n")

    message = str(raised.value)
    assert "log.tombstone_retention 330 s must be greater than ttl + resync = 300 + 30 = 330 s" in message
    assert "raise log.tombstone_retention or lower ttl or resync" in message


def test_long_ttl_breaks_the_default_tombstone_retention(tmp_path):
    with pytest.raises(FlatnetError, match="log.tombstone_retention 86400 s must be greater than ttl \\+ resync = 90000 \\+ 30"):
        _load(tmp_path, VALID + "ttl = 90000\n")


def test_tombstone_retention_above_ttl_plus_resync_loads(tmp_path):
    settings = _load(tmp_path, VALID + "ttl = 300\nresync = 30\n[log]\ntombstone_retention = 331\n")

    assert settings.log.tombstone_retention == 331


def test_unknown_log_key_is_rejected(tmp_path):
    with pytest.raises(FlatnetError, match="snapshots_every"):
        _load(tmp_path, VALID + "[log]\nsnapshots_every = 5\n")


def test_tombstone_rule_in_japanese(tmp_path, monkeypatch):
    monkeypatch.setenv("LANG", "ja_JP.UTF-8")

    with pytest.raises(FlatnetError) as raised:
        _load(tmp_path, VALID + "ttl = 300\nresync = 30\n[log]\ntombstone_retention = 330\n")

    message = str(raised.value)
    assert "[log]: log.tombstone_retention 330 秒は ttl + resync = 300 + 30 = 330 秒より大きくしてください。" in message
    assert "log.tombstone_retention を増やすか、ttl か resync を減らしてください" in message


def test_unknown_log_key_lists_log_keys(tmp_path):
    with pytest.raises(FlatnetError) as raised:
        _load(tmp_path, VALID + "[log]\nsnapshots_every = 5\n")

    message = str(raised.value)
    assert "unknown key 'snapshots_every' in [log]; valid keys there are snapshot_every_events," in message
    assert "host_id" not in message
