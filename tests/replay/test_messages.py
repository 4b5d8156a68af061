"""Every replay message exists in English and Japanese, with the same placeholders."""

import importlib
import pkgutil

import pytest

import flatnet.replay
from flatnet import i18n
from tests.test_i18n import SHORT_LABEL_LETTERS, _literal_letters, _placeholders

# flatnet.replay lives in its own folder, which the catalog test's walk of flatnet/ does not reach.
for module in pkgutil.walk_packages(flatnet.replay.__path__, "flatnet.replay."):
    importlib.import_module(module.name)

REPLAY = {key: pair for key, pair in i18n.catalog().items() if key.startswith("replay.")}


def test_replay_messages_are_defined():
    assert len(REPLAY) > 50


@pytest.mark.parametrize("key", sorted(REPLAY))
def test_replay_message_has_both_languages_and_placeholders(key):
    english, japanese = REPLAY[key]

    assert english.strip()
    assert japanese.strip()
    assert _placeholders(english) == _placeholders(japanese)
    if _literal_letters(english) >= SHORT_LABEL_LETTERS:
        assert any("\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" for ch in japanese), japanese
