"""Fixtures and checks shared by every test folder."""

from __future__ import annotations

import os
import shutil

import pytest

# With this set to 1 (as on a lab machine or in CI), a test that cannot run
# here fails instead of skipping, so a missing prerequisite never passes silently.
REQUIRE_LAB_VARIABLE = "FLATNET_REQUIRE_LAB"


def skip_or_fail(reason: str) -> None:
    """Skip the current test, or fail it when FLATNET_REQUIRE_LAB=1 is set."""
    if os.environ.get(REQUIRE_LAB_VARIABLE) == "1":
        pytest.fail(f"{reason} ({REQUIRE_LAB_VARIABLE}=1 turns this skip into a failure)")
    pytest.skip(reason)


def require_root(purpose: str = "this test", tools: tuple[str, ...] = ("ip", "nsenter")) -> None:
    """Skip (or fail, see skip_or_fail) unless running as root with ``tools`` on PATH."""
    if os.geteuid() != 0:
        skip_or_fail(f"root is required to create network namespaces for {purpose}")
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        skip_or_fail(f"{', '.join(missing)} not found on PATH, required for {purpose}")


@pytest.fixture
def root_required(request: pytest.FixtureRequest) -> None:
    """Skip (or fail) the test unless it can create network namespaces."""
    require_root(request.node.name)
