"""FSDP (FSDP2 ``fully_shard``) with 2 CPU processes (gloo), and its sharded checkpoints.

The reference run starts with ``accelerate launch --config_file configs/accelerate/fsdp.yaml``; the others
with torchrun and ``ACCELERATE_USE_FSDP=true``, the variable that config makes accelerate set. As in
``test_distributed.py``, 2 ranks with per-device batch 4 see at every step the batches of 1 rank with batch 4
and accumulation 2, so full fine-tuning sharded over 2 ranks must equal an unsharded 1-rank run to float
tolerance (the reductions run in another order). A sharded run stopped by SIGTERM, or resumed past a damaged
shard, must end bit for bit where an uninterrupted sharded run ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from peftbench.configure import config_from_dict
from peftbench.errors import PeftbenchError
from peftbench.io import load_tensors
from peftbench.recipe.setup import NOT_SHARDABLE, check_shardable
from peftbench.training.checkpoint import QUARANTINE, checkpoint_dirs, latest_valid_checkpoint, validate_checkpoint
from tests.conftest import REPO, SUPERNI_MINI, in_process, tiny_mini_config
from tests.support.processes import TORCHRUN, two_ranks
from tests.support.slow import slow_env

# Slow; its own xdist group (make test: --dist loadgroup): one worker, the module's fixtures built once.
pytestmark = [
    pytest.mark.skipif(not (SUPERNI_MINI / "tasks").is_dir(), reason=f"{SUPERNI_MINI} not found"),
    pytest.mark.slow,
    pytest.mark.xdist_group("fsdp"),
]

STEPS = 5  # 20 training tasks x 2 examples / batch 4: 5 steps of 2 batches stay in the first epoch
TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}
"""Sharded 2-rank vs unsharded 1-rank full fine-tuning: equal but for the order of float sums."""


def _config(out, name, method="full", accumulation=1) -> dict:
    cfg = tiny_mini_config(SUPERNI_MINI, out, method=method, run_name=name)
    cfg["data"]["num_validation_tasks"] = 2  # validation generates with the sharded model
    cfg["train"] = {"max_steps": STEPS, "per_device_batch_size": 4, "gradient_accumulation_steps": accumulation,
                    "logging_steps": 1, "learning_rate": 1e-3, "save_steps": 2, "eval_steps": 3}  # fmt: skip
    cfg["eval"]["weights"] = "last"  # compare the last weights, whatever validation chose
    return cfg


def _write(path, cfg):
    path.write_text(yaml.safe_dump(cfg))
    return path


def _torchrun(*args, env=None, accelerate: bool = False) -> subprocess.Popen:
    """2 ranks: torchrun with accelerate's FSDP switch set, or (``accelerate``) accelerate launch with the shipped
    configs/accelerate/fsdp.yaml, which sets it (and starts its processes through torchrun)."""
    if accelerate:
        config = REPO / "configs" / "accelerate" / "fsdp.yaml"
        launcher = ["-m", "accelerate.commands.launch", "--config_file", str(config), "--num_processes", "2"]
        return two_ranks(*args, "--no-progress", env=env, launcher=launcher)
    return two_ranks(*args, "--no-progress", env={"ACCELERATE_USE_FSDP": "true", **(env or {})})


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


def _weights(run_dir):
    return load_tensors(run_dir / "trainable.safetensors")


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory):
    """An uninterrupted 2-rank FSDP full fine-tuning run (checkpoints at steps 2 and 4), started as the README
    says: accelerate launch with configs/accelerate/fsdp.yaml."""
    root = tmp_path_factory.mktemp("fsdp")
    config = _write(root / "two.yaml", _config(root / "runs", "two"))
    out = _finish(_torchrun("train", str(config), accelerate=True))
    return config, root / "runs" / "two", out


def test_sharded_full_fine_tuning_matches_one_unsharded_process(sharded_run, tmp_path):
    _, two_dir, out = sharded_run
    assert out.count("trainable 837,376") == 2  # start line and headline, rank 0 only
    manifest = json.loads((checkpoint_dirs(two_dir)[-1] / "manifest.json").read_text())
    assert manifest["sharded"] and manifest["world_size"] == 2
    assert {"sharded/.metadata", "sharded/__0_0.distcp", "sharded/__1_0.distcp"} <= set(manifest["files"])
    one = _write(tmp_path / "one.yaml", _config(tmp_path / "runs", "one", accumulation=2))
    proc = in_process("train", str(one), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = _weights(tmp_path / "runs" / "one"), _weights(two_dir)
    assert a.keys() == b.keys() and len(a) > 50
    for key in a:
        torch.testing.assert_close(b[key], a[key], **TOLERANCE, msg=key)
    one_m, two_m = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "runs" / "one", two_dir))
    assert two_m["train"]["steps"] == STEPS and len(two_m["train"]["validation"]) == len(one_m["train"]["validation"])
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"largest difference, sharded 2 ranks vs 1 process: {worst:.3g}")


def test_sigterm_saves_a_sharded_checkpoint_and_the_resume_is_bit_identical(sharded_run, tmp_path):
    config, two_dir, _ = sharded_run
    args = ("train", str(config), f"output_dir={tmp_path / 'runs'}")
    proc = _torchrun(*args, env=slow_env(step_s=1.0))
    log = tmp_path / "runs" / "two" / "train.log"
    deadline = time.time() + 240
    while time.time() < deadline and not (log.is_file() and "step 3/5" in log.read_text()):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)  # as Slurm does: every process of the job
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, out[-3000:]
    ckpt = checkpoint_dirs(tmp_path / "runs" / "two")[-1]
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest["sharded"] and 3 <= manifest["step"] < STEPS
    assert {"sharded/__0_0.distcp", "sharded/__1_0.distcp", "rng_state_rank1.json"} <= set(manifest["files"])

    out = _finish(_torchrun(*args))
    assert f"resuming from {ckpt.name}" in out
    a, b = _weights(tmp_path / "runs" / "two"), _weights(two_dir)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_damaged_shard_is_quarantined_and_the_previous_checkpoint_used(sharded_run, tmp_path):
    config, two_dir, _ = sharded_run
    run_dir = tmp_path / "runs" / "two"
    shutil.copytree(two_dir, run_dir)  # the finished run, minus what finishing wrote
    for name in ("metrics.json", "run_state.json", "trainable.safetensors", "last.safetensors", "predictions.jsonl"):
        (run_dir / name).unlink(missing_ok=True)
    first, last = checkpoint_dirs(run_dir)
    shard = last / "sharded" / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))

    out = _finish(_torchrun("train", str(config), f"output_dir={tmp_path / 'runs'}"))
    assert f"resuming from {first.name}" in out
    (quarantined,) = (run_dir / QUARANTINE).iterdir()
    reason = (quarantined / "QUARANTINE_REASON.txt").read_text()
    assert quarantined.name.startswith(last.name) and "sharded/__1_0.distcp does not match its SHA-256" in reason
    a, b = _weights(run_dir), _weights(two_dir)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_missing_shard_or_another_kind_of_run_is_refused(sharded_run, tmp_path):
    _, two_dir, _ = sharded_run
    cfg_hash = json.loads((checkpoint_dirs(two_dir)[-1] / "manifest.json").read_text())["config_hash"]
    run_dir = tmp_path / "two"
    shutil.copytree(two_dir / "checkpoints", run_dir / "checkpoints")
    first, last = checkpoint_dirs(run_dir)
    with pytest.raises(PeftbenchError, match=r"sharded \(FSDP\) run and this is an unsharded one"):
        validate_checkpoint(last, cfg_hash, 2, sharded=False)
    with pytest.raises(PeftbenchError, match="saved by 2 process"):
        validate_checkpoint(last, cfg_hash, 1, sharded=True)
    (last / "sharded" / "__0_0.distcp").unlink()
    found = latest_valid_checkpoint(run_dir, cfg_hash, 2, sharded=True)
    assert found is not None and found.path.name == first.name
    (reason,) = (p.read_text() for p in (run_dir / QUARANTINE).glob("*/QUARANTINE_REASON.txt"))
    assert "sharded/__0_0.distcp is missing" in reason


def test_every_method_trains_sharded_and_resumes_from_its_shards_bit_for_bit():
    """tests/support/fsdp_methods.py: each method on tiny T5 and tiny LLaMA, sharded over 2 ranks: 2 steps, a
    sharded save, 2 more steps == a fresh sharded model loading the save and taking the same 2 steps; the
    gathered weights are the method's trainable parameters. AdaLoRA is refused (one line) instead."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}  # fmt: skip
    command = [sys.executable, *TORCHRUN, "-m", "tests.support.fsdp_methods", "tiny-t5,tiny-llama"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (line,) = (line for line in proc.stdout.splitlines() if line.startswith("RESULTS "))
    results = json.loads(line.removeprefix("RESULTS "))
    assert len(results) == 2 * 19
    failed = {key: why for key, why in results.items() if why != "ok" and key.split("/")[1] not in NOT_SHARDABLE}
    assert not failed
    with pytest.raises(PeftbenchError, match="cannot train with FSDP"):
        check_shardable(config_from_dict({"model": {"name": "tiny-t5"}, "method": {"name": "adalora"}}))
