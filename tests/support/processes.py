"""Starting peftbench on 2 local CPU processes (gloo), as the multi-process tests do."""

from __future__ import annotations

import os
import subprocess
import sys

from peftbench.recipe.contract.run_checks import TORCHRUN  # torchrun with 2 processes on this machine


def two_ranks(*args: str, env: dict | None = None, launcher: list[str] | None = None) -> subprocess.Popen:
    """``python <launcher> -m peftbench ARGS`` with one thread per process (the same kernels in 1- and 2-rank
    runs), in its own session so that a test can signal the whole process group; output merged into stdout."""
    full = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    command = [sys.executable, *(launcher or TORCHRUN), "-m", "peftbench", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full,
                            start_new_session=True)  # fmt: skip


def unsupervised_ranks(*args: str, env: dict | None = None) -> list[subprocess.Popen]:
    """The same 2 ranks started side by side with the environment torchrun would give them, but without torchrun:
    no agent stops one rank when the other exits, so each rank's own exit status can be checked."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    procs = []
    for rank in range(2):
        full = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {}), "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank),
                "LOCAL_WORLD_SIZE": "2"}  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, "-m", "peftbench", *args], stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, env=full))  # fmt: skip
    return procs
