import contextlib
import fcntl
import os
from collections.abc import Iterator

import pytest

from flatnet.lab import build, teardown
from flatnet.lab.lab import Lab

# The lab's namespace names are fixed, so two lab test runs on one machine
# (say, two checkouts) would tear down each other's hosts; they take turns.
LAB_TEST_LOCK = "/run/flatnet-lab-tests.lock"


@pytest.fixture(scope="module", autouse=True)
def one_lab_at_a_time(request):
    if request.node.get_closest_marker("lab") is None or os.geteuid() != 0:
        yield
        return
    with open(LAB_TEST_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def built_lab(tmp_path_factory, **options) -> Iterator[Lab]:
    """Build a lab in a fresh scratch directory for one test module, and take it down after."""
    lab_dir = tmp_path_factory.mktemp("lab")
    lab = build.up(lab_dir=lab_dir, **options)
    try:
        yield lab
    finally:
        teardown.down(lab_dir=lab_dir)
