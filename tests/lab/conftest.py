import fcntl
import os

import pytest

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
