"""A real single-node Slurm cluster for tests: munged, slurmctld and slurmd on 127.0.0.1, in a temp dir.

Needs the Debian packages slurm-wlm and munge (`.ci/run` installs them when missing) and root (slurmd
runs jobs as their user). ``start_cluster`` returns None with the reason when it cannot start one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")


@dataclass
class Cluster:
    root: Path
    conf: Path
    munge_pid: Path

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *args: str, check: bool = True) -> str:
        out = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **self.env}, timeout=60)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def stop(self) -> None:
        self.run("scancel", "--full", "--quiet", "-u", "root", check=False)
        self.run("scontrol", "shutdown", check=False)
        time.sleep(1)
        if self.munge_pid.is_file():
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int(self.munge_pid.read_text().strip()), 15)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unavailable_reason() -> str | None:
    """Why no cluster can be started here, or None."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        return f"Slurm/munge not installed ({', '.join(missing)} missing; `.ci/run` installs slurm-wlm and munge)"
    if os.geteuid() != 0:
        return "starting slurmd needs root"
    return None


def start_cluster(root: Path, timeout: float = 60) -> Cluster:
    """Starts munged, slurmctld and slurmd; returns once the node is idle."""
    host = socket.gethostname().split(".")[0]
    for sub in ("state", "spool", "log", "munge"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    munge = root / "munge"
    munge.chmod(0o700)
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    subprocess.run(
        ["munged", "--force", f"--socket={munge / 'socket'}", f"--key-file={key}", f"--log-file={munge / 'log'}",
         f"--pid-file={munge / 'pid'}", f"--seed-file={munge / 'seed'}"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    cpus = os.cpu_count() or 1
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=peftbench-test",
                f"SlurmctldHost={host}(127.0.0.1)",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={munge / 'socket'}",
                f"StateSaveLocation={root / 'state'}",
                f"SlurmdSpoolDir={root / 'spool'}",
                f"SlurmctldPidFile={root / 'slurmctld.pid'}",
                f"SlurmdPidFile={root / 'slurmd.pid'}",
                f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
                f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "MpiDefault=none",
                "ReturnToService=2",
                "JobRequeue=1",
                "AccountingStorageType=accounting_storage/none",
                "JobAcctGatherType=jobacct_gather/none",
                "JobCompType=jobcomp/none",
                f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=4000 State=UNKNOWN",
                "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    cluster = Cluster(root, conf, munge / "pid")
    env = {**os.environ, **cluster.env}
    subprocess.run(["slurmctld", "-f", str(conf)], check=True, env=env, capture_output=True, timeout=30)
    subprocess.run(["slurmd", "-f", str(conf)], check=True, env=env, capture_output=True, timeout=30)
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = cluster.run("sinfo", "-h", "-o", "%T", check=False).strip()
        if state == "idle":
            return cluster
        time.sleep(0.5)
    cluster.stop()
    raise RuntimeError(f"Slurm did not come up in {timeout:.0f} s (see {root / 'log'})")
