"""Every message a person reads exists in English and Japanese, with the same placeholders."""

import importlib
import pkgutil
import string

import pytest

import flatnet
from flatnet import i18n

# Modules that define messages import them at module load; import every module
# of the package so that the catalog is complete.
for package in ("flatnet", "flatnet.cni", "flatnet.events", "flatnet.replay"):
    # The folders cni/, events/ and replay/ sit beside flatnet/, so a walk of
    # flatnet/ alone would not reach them.
    root = importlib.import_module(package)
    for module in pkgutil.walk_packages(root.__path__, f"{package}."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)

CATALOG = i18n.catalog()


def _literal_letters(template: str) -> int:
    return sum(ch.isalpha() for literal, _, _, _ in string.Formatter().parse(template) for ch in literal)


# Labels such as "OK", "LAN" or "ms" read the same in both languages.
SHORT_LABEL_LETTERS = 8


def _placeholders(template: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(template) if field}


def test_catalog_is_not_empty():
    assert len(CATALOG) > 20


@pytest.mark.parametrize("key", sorted(CATALOG))
def test_message_has_both_languages(key):
    english, japanese = CATALOG[key]

    assert english.strip()
    assert japanese.strip()
    if _literal_letters(english) >= SHORT_LABEL_LETTERS:
        assert english != japanese


@pytest.mark.parametrize("key", sorted(CATALOG))
def test_translations_share_placeholders(key):
    english, japanese = CATALOG[key]

    assert _placeholders(english) == _placeholders(japanese)


@pytest.mark.parametrize("key", sorted(k for k, (english, _) in CATALOG.items() if _literal_letters(english) >= SHORT_LABEL_LETTERS))
def test_japanese_text_contains_japanese(key):
    english, japanese = CATALOG[key]

    assert any("\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" for ch in japanese), japanese


def test_locale_selects_japanese():
    assert i18n.locale_is_japanese({"LANG": "ja_JP.UTF-8"})
    assert not i18n.locale_is_japanese({"LANG": "en_US.UTF-8"})
    assert not i18n.locale_is_japanese({"LC_ALL": "C", "LANG": "ja_JP.UTF-8"})
    assert i18n.locale_is_japanese({"LC_MESSAGES": "ja_JP", "LANG": "C"})
