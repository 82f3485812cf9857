"""Pre-emption safety, proven in real subprocesses on a tiny model.

SIGTERM during training or evaluation → exit status 75 → the same command resumes and ends with the
same weights (torch.equal), losses and metrics as an uninterrupted run; SIGKILL during a checkpoint write
never leaves a trusted partial checkpoint; damaged checkpoints are quarantined with a reason and the
previous one is used; a changed config or world size is refused in one line.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from peftbench.errors import PeftbenchError
from peftbench.io import load_tensors
from peftbench.training.checkpoint import QUARANTINE, checkpoint_dirs, latest_valid_checkpoint
from peftbench.training.preemption import EXIT_PREEMPTED
from tests.conftest import SUPERNI_MINI, in_process
from tests.support.slow import slow_env

# Slow; its own xdist group (make test: --dist loadgroup): one worker, the module's reference run made once.
pytestmark = [
    pytest.mark.skipif(not (SUPERNI_MINI / "tasks").is_dir(), reason=f"{SUPERNI_MINI} not found"),
    pytest.mark.slow,
    pytest.mark.xdist_group("preemption"),
]


def _config(out: Path, **train) -> Path:
    cfg = {
        "model": {"name": "tiny-t5"},
        # dropout (the study's 0.1 on LoRA's input) draws from the global RNG: a resumed run must draw the same
        # masks (it did not while a new DataLoader iterator took a seed from that RNG at the resume point)
        "method": {"name": "lora", "dropout": 0.1},
        "data": {
            "data_dir": str(SUPERNI_MINI), "split": "mini", "max_train_instances_per_task": 4,
            "max_eval_instances_per_task": 2, "max_source_length": 128, "max_target_length": 16,
            "num_validation_tasks": 2,
        },
        "train": {"max_steps": 30, "per_device_batch_size": 4, "logging_steps": 1, "save_steps": 7,
                  "eval_steps": 12, "learning_rate": 1e-3, **train},
        "eval": {"batch_size": 4, "max_new_tokens": 8},
        "output_dir": str(out),
        "run_name": "run",
    }  # fmt: skip
    path = out.with_suffix(".yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _start(config: Path, env: dict[str, str]) -> subprocess.Popen:
    full = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    cmd = [sys.executable, "-m", "peftbench", "train", str(config), "--no-progress"]
    return subprocess.Popen(cmd, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"process ended early: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.05)


def _logged_step(run_dir: Path) -> int:
    log = run_dir / "train.log"
    steps = [int(line.split("step ")[1].split("/")[0]) for line in log.read_text().splitlines() if " step " in line]
    return max(steps, default=0) if log.is_file() else 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run every interrupted one must match."""
    out = tmp_path_factory.mktemp("ref") / "runs"
    proc = in_process("train", str(_config(out)), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Real SuperNI has non-English outputs: the predictions file holds multi-byte UTF-8 (here task957's
    # references), so resumed evaluations below read back non-ASCII lines (torn ones: tests/training/test_faults.py).
    assert any(ord(c) > 127 for c in (out / "run" / "predictions.jsonl").read_text(encoding="utf-8"))
    return out / "run"


def _assert_same_result(run_dir: Path, reference: Path) -> None:
    a, b = load_tensors(run_dir / "trainable.safetensors"), load_tensors(reference / "trainable.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "weights differ from the reference"
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, reference))
    for key in ("overall", "per_task", "per_category"):
        assert ma[key] == mb[key]
    assert ma["train"]["losses"] == mb["train"]["losses"] and ma["train"]["steps"] == mb["train"]["steps"]
    # Validation during training (every 12 steps, at each epoch's end, at the last step) and the choice of
    # the best weights for the test survive interruptions too.
    epoch = -(-ma["data"]["train_instances"] // 4)  # batches (= optimizer steps) per epoch
    expected = sorted({*range(12, 31, 12), *range(epoch, 31, epoch), 30})
    assert [s for s, _ in ma["train"]["validation"]] == expected
    assert (
        ma["train"]["validation"] == mb["train"]["validation"] and ma["train"]["best_step"] == mb["train"]["best_step"]
    )
    best_step, best_score = max(ma["train"]["validation"], key=lambda v: v[1])  # first of equal maxima
    assert ma["weights"] == mb["weights"]
    assert ma["weights"]["used"] == "best" and ma["weights"]["step"] == best_step == ma["train"]["best_step"]
    assert ma["weights"]["validation_rougeL"] == best_score
    entries = [sorted(p.name for p in (d / "best").iterdir()) for d in (run_dir, reference)]
    assert entries[0] == entries[1] == [f"step-{best_step:08d}"], "stale or missing best/ entries"
    best_dir = f"best/step-{best_step:08d}"
    assert json.loads((run_dir / best_dir / "best.json").read_text()) == json.loads(
        (reference / best_dir / "best.json").read_text()
    )
    best_a, best_b = (load_tensors(d / best_dir / "trainable.safetensors") for d in (run_dir, reference))
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)
    assert all(torch.equal(best_a[k], a[k]) for k in a), "the test was not scored with the best weights"
    lines = (run_dir / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == len({json.loads(x)["id"] for x in lines}) == ma["overall"]["num_examples"]
    assert sorted(lines) == sorted((reference / "predictions.jsonl").read_text().splitlines())


@pytest.mark.parametrize("seed", [1, 2])
def test_sigterm_during_training_then_resume_is_bit_identical(tmp_path, reference, seed):
    config = _config(tmp_path / "runs")
    run_dir = tmp_path / "runs" / "run"
    target = random.Random(seed).randint(2, 25)  # a random training step
    proc = _start(config, slow_env(step_s=0.05))
    _wait_for(lambda: (run_dir / "train.log").is_file() and _logged_step(run_dir) >= target, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err[-2000:]
    assert "preempted during training" in err
    assert json.loads((run_dir / "run_state.json").read_text())["status"] == "preempted"
    assert not (run_dir / "metrics.json").exists()
    resumed = in_process("train", str(config), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from checkpoint-" in resumed.stdout
    _assert_same_result(run_dir, reference)


def test_sigterm_during_evaluation_then_resume_gives_identical_metrics(tmp_path, reference):
    config = _config(tmp_path / "runs", max_steps=30)
    run_dir = tmp_path / "runs" / "run"
    proc = _start(config, slow_env(step_s=0.3, evaluation_batch_s=0.3))
    predictions = run_dir / "predictions.jsonl"
    _wait_for(lambda: predictions.is_file() and len(predictions.read_text().splitlines()) >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err[-2000:]
    assert "preempted during evaluation" in err
    partial = len(predictions.read_text().splitlines())
    assert 2 <= partial < 24
    resumed = in_process("train", str(config), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "continuing the evaluation" in resumed.stdout
    _assert_same_result(run_dir, reference)
    again = in_process("train", str(config), "--no-progress")  # finished: prints its metrics, does nothing
    assert again.returncode == 0 and "already finished" in again.stdout and "rougeL" in again.stdout


def test_sigkill_while_writing_a_checkpoint_never_uses_it(tmp_path, reference):
    config = _config(tmp_path / "runs")
    run_dir = tmp_path / "runs" / "run"
    ckpts = run_dir / "checkpoints"
    proc = _start(config, slow_env(checkpoint_file_s=0.5))
    # The first checkpoint (step 7) completes; kill while the second (step 14) is half-written.
    _wait_for(lambda: (ckpts / "checkpoint-00000007").is_dir() and any(ckpts.glob(".tmp-checkpoint-00000014-*")), proc)
    proc.kill()
    proc.wait()
    resumed = in_process("train", str(config), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from checkpoint-00000007" in resumed.stdout
    quarantined = [p.name for p in (run_dir / QUARANTINE).iterdir()]
    assert any(name.startswith(".tmp-checkpoint-00000014") for name in quarantined)
    _assert_same_result(run_dir, reference)


def _damage(kind: str, ckpt: Path) -> str:
    """Damages a checkpoint one way; returns a fragment of the reason it must be quarantined for."""
    weights = ckpt / "trainable.safetensors"
    if kind == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
        return "trainable.safetensors has"
    if kind == "flipped":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0x01
        weights.write_bytes(bytes(data))
        return "does not match its SHA-256"
    if kind == "rng":
        (ckpt / "rng_state_rank0.json").unlink()
        return "rng_state_rank0.json is missing"
    if kind == "optimizer":
        (ckpt / "optimizer.pt").unlink()
        return "optimizer.pt is missing"
    (ckpt / "manifest.json").unlink()
    return "no manifest"


@pytest.mark.parametrize("kind", ["truncated", "flipped", "rng", "optimizer", "manifest"])
def test_damaged_checkpoint_is_quarantined_and_the_previous_one_used(tmp_path, reference, kind):
    from peftbench.configure import load_config
    from peftbench.recipe.rundir import config_hash

    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    dirs = checkpoint_dirs(run_dir)
    assert [d.name for d in dirs] == ["checkpoint-00000021", "checkpoint-00000028"]
    reason = _damage(kind, dirs[-1])
    cfg = load_config(reference.parent.with_suffix(".yaml"))
    found = latest_valid_checkpoint(run_dir, config_hash(cfg), world_size=1)
    assert found is not None and found.step == 21
    (quarantined,) = (run_dir / QUARANTINE).iterdir()
    assert quarantined.name.startswith("checkpoint-00000028")
    assert reason in (quarantined / "QUARANTINE_REASON.txt").read_text()
    assert [d.name for d in checkpoint_dirs(run_dir)] == ["checkpoint-00000021"]


def test_changed_config_or_world_size_is_refused(tmp_path, reference):
    from peftbench.configure import load_config
    from peftbench.recipe.rundir import config_hash

    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    cfg = load_config(reference.parent.with_suffix(".yaml"))
    with pytest.raises(PeftbenchError, match="different config"):
        latest_valid_checkpoint(run_dir, "0000000000", world_size=1)
    with pytest.raises(PeftbenchError, match="saved by 1 process"):
        latest_valid_checkpoint(run_dir, config_hash(cfg), world_size=2)
    # Through the CLI: a preempted run re-invoked with another hyperparameter gets a one-line error.
    (run_dir / "metrics.json").unlink()
    config = reference.parent.with_suffix(".yaml")
    proc = in_process("train", str(config), f"output_dir={tmp_path}", "train.learning_rate=2e-3")
    assert proc.returncode == 2 and "different config" in proc.stderr and proc.stderr.strip().count("\n") == 0


def test_status_lists_states(tmp_path, reference):
    shutil.copytree(reference, tmp_path / "done")
    shutil.copytree(reference, tmp_path / "stopped")
    (tmp_path / "stopped" / "metrics.json").unlink()
    state = json.loads((tmp_path / "stopped" / "run_state.json").read_text())
    (tmp_path / "stopped" / "run_state.json").write_text(json.dumps({**state, "status": "preempted"}))
    proc = in_process("status", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert "finished" in lines["done"] and "ROUGE-L" in lines["done"] and "step 28" in lines["done"]
    assert "preempted" in lines["stopped"] and "step 28" in lines["stopped"]


def test_status_and_methods_import_neither_transformers_nor_peft(tmp_path, reference):
    """``peftbench status`` (which validates each run's checkpoints against its config) and ``peftbench methods``
    in a fresh process: the same output as here, without importing transformers, peft or accelerate (seconds
    saved on every call on a login node)."""
    shutil.copytree(reference, tmp_path / "done")
    code = (
        "import sys\n"
        "from peftbench.cli import main\n"
        f"rc = main(['status', {str(tmp_path)!r}]) or main(['methods'])\n"
        "print('HEAVY', sorted({'transformers', 'peft', 'accelerate'} & set(sys.modules)))\n"
        "sys.exit(rc)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    here = in_process("status", str(tmp_path)).stdout + in_process("methods").stdout
    assert "step 28" in here and "lora: low-rank updates" in here
    assert proc.stdout == here + "HEAVY []\n"


def test_best_weights_follow_the_validation_score(reference):
    metrics = json.loads((reference / "metrics.json").read_text())
    validation = metrics["train"]["validation"]
    best_step, best_score = max(validation, key=lambda v: (v[1], -v[0]))  # first step with the top score
    best_dir = reference / "best" / f"step-{best_step:08d}"
    best = json.loads((best_dir / "best.json").read_text())
    assert {k: best[k] for k in ("step", "metric", "score")} == {
        "step": best_step,
        "metric": "rougeL",
        "score": best_score,
    }
    assert metrics["train"]["best_step"] == best_step
    assert metrics["data"]["validation_tasks"] == 2
    weights = load_tensors(best_dir / "trainable.safetensors")
    assert sum(t.numel() for t in weights.values()) == metrics["trainable_params"]
    # The test split is scored with exactly these weights; the last ones are kept beside them.
    tested = load_tensors(reference / "trainable.safetensors")
    assert all(torch.equal(tested[k], weights[k]) for k in weights)
    assert metrics["weights"]["step"] == best_step and metrics["weights"]["last_step"] == 30
    if best_step != 30:
        last = load_tensors(reference / "last.safetensors")
        assert any(not torch.equal(last[k], weights[k]) for k in weights)
