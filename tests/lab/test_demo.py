"""make demo's walk-through passes every step, and refuses to replace a lab that is up."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.test_end_to_end import _require_lab_tools

pytestmark = pytest.mark.lab

FLATNET = str(Path(sys.executable).parent / "flatnet")


def test_demo_passes_every_step(tmp_path):
    _require_lab_tools()
    env = dict(os.environ, FLATNET_LAB_DIR=str(tmp_path / "lab"), LANG="C.UTF-8")
    try:
        result = subprocess.run([FLATNET, "demo"], env=env, capture_output=True, text=True, timeout=300)
        again = subprocess.run([FLATNET, "demo"], env=env, capture_output=True, text=True, timeout=60)
    finally:
        subprocess.run([FLATNET, "lab", "down"], env=env, capture_output=True, timeout=120)

    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All 8 checks passed" in result.stdout
    assert again.returncode == 1
    assert "A lab is already up" in again.stderr
