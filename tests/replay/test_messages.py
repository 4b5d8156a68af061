"""Every replay message exists in English and Japanese, with the same placeholders."""

import importlib
import pkgutil
from pathlib import Path

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


def test_decision_record_has_one_japanese_term():
    root = Path(__file__).resolve().parents[2]
    japanese_docs = [root / "README.ja.md", *sorted((root / "docs").glob("*.ja.md"))]

    for key, (english, japanese) in REPLAY.items():
        assert "判断記録" not in japanese, key
        if "decision record" in english:
            assert "判断レコード" in japanese, key
    for path in japanese_docs:
        assert "判断記録" not in path.read_text(), path


def test_compacted_column_says_deleted():
    # The column shows the last seq that retention deleted: nothing is compressed.
    japanese = REPLAY["replay.column_compacted"][1]

    assert "削除" in japanese
    assert "圧縮" not in japanese
