"""The plugin's error messages follow the plugin's locale on both paths; its log stays English.

The gateway in this module runs under a Japanese locale of its own, so a fast
path error in English shows that the gateway uses the plugin's locale, not its own.
"""

from __future__ import annotations

import uuid

import pytest

from flatnet.cni import spec
from tests.cni.conftest import FAST

pytestmark = pytest.mark.root

JAPANESE = {"LANG": "ja_JP.UTF-8"}
ENGLISH = {"LANG": "C"}
ENGLISH_MTU_MESSAGE = (
    "invalid network config: mtu 10: must be an integer from 576 to 9000 (Nebula's tun MTU, 1300 by default)"
)
JAPANESE_MTU_MESSAGE = (
    "ネットワーク設定が不正です: mtu 10: 576 から 9000 までの整数にしてください（Nebula の tun の MTU。既定は 1300）"
)


def has_japanese(text: str) -> bool:
    return any("\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" for ch in text)


@pytest.fixture(scope="module")
def japanese_gateway_locale():
    """Give the gateway that plugin_hosts starts a Japanese locale."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LANG", "ja_JP.UTF-8")
        patch.delenv("LC_ALL", raising=False)
        patch.delenv("LC_MESSAGES", raising=False)
        yield


@pytest.fixture(scope="module")
def plugin_hosts(japanese_gateway_locale, plugin_hosts):
    return plugin_hosts


def rejected_add(plugin, locale: dict[str, str] | None):
    """Run an ADD whose config has an invalid mtu and return the run and the container id."""
    container_id = uuid.uuid4().hex
    run = plugin.run("ADD", container_id, plugin.container(), mtu=10, locale=locale)
    assert run.returncode == 1, run.stderr
    if plugin.path == FAST:
        assert plugin.used_fast_path("ADD", container_id)
    return run, container_id


def test_bad_config_error_in_japanese(plugin):
    run, _ = rejected_add(plugin, JAPANESE)

    document = run.document()
    assert document["code"] == spec.INVALID_NETWORK_CONFIG
    assert document["msg"] == JAPANESE_MTU_MESSAGE
    assert "mtu" in document["msg"]


def test_bad_config_error_in_english(plugin):
    run, _ = rejected_add(plugin, ENGLISH)

    document = run.document()
    assert document["code"] == spec.INVALID_NETWORK_CONFIG
    assert document["msg"] == ENGLISH_MTU_MESSAGE


def test_error_without_locale_is_english(plugin):
    run, _ = rejected_add(plugin, None)

    assert run.document()["msg"] == ENGLISH_MTU_MESSAGE


@pytest.mark.parametrize(("locale", "japanese"), [
    ({"LC_ALL": "C", "LANG": "ja_JP.UTF-8"}, False),
    ({"LC_MESSAGES": "ja_JP.UTF-8", "LANG": "C"}, True),
], ids=["LC_ALL-over-LANG", "LC_MESSAGES-over-LANG"])
def test_locale_variables_keep_their_precedence(plugin, locale, japanese):
    run, _ = rejected_add(plugin, locale)

    assert run.document()["msg"] == (JAPANESE_MTU_MESSAGE if japanese else ENGLISH_MTU_MESSAGE)


def test_cni_log_stays_english_under_japanese_locale(plugin):
    _, container_id = rejected_add(plugin, JAPANESE)

    log = (plugin.data_dir / "cni.log").read_text()
    entry = next(line for line in log.splitlines() if container_id in line)
    assert ENGLISH_MTU_MESSAGE in entry
    assert not has_japanese(log)


def test_parser_error_in_japanese(plugin):
    run = plugin.run("ADD", "-bad-id", plugin.container(), locale=JAPANESE)

    document = run.document()
    assert run.returncode == 1
    assert document["code"] == spec.INVALID_ENVIRONMENT
    assert document["msg"] == "CNI_CONTAINERID '-bad-id' が不正です"
