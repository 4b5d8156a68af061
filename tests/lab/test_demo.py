"""make demo's walk-through passes every step, and refuses to replace a lab that is up."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.test_end_to_end import _require_lab_tools

pytestmark = pytest.mark.lab

FLATNET = str(Path(sys.executable).parent / "flatnet")


def _step_lines(output: str, number: int) -> list[str]:
    """Return the lines printed under step ``number`` of the demo, without its title line."""
    lines = output.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(f"[{number}] "))
    end = next(index for index, line in enumerate(lines) if line.startswith(f"[{number + 1}] "))
    return [line for line in lines[start + 1:end] if line.strip()]


def test_demo_passes_every_step(tmp_path):
    _require_lab_tools()
    lab_dir = tmp_path / "lab"
    env = dict(os.environ, FLATNET_LAB_DIR=str(lab_dir), LC_ALL="ja_JP.UTF-8")
    english = dict(env, LC_ALL="C.UTF-8")
    try:
        result = subprocess.run([FLATNET, "demo"], env=env, capture_output=True, text=True, timeout=300)
        again = subprocess.run([FLATNET, "demo"], env=english, capture_output=True, text=True, timeout=60)
        elsewhere = subprocess.run(
            [FLATNET, "demo"], env=dict(english, FLATNET_LAB_DIR=str(tmp_path / "other")),
            capture_output=True, text=True, timeout=60,
        )
        status = subprocess.run(
            [FLATNET, "lab", "status"], env=english, capture_output=True, text=True, timeout=60,
        )
    finally:
        subprocess.run([FLATNET, "lab", "down"], env=env, capture_output=True, timeout=120)

    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 件すべての確認に成功しました" in result.stdout
    assert "ページ: 'web-b1'、アクセスログ: decision=" in result.stdout
    assert "page:" not in result.stdout
    assert f"  FLATNET_LAB_DIR={lab_dir} .venv/bin/flatnet lab status\n" in result.stdout
    assert f"  FLATNET_LAB_DIR={lab_dir} .venv/bin/flatnet lab down" in result.stdout
    assert status.returncode == 0, status.stdout + status.stderr

    first_route, *more_routes = _step_lines(result.stdout, 3)
    route_column = first_route.index("10.100.2.0/24")
    assert more_routes
    for line in more_routes:
        assert line.index("10.100.2.0/24") == route_column, line
        assert line[:route_column].isspace()

    for refused in (again, elsewhere):
        assert refused.returncode == 1
        assert f"A lab is already up in {lab_dir}" in refused.stderr
        assert f"`FLATNET_LAB_DIR={lab_dir} .venv/bin/flatnet lab down`" in refused.stderr
