"""Starting peftbench on 2 local CPU processes (gloo), as the multi-process tests do."""

from __future__ import annotations

import os
import subprocess
import sys

TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
"""torchrun with 2 processes on this machine."""


def two_ranks(*args: str, env: dict | None = None, launcher: list[str] | None = None) -> subprocess.Popen:
    """``python <launcher> -m peftbench ARGS`` with one thread per process (the same kernels in 1- and 2-rank
    runs), in its own session so that a test can signal the whole process group; output merged into stdout."""
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    command = [sys.executable, *(launcher or TORCHRUN), "-m", "peftbench", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full,
                            start_new_session=True)  # fmt: skip
