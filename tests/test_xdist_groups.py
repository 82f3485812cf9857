"""The suite relies on pytest-xdist's ``xdist_group`` (``make test``: ``--dist loadgroup``) to run the tests that
start real processes and send signals one after another on one worker, and to build a module's expensive fixture
once. pytest 9.2 keeps node ids where pytest-xdist 3.8 no longer adds the group suffix, and the groups are then
silently ignored (constraints.txt pins a pair that works); this checks the installed pair."""

from __future__ import annotations

import os
import subprocess
import sys

GROUPED = """
import os
import pytest

pytestmark = [pytest.mark.xdist_group("together")]


@pytest.mark.parametrize("k", range(3))
def test_it(k):
    with open(os.environ["WORKER_LOG"], "a") as f:
        f.write(f"{__name__} {os.environ['PYTEST_XDIST_WORKER']}\\n")
"""


def test_a_group_runs_on_one_worker(tmp_path):
    for name in ("test_first.py", "test_second.py"):
        (tmp_path / name).write_text(GROUPED)
    (tmp_path / "test_other.py").write_text("def test_other():\n    pass\n")
    log = tmp_path / "workers.log"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider", "."],
        cwd=tmp_path, env={**os.environ, "WORKER_LOG": str(log)}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = log.read_text().splitlines()
    assert len(lines) == 6
    assert len({line.split()[1] for line in lines}) == 1, lines  # both modules' tests on the same worker
