"""README.ja.md keeps up with README.md: every section and every command has its counterpart."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [("README.md", "README.ja.md"), ("docs/api.md", "docs/api.ja.md"), ("docs/logs.md", "docs/logs.ja.md")]


def _sections(text: str) -> list[str]:
    return re.findall(r"(?m)^(#{2,3}) ", text)


def _commands(text: str) -> list[str]:
    """The code blocks' lines without trailing comments, which are translated."""
    lines = []
    for block in re.findall(r"(?ms)^```[a-z]*\n(.*?)^```", text):
        for line in block.splitlines():
            lines.append(re.sub(r"\s+#\s.*$", "", line).rstrip())
    return lines


@pytest.mark.parametrize("english, japanese", PAIRS)
def test_every_section_has_a_counterpart(english, japanese):
    assert _sections((ROOT / english).read_text()) == _sections((ROOT / japanese).read_text())


@pytest.mark.parametrize("english, japanese", PAIRS)
def test_every_command_has_a_counterpart(english, japanese):
    assert _commands((ROOT / english).read_text()) == _commands((ROOT / japanese).read_text())
