"""`peftbench train` under torchrun with 2 CPU processes (gloo): same result as 1 process, and pre-emption.

A 2-rank run with per-device batch 4 sees, at every optimizer step, the same two batches as a 1-rank run
with per-device batch 4 and gradient accumulation 2 (accelerate deals batches round-robin), so within an
epoch the two must agree to float tolerance. A 2-rank run stopped by SIGTERM saves one checkpoint for both
ranks and resumes to the same weights as an uninterrupted 2-rank run.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import torch
import yaml

from peftbench.io import load_tensors
from tests.conftest import in_process, require_superni_mini, tiny_mini_config
from tests.support.processes import two_ranks, unsupervised_ranks
from tests.support.slow import slow_env

# Slow; one xdist group per module (make test: --dist loadgroup): its tests run one after another on one worker and
# its module fixture is built once; the modules that start processes run beside each other (all wait on markers).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("distributed")]

STEPS = 5  # 22 tasks x 2 examples / batch 4 = 11 batches an epoch: 5 steps of 2 batches stay in epoch 1


def _config(data_dir, out, name, accumulation, **train):
    cfg = tiny_mini_config(data_dir, out, run_name=name)
    cfg["train"] = {"max_steps": STEPS, "per_device_batch_size": 4, "gradient_accumulation_steps": accumulation,
                    "logging_steps": 2, "learning_rate": 3e-3, **train}  # fmt: skip
    return cfg


def _weights(run_dir):
    return load_tensors(run_dir / "trainable.safetensors")


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory):
    data_dir = require_superni_mini()
    root = tmp_path_factory.mktemp("ddp")
    path = root / "two.yaml"
    path.write_text(yaml.safe_dump(_config(data_dir, root / "runs", "two", 1)))
    proc = two_ranks("train", str(path), "--no-progress")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return root, path, root / "runs" / "two", out


def test_two_ranks_match_one_rank_with_the_same_global_batch(two_rank_run, superni_mini, tmp_path):
    root, _, two_dir, out = two_rank_run
    assert out.count("trainable 24,576") == 2  # the start line and the headline, from rank 0 only
    one = tmp_path / "one.yaml"
    one.write_text(yaml.safe_dump(_config(superni_mini, tmp_path / "runs", "one", 2)))
    proc = in_process("train", str(one), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = _weights(tmp_path / "runs" / "one"), _weights(two_dir)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=1e-5), key
    two_metrics = json.loads((two_dir / "metrics.json").read_text())
    assert two_metrics["train"]["steps"] == STEPS
    # The logged loss is the global batch's (both ranks' micro-batches), as the 1-process run logs it; rank 0's own
    # micro-batch alone differs by far more than this tolerance.
    one_losses = json.loads((tmp_path / "runs" / "one" / "metrics.json").read_text())["train"]["losses"]
    assert [s for s, _ in two_metrics["train"]["losses"]] == [s for s, _ in one_losses] == [2, 4, STEPS]
    for (_, mine), (_, reference) in zip(two_metrics["train"]["losses"], one_losses, strict=True):
        assert abs(mine - reference) <= 1e-5 * abs(reference), (two_metrics["train"]["losses"], one_losses)
    assert json.loads((root / "runs" / "two" / "run_state.json").read_text())["status"] == "finished"


def test_two_rank_run_preempted_by_sigterm_resumes_to_the_same_weights(two_rank_run, tmp_path):
    _, path, two_dir, _ = two_rank_run
    args = ("train", str(path), f"output_dir={tmp_path / 'runs'}", "--no-progress")
    proc = two_ranks(*args, env=slow_env(step_s=1.0))
    log = tmp_path / "runs" / "two" / "train.log"
    deadline = time.time() + 180
    while time.time() < deadline and not (log.is_file() and "step 2/5" in log.read_text()):
        time.sleep(0.2)
    # Each step then waits 1 s before the stop check: a signal 1.5 s after step 2's log line is normally seen at
    # step 3, between two logging steps (every 2), where each rank holds its own unlogged loss sum.
    time.sleep(1.5)
    os.killpg(proc.pid, signal.SIGTERM)  # as Slurm does: every process of the job
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, out[-3000:]
    ckpts = sorted((tmp_path / "runs" / "two" / "checkpoints").glob("checkpoint-*"))
    assert ckpts, out[-3000:]
    manifest = json.loads((ckpts[-1] / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and {"rng_state_rank0.json", "rng_state_rank1.json"} <= set(manifest["files"])
    assert 2 <= manifest["step"] < STEPS

    again = two_ranks(*args)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out[-3000:]
    assert f"resuming from {ckpts[-1].name}" in out
    # A checkpoint between logging steps holds each rank's own loss sum since the last log and each rank resumes
    # with its own, so the logged curve is the uninterrupted run's bit for bit (whatever step the signal hit).
    resumed = json.loads((tmp_path / "runs" / "two" / "metrics.json").read_text())["train"]["losses"]
    assert resumed == json.loads((two_dir / "metrics.json").read_text())["train"]["losses"]
    a, b = _weights(tmp_path / "runs" / "two"), _weights(two_dir)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=1e-5), key


def test_a_checkpoint_refused_by_rank_0_stops_every_rank_with_one_line(superni_mini, tmp_path):
    """Rank 0 alone chooses the checkpoint to resume; when it refuses one (here: saved by 1 process, resumed by 2),
    every rank must stop with that one line, not wait for rank 0 in a collective."""
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(_config(superni_mini, tmp_path / "runs", "one", 1, save_steps=2, max_steps=4)))
    done = in_process("train", str(path), "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = tmp_path / "runs" / "one"
    (run_dir / "metrics.json").unlink()  # as if killed after its last checkpoint
    state = json.loads((run_dir / "run_state.json").read_text())
    state.pop("trained", None)
    (run_dir / "run_state.json").write_text(json.dumps(state))
    start = time.time()
    # Without torchrun: its agent stops the other rank as soon as one exits, so under torchrun rank 1's status is a
    # race. Here nothing stops rank 1: it exits by itself with the user-error status only if it heard rank 0's
    # refusal; before the fix it waited in the broadcast until the timeout.
    procs = unsupervised_ranks("train", str(path), "--no-progress")
    try:
        outs = [proc.communicate(timeout=120)[0] for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert time.time() - start < 120
    for rank, (proc, out) in enumerate(zip(procs, outs, strict=True)):
        assert proc.returncode == 2, (rank, out[-3000:])
        assert "was saved by 1 process(es) and this run has 2" in out, (rank, out[-3000:])
        assert "Traceback" not in out, (rank, out[-3000:])
