"""`flatnet --help` and argparse's usage errors in English and Japanese, chosen by the locale."""

from __future__ import annotations

import argparse
import ast
import os
import re
import string
import subprocess
import sys
from pathlib import Path

import pytest

from flatnet import help_format, i18n
from flatnet.cli import build_parser
from flatnet.help_format import HelpFormatter, wrap
from flatnet.lab.progress import display_width

FLATNET = Path(sys.executable).parent / "flatnet"
COLUMNS = 80
JAPANESE_LOCALE = {"LANG": "ja_JP.UTF-8"}
ENGLISH_LOCALE = {"LANG": "C"}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [path]
    for name, subparser in _subcommands(parser).items():
        paths.extend(_command_paths(subparser, (*path, name)))
    return paths


def _parser_at(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> argparse.ArgumentParser:
    for name in path:
        parser = _subcommands(parser)[name]
    return parser


def _own_texts(parser: argparse.ArgumentParser) -> list[str]:
    """Return the description and help texts that `--help` of ``parser`` prints, argparse's own words left out."""
    texts = [parser.description] if parser.description else []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action.help and action.help is not argparse.SUPPRESS:
            texts.append(action.help)
        if isinstance(action, argparse._SubParsersAction):
            texts.extend(choice.help for choice in action._choices_actions if choice.help)
    return texts


def _set_locale(monkeypatch: pytest.MonkeyPatch, locale: dict[str, str]) -> None:
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in locale.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("COLUMNS", str(COLUMNS))


def _help_in_process(monkeypatch, capsys, locale: dict[str, str], path: tuple[str, ...]) -> tuple[str, argparse.ArgumentParser]:
    """Return `flatnet PATH --help` as printed in ``locale``, and the parser built there."""
    _set_locale(monkeypatch, locale)
    parser = build_parser()
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args([*path, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out, _parser_at(parser, path)


def _run_flatnet(*argv: str, locale: dict[str, str]) -> subprocess.CompletedProcess:
    assert FLATNET.is_file(), f"the console script {FLATNET} is missing: run `make install` (pip install -e .)"
    env = {name: value for name, value in os.environ.items() if name not in ("LC_ALL", "LC_MESSAGES", "LANG")}
    env.update(locale, COLUMNS=str(COLUMNS))
    return subprocess.run([str(FLATNET), *argv], capture_output=True, text=True, env=env, timeout=60)


def _without_space(text: str) -> str:
    return "".join(text.split())


def _has_japanese(text: str) -> bool:
    return any("\u3000" <= char <= "\u30ff" or "\u4e00" <= char <= "\u9fff" for char in text)


COMMAND_PATHS = _command_paths(build_parser())
ARGPARSE_WORDS = ("usage:", "positional arguments", "options:", "show this help message and exit")


def test_every_command_is_found():
    assert ("lab", "stop") in COMMAND_PATHS
    assert ("replay", "what-if") in COMMAND_PATHS
    assert ("nebula", "sign") in COMMAND_PATHS
    assert len(COMMAND_PATHS) > 20


def _template_pattern(template: str) -> re.Pattern[str]:
    parts = []
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field is not None:
            parts.append(".+")
    return re.compile("".join(parts))


def test_every_help_text_is_from_the_catalog(monkeypatch):
    _set_locale(monkeypatch, ENGLISH_LOCALE)
    parser = build_parser()
    patterns = [_template_pattern(english) for english, _ in i18n.catalog().values()]

    for path in COMMAND_PATHS:
        for text in _own_texts(_parser_at(parser, path)):
            assert any(pattern.fullmatch(text) for pattern in patterns), f"flatnet {' '.join(path)}: {text!r}"


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda path: " ".join(path) or "flatnet")
def test_help_in_japanese(monkeypatch, capsys, path):
    english_output, english_parser = _help_in_process(monkeypatch, capsys, ENGLISH_LOCALE, path)
    english_texts = [_without_space(text) for text in _own_texts(english_parser)]
    output, parser = _help_in_process(monkeypatch, capsys, JAPANESE_LOCALE, path)
    packed = _without_space(output)

    assert output.startswith("使い方: flatnet")
    assert "このヘルプを表示して終了します" in output
    for word in ARGPARSE_WORDS:
        assert word not in output
    for text in _own_texts(parser):
        assert _has_japanese(text), text
        assert _without_space(text) in packed, text
    for text in english_texts:
        assert text not in packed
    assert english_output != output


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda path: " ".join(path) or "flatnet")
def test_help_in_english(monkeypatch, capsys, path):
    output, parser = _help_in_process(monkeypatch, capsys, ENGLISH_LOCALE, path)
    packed = " ".join(output.split())

    assert output.startswith("usage: flatnet")
    assert "show this help message and exit" in output
    assert not _has_japanese(output)
    for text in _own_texts(parser):
        assert " ".join(text.split()) in packed, text


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda path: " ".join(path) or "flatnet")
def test_japanese_help_fits_the_terminal(monkeypatch, capsys, path):
    output, _ = _help_in_process(monkeypatch, capsys, JAPANESE_LOCALE, path)

    for line in output.splitlines():
        assert display_width(line) <= COLUMNS, line


def test_japanese_usage_continues_under_the_first_option(monkeypatch, capsys):
    output, _ = _help_in_process(monkeypatch, capsys, JAPANESE_LOCALE, ("status",))
    first, second = output.splitlines()[:2]

    assert first.startswith("使い方: flatnet status [-h]")
    assert second.lstrip().startswith("[")
    assert display_width(second) - len(second.lstrip()) == display_width("使い方: flatnet status ")


def test_console_script_help_in_japanese():
    result = _run_flatnet("--help", locale=JAPANESE_LOCALE)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("使い方: flatnet")
    assert "位置引数:" in result.stdout
    assert "オプション:" in result.stdout
    assert _without_space(i18n.text("cli.help_status", japanese=True)) in _without_space(result.stdout)
    assert _without_space(i18n.text("cli.description", japanese=True)) in _without_space(result.stdout)
    assert i18n.text("cli.help_status", japanese=False) not in result.stdout


def test_console_script_help_in_english():
    result = _run_flatnet("lab", "stop", "--help", locale=ENGLISH_LOCALE)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: flatnet lab stop [-h] HOST SERVICE")
    assert "positional arguments:" in result.stdout
    assert i18n.text("lab.help_stop", japanese=False) in " ".join(result.stdout.split())
    assert not _has_japanese(result.stdout)


def test_console_script_lc_all_overrides_lang():
    result = _run_flatnet("--help", locale={"LC_ALL": "C", "LANG": "ja_JP.UTF-8"})

    assert result.stdout.startswith("usage: flatnet")
    assert not _has_japanese(result.stdout)


def test_invalid_choice_in_japanese():
    result = _run_flatnet("lab", "stop", "h1", "podman", locale=JAPANESE_LOCALE)

    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("使い方: flatnet lab stop")
    assert "flatnet lab stop: エラー: 引数 SERVICE: 無効な選択肢です: 'podman'" in result.stderr
    assert "（'gateway', 'nebula' から選んでください）" in result.stderr
    assert "invalid choice" not in result.stderr


def test_invalid_choice_in_english():
    result = _run_flatnet("lab", "stop", "h1", "podman", locale=ENGLISH_LOCALE)

    assert result.returncode == 2
    assert "argument SERVICE: invalid choice: 'podman' (choose from 'gateway', 'nebula')" in result.stderr


def test_unknown_command_in_japanese():
    result = _run_flatnet("bogus", locale=JAPANESE_LOCALE)

    assert result.returncode == 2
    assert "flatnet: エラー: 引数 COMMAND: 無効な選択肢です: 'bogus'" in result.stderr
    assert "'replay' から選んでください" in result.stderr


def test_missing_argument_in_japanese():
    result = _run_flatnet("install", locale=JAPANESE_LOCALE)

    assert result.returncode == 2
    assert "flatnet install: エラー: 次の引数が必要です: --host-id" in result.stderr


def test_invalid_number_in_japanese():
    result = _run_flatnet("lab", "up", "--hosts", "many", locale=JAPANESE_LOCALE)

    assert result.returncode == 2
    assert "引数 --hosts: int の値として無効です: 'many'" in result.stderr


def test_unrecognized_option_in_japanese(monkeypatch, capsys):
    _set_locale(monkeypatch, JAPANESE_LOCALE)

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["status", "--bogus"])

    assert exit_info.value.code == 2
    assert "flatnet: エラー: 認識できない引数です: --bogus" in capsys.readouterr().err


# argparse's msgids as the running Python's argparse.py passes them to gettext.


def _argparse_msgids() -> set[str]:
    tree = ast.parse(Path(argparse.__file__).read_text(encoding="utf-8"))
    msgids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("_", "ngettext"):
            msgids.update(arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str))
    return msgids


def _argparse_string_literals() -> set[str]:
    tree = ast.parse(Path(argparse.__file__).read_text(encoding="utf-8"))
    return {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}


ARGPARSE_CATALOG = {key: pair for key, pair in i18n.catalog().items() if key.startswith("argparse.")}


def test_catalog_has_every_argparse_msgid():
    english = {pair[0] for pair in ARGPARSE_CATALOG.values()}

    assert _argparse_msgids() - english == set()


def test_argparse_messages_exist_in_argparse():
    literals = _argparse_string_literals()

    for key, (english, _) in ARGPARSE_CATALOG.items():
        assert english in literals, key


@pytest.mark.parametrize("key", sorted(ARGPARSE_CATALOG))
def test_argparse_translation_keeps_placeholders(key):
    english, japanese = ARGPARSE_CATALOG[key]
    placeholder = re.compile(r"%(\(\w+\))?[rsd]")

    assert sorted(match.group() for match in placeholder.finditer(english)) == sorted(
        match.group() for match in placeholder.finditer(japanese)
    )
    assert english.endswith("\n") == japanese.endswith("\n")


def test_translation_passes_unknown_messages_through(monkeypatch):
    _set_locale(monkeypatch, JAPANESE_LOCALE)
    translation = help_format.ArgparseTranslation()

    assert translation.gettext("usage: ") == "使い方: "
    assert translation.gettext("a title of our own") == "a title of our own"
    assert translation.gettext(None) is None
    assert translation.ngettext("expected %s argument", "expected %s arguments", 2) == "引数が %s 個必要です"


# Wrapping by terminal columns.


def test_wrap_keeps_japanese_lines_within_width():
    text = i18n.text("replay.help_config", japanese=True)

    lines = wrap(text, 30)

    assert len(lines) > 2
    assert _without_space("".join(lines)) == _without_space(text)
    for line in lines:
        assert display_width(line) <= 30, line


def test_wrap_never_starts_a_line_with_closing_punctuation():
    for width in range(10, 40):
        for line in wrap("ホストをフリートに追加します。全設定を書き換え、Nebula を再起動し、ピアを読みます（複数指定可）", width):
            assert line[0] not in "、。）", (width, line)
            assert line[-1] != "（", (width, line)


def test_wrap_keeps_a_long_word_whole():
    lines = wrap("既定は /etc/flatnet/a/very/long/path/to/gateway.toml です", 20)

    assert "/etc/flatnet/a/very/long/path/to/gateway.toml" in lines


def test_english_help_is_formatted_as_argparse_does(monkeypatch):
    _set_locale(monkeypatch, ENGLISH_LOCALE)

    def help_text(formatter_class) -> str:
        parser = argparse.ArgumentParser(prog="example", formatter_class=formatter_class, description="word " * 40)
        parser.add_argument("--option", help="a long help text that argparse wraps " * 4)
        parser.add_argument("value", nargs="+", help="values")
        return parser.format_help()

    assert help_text(HelpFormatter) == help_text(argparse.HelpFormatter)
