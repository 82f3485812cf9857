"""The Slurm launcher against a real single-node Slurm started here (slurm-wlm + munge, tests/support/slurm_cluster.py).

Covers a sweep of two tiny runs finishing through Slurm, and a run pre-empted with
``scancel --signal=USR1`` that saves, requeues itself, resumes and ends with the same weights as an
uninterrupted run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch
import yaml

from peftbench.io import load_tensors
from peftbench.launch.sweep import expand, load_sweep
from tests.conftest import run_cli
from tests.support.slow import slow_env
from tests.support.slurm_cluster import start_cluster, unavailable_reason

# Slow; one xdist group per module (make test: --dist loadgroup): its tests run one after another on one worker and
# its module fixture is built once; the modules that start processes run beside each other (all wait on markers).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    yield cluster
    cluster.stop()
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous


def _sweep(tmp_path, methods, **overrides):
    path = tmp_path / "sweep.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "mode": "dev",
                "methods": methods,
                "overrides": {"output_dir": str(tmp_path / "runs"), **overrides},
                "slurm": {"cpus_per_task": os.cpu_count() or 1, "signal_delay_s": 30},  # one job at a time
            }
        )
    )
    return path


def test_sweep_of_two_runs_finishes_through_slurm(cluster, tmp_path):
    path = _sweep(tmp_path, {"lora": {"method.r": 4}, "ia3": None}, **{"train.max_steps": 6})
    proc = run_cli("sweep", str(path), "--launcher", "slurm", "--wait", "--no-progress", env=cluster.env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "sweep: 2 finished" in proc.stdout
    assert proc.stdout.count("Slurm job") == 2 or (proc.stdout + proc.stderr).count("Slurm job") == 2
    for run in expand(load_sweep(path)):
        metrics = json.loads((run.run_dir / "metrics.json").read_text())
        assert metrics["status"] == "finished" and metrics["train"]["steps"] == 6
    again = run_cli("sweep", str(path), "--launcher", "slurm", "--wait", "--no-progress", env=cluster.env)
    assert again.returncode == 0 and "2 skipped" in again.stdout  # nothing resubmitted


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_preempted_job_requeues_resumes_and_matches_an_uninterrupted_run(cluster, tmp_path):
    overrides = {"train.max_steps": 16, "train.save_steps": 0, "train.logging_steps": 1, "seed": 5}
    path = _sweep(tmp_path, {"lora": {"method.r": 4}}, **overrides)
    (run,) = expand(load_sweep(path))
    env = {**os.environ, **cluster.env, "HF_HUB_OFFLINE": "1", **slow_env(step_s=0.5, evaluation_batch_s=0.5)}
    sweep = subprocess.Popen(
        [sys.executable, "-m", "peftbench", "sweep", str(path), "--launcher", "slurm", "--wait", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    log = run.run_dir / "train.log"
    _wait_for(lambda: log.is_file() and "step 4/16" in log.read_text(), 180, "training to reach step 4")
    job = cluster.run("squeue", "-h", "-o", "%i", "-n", run.name).split()[0]
    cluster.run("scancel", "--signal=USR1", job)
    # The job saves, then requeues itself; Slurm holds a requeued job a while before it may start again.
    _wait_for(lambda: cluster.run("squeue", "-h", "-o", "%t", "-j", job, check=False).strip() == "PD", 60, "requeue")
    cluster.run("scontrol", "update", f"JobId={job}", "StartTime=now", check=False)
    out, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, out
    assert "sweep: 1 finished" in out
    text = log.read_text()
    # saved at the first step boundary after the signal: step 4, or later when squeue and scancel were slow (loaded CI)
    after = text.split("received SIGUSR1", 1)[-1]
    saved = re.search(r"saved (checkpoint-(\d+))", after)
    assert "received SIGUSR1" in text and saved and 4 <= int(saved[2]) < 16, text
    assert f"resuming from {saved[1]}" in text, text
    assert "Restarts=1" in cluster.run("scontrol", "show", "job", job)
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 16

    reference = run_cli("train", str(run.run_dir / "config.yaml"), f"output_dir={tmp_path / 'reference'}",
                        "--no-progress")  # fmt: skip
    assert reference.returncode == 0, reference.stderr[-2000:]
    ours = load_tensors(run.run_dir / "trainable.safetensors")
    theirs = load_tensors(tmp_path / "reference" / run.name / "trainable.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
