"""argparse in the locale's language: its own messages from the catalogue, and help wrapped by columns.

argparse wraps help with textwrap, which counts characters and breaks only at spaces, so a
Japanese line (two columns per character, few spaces) runs past the terminal's edge. The
formatter here measures columns and may break between two Japanese characters. Text without
wide characters is wrapped by argparse's own code, so English help is unchanged.
"""

from __future__ import annotations

import argparse
import gettext

from flatnet import i18n
from flatnet.lab.progress import display_width

# Japanese line-breaking rules (kinsoku): these characters never start a line ...
_NO_LINE_START = set("、。，．・：；？！）」』】〉》〕ー…ぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶ々,.:;!?)]}")
# ... and these never end one.
_NO_LINE_END = set("（「『【〈《〔([{")


def _units(text: str) -> list[str]:
    """Split ``text`` into the pieces a line break may fall between.

    A piece is a space, one wide character, or a run of narrow non-space characters (a word).
    """
    units: list[str] = []
    for char in text:
        joins_word = (
            char != " " and display_width(char) == 1
            and units and units[-1] != " " and display_width(units[-1][-1]) == 1
        )
        if joins_word:
            units[-1] += char
        else:
            units.append(char)
    return units


def _may_break(before: str, after: str) -> bool:
    if before == " " or after == " ":
        return True
    return after[0] not in _NO_LINE_START and before[-1] not in _NO_LINE_END


def _columns(units: list[str]) -> int:
    return display_width("".join(units).rstrip())


def _break_index(line: list[str], width: int) -> int | None:
    """Return where to break ``line``: the last allowed break that fits ``width``, else the first one."""
    allowed = [index for index in range(1, len(line)) if _may_break(line[index - 1], line[index])]
    fitting = [index for index in allowed if _columns(line[:index]) <= width]
    if fitting:
        return fitting[-1]
    return allowed[0] if allowed else None


def wrap(text: str, width: int) -> list[str]:
    """Wrap ``text`` into lines of at most ``width`` terminal columns.

    A line breaks at a space or next to a wide character, never before closing punctuation
    or after an opening bracket. A word wider than ``width`` (a long path or URL) stays whole
    on its own line, so that line is longer than ``width``.
    """
    lines: list[str] = []
    line: list[str] = []
    for unit in _units(text):
        line.append(unit)
        while _columns(line) > width:
            index = _break_index(line, width)
            if index is None:
                break
            lines.append("".join(line[:index]).strip())
            line = line[index:]
            while line and line[0] == " ":
                del line[0]
    rest = "".join(line).strip()
    if rest:
        lines.append(rest)
    return lines


def _has_wide(text: str) -> bool:
    return display_width(text) != len(text)


class HelpFormatter(argparse.HelpFormatter):
    """argparse's HelpFormatter with help, descriptions and usage measured in terminal columns."""

    def _split_lines(self, text, width):
        if not _has_wide(text):
            return super()._split_lines(text, width)
        return wrap(self._whitespace_matcher.sub(" ", text).strip(), width)

    def _fill_text(self, text, width, indent):
        if not _has_wide(text):
            return super()._fill_text(text, width, indent)
        lines = wrap(self._whitespace_matcher.sub(" ", text).strip(), width - len(indent))
        return "\n".join(indent + line for line in lines)

    def _format_usage(self, usage, actions, groups, prefix):
        if prefix is None:
            # The module-level name, so that a translation installed into argparse applies.
            prefix = argparse._("usage: ")
        # argparse indents continuation lines and fits them by len(prefix), so a prefix of wide
        # characters needs its extra columns added to the indent and taken off the width.
        extra = display_width(prefix) - len(prefix)
        self._width -= extra
        try:
            usage_text = super()._format_usage(usage, actions, groups, prefix)
        finally:
            self._width += extra
        first, *rest = usage_text.split("\n")
        return "\n".join([first, *(" " * extra + line if line.startswith(" ") else line for line in rest)])


class ArgumentParser(argparse.ArgumentParser):
    """argparse.ArgumentParser with :class:`HelpFormatter` as the default formatter.

    Subcommands added with ``add_subparsers().add_parser`` are of this class too, because
    argparse gives them the class of the parser they belong to.
    """

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def add_command(commands: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    """Add subcommand ``name`` whose one-line help also heads its own --help as the description."""
    return commands.add_parser(name, help=help_text, description=help_text)


# argparse's own messages, keyed by the exact English msgid that CPython 3.11's
# argparse.py passes to gettext. The Japanese text keeps every %-placeholder,
# because argparse fills the translated string in with the % operator.
ARGPARSE_MESSAGES: dict[str, tuple[str, str]] = {
    "argparse.usage": ("usage: ", "使い方: "),
    "argparse.positional_arguments": ("positional arguments", "位置引数"),
    "argparse.options": ("options", "オプション"),
    "argparse.subcommands": ("subcommands", "サブコマンド"),
    "argparse.help": ("show this help message and exit", "このヘルプを表示して終了します"),
    "argparse.error": ("%(prog)s: error: %(message)s\n", "%(prog)s: エラー: %(message)s\n"),
    "argparse.argument": ("argument %(argument_name)s: %(message)s", "引数 %(argument_name)s: %(message)s"),
    "argparse.required": ("the following arguments are required: %s", "次の引数が必要です: %s"),
    "argparse.one_required": ("one of the arguments %s is required", "引数 %s のいずれかが必要です"),
    "argparse.invalid_choice": (
        "invalid choice: %(value)r (choose from %(choices)s)",
        "無効な選択肢です: %(value)r（%(choices)s から選んでください）",
    ),
    "argparse.invalid_value": ("invalid %(type)s value: %(value)r", "%(type)s の値として無効です: %(value)r"),
    "argparse.unrecognized": ("unrecognized arguments: %s", "認識できない引数です: %s"),
    "argparse.ambiguous": (
        "ambiguous option: %(option)s could match %(matches)s",
        "あいまいなオプションです: %(option)s は %(matches)s のどれにも当てはまります",
    ),
    "argparse.expected_one": ("expected one argument", "引数が 1 つ必要です"),
    "argparse.expected_at_most_one": ("expected at most one argument", "引数は 1 つまでです"),
    "argparse.expected_at_least_one": ("expected at least one argument", "引数が 1 つ以上必要です"),
    "argparse.expected_count_one": ("expected %s argument", "引数が %s 個必要です"),
    "argparse.expected_count_other": ("expected %s arguments", "引数が %s 個必要です"),
    "argparse.not_allowed_with": ("not allowed with argument %s", "引数 %s と同時には指定できません"),
    "argparse.ignored_explicit": ("ignored explicit argument %r", "明示された引数 %r を無視しました"),
    "argparse.unexpected_option": ("unexpected option string: %s", "予期しないオプション文字列です: %s"),
    "argparse.cannot_open": ("can't open '%(filename)s': %(error)s", "'%(filename)s' を開けません: %(error)s"),
    "argparse.dash_mode": ('argument "-" with mode %r', 'モード %r の引数 "-"'),
    "argparse.unknown_parser": (
        "unknown parser %(parser_name)r (choices: %(choices)s)",
        "不明なパーサー %(parser_name)r です（選択肢: %(choices)s）",
    ),
    # The messages below report a mistake in the code that builds a parser, not in a command line.
    "argparse.conflicting_option_one": ("conflicting option string: %s", "オプション文字列が衝突しています: %s"),
    "argparse.conflicting_option_other": ("conflicting option strings: %s", "オプション文字列が衝突しています: %s"),
    "argparse.conflicting_subparser": ("conflicting subparser: %s", "サブパーサーが衝突しています: %s"),
    "argparse.conflicting_alias": ("conflicting subparser alias: %s", "サブパーサーの別名が衝突しています: %s"),
    "argparse.call_not_defined": (".__call__() not defined", ".__call__() が定義されていません"),
    "argparse.required_positional": (
        "'required' is an invalid argument for positionals",
        "'required' は位置引数には指定できません",
    ),
    "argparse.exclusive_optional": (
        "mutually exclusive arguments must be optional",
        "排他的な引数はオプション引数でなければなりません",
    ),
    "argparse.merge_groups": (
        "cannot merge actions - two groups are named %r",
        "アクションを統合できません。%r という名前のグループが 2 つあります",
    ),
    "argparse.invalid_option_string": (
        "invalid option string %(option)r: must start with a character %(prefix_chars)r",
        "無効なオプション文字列 %(option)r です。文字 %(prefix_chars)r で始めてください",
    ),
    "argparse.dest_required": ("dest= is required for options like %r", "%r のようなオプションには dest= が必要です"),
    "argparse.conflict_resolution": ("invalid conflict_resolution value: %r", "conflict_resolution の値が無効です: %r"),
    "argparse.multiple_subparsers": ("cannot have multiple subparser arguments", "サブパーサー引数は 1 つしか持てません"),
    "argparse.not_callable": ("%r is not callable", "%r は呼び出し可能ではありません"),
}
i18n.define(ARGPARSE_MESSAGES)

_ARGPARSE_KEYS = {english: key for key, (english, _) in ARGPARSE_MESSAGES.items()}


class ArgparseTranslation(gettext.NullTranslations):
    """argparse's own messages from the catalogue, in the language of the locale at each call.

    A message missing from the catalogue (one that a newer Python added) stays English.
    """

    def gettext(self, message):
        key = _ARGPARSE_KEYS.get(message)
        if key is None or not i18n.locale_is_japanese():
            return message
        # The catalogue text is a %-template for argparse, so it is not passed through str.format.
        return ARGPARSE_MESSAGES[key][1]

    def ngettext(self, singular, plural, n):
        return self.gettext(singular if n == 1 else plural)


_ARGPARSE_TRANSLATION = ArgparseTranslation()


def install_argparse_translation() -> None:
    """Send argparse's own messages (usage, section titles, errors) through the catalogue.

    It lasts for the rest of the process. CPython 3.11's argparse binds ``_`` and
    ``ngettext`` from :mod:`gettext` at import and looks both names up in its module on
    every call, so rebinding them there is enough. gettext.install() would not reach
    argparse, because it only sets ``builtins._``. Outside a Japanese locale every
    message comes back unchanged.
    """
    argparse._ = _ARGPARSE_TRANSLATION.gettext
    argparse.ngettext = _ARGPARSE_TRANSLATION.ngettext
