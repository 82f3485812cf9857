"""Chaos test of pre-emption safety: kill a tiny run at random moments until it finishes, many times.

    python bench/chaos.py --trials 20

Each trial starts `peftbench train` on a tiny T5 + LoRA run (the project's own generated demo data) and
interrupts it at random moments — during start-up, training, a checkpoint write or evaluation — with
SIGTERM (graceful: save, exit 75) or SIGKILL (no chance to save), re-running the same command after each
interruption until the run finishes. The finished run is compared with an uninterrupted one: trainable
weights (torch.equal), losses, predictions and metrics must all be identical. Prints one line per trial and
`N/N identical`, with how many signals were sent and how many checkpoints were quarantined.

The tests' slow-down plugin (tests/support/slow.py, a peftbench callback plugin on the runs' PYTHONPATH)
widens the windows so that kills land in every phase: it sleeps after each file of a checkpoint, each
step and each evaluation batch.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from peftbench.demodata import DEMO_SPLIT, generate_demo_data
from peftbench.io import load_tensors


def write_config(workdir: Path, data_dir: Path) -> Path:
    """The tiny run every trial repeats."""
    cfg = {
        "model": {"name": "tiny-t5"},
        "method": {"name": "lora"},
        "data": {"data_dir": str(data_dir), "split": DEMO_SPLIT, "max_train_instances_per_task": 8,
                 "max_eval_instances_per_task": 4, "max_source_length": 192, "max_target_length": 16},
        "train": {"max_steps": 60, "per_device_batch_size": 4, "logging_steps": 1, "save_steps": 6,
                  "save_total_limit": 2, "learning_rate": 1e-3},
        "eval": {"batch_size": 4, "max_new_tokens": 8},
        "run_name": "run",
    }  # fmt: skip
    path = workdir / "chaos.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def train(config: Path, out: Path, env: dict[str, str]) -> subprocess.Popen:
    """Starts `peftbench train CONFIG output_dir=OUT` (its stderr goes to OUT.stderr.log)."""
    cmd = [sys.executable, "-m", "peftbench", "train", str(config), f"output_dir={out}", "--no-progress"]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".stderr.log"), "a") as err:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)


def last_error(out: Path) -> str:
    """The end of a run's stderr log."""
    path = out.with_suffix(".stderr.log")
    return path.read_text()[-1500:] if path.is_file() else ""


def phase(run: Path, pid: int) -> str:
    """What process ``pid`` is doing right now, read from the run directory: start-up (imports, data,
    model), training, saving (its checkpoint directory is half-written) or evaluation."""
    try:
        state = json.loads((run / "run_state.json").read_text())
    except (OSError, ValueError):
        return "start-up"
    if state.get("pid") != pid or state.get("status") != "running":
        return "start-up"
    if any((run / "checkpoints").glob(f".tmp-*-{pid}")):
        return "saving"
    return "evaluation" if state.get("trained") else "training"


def identical(run: Path, ref: Path) -> tuple[bool, str]:
    """Whether a finished run equals the reference, with the first difference found."""
    a, b = load_tensors(run / "trainable.safetensors"), load_tensors(ref / "trainable.safetensors")
    if a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a):
        return False, "weights differ"
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (run, ref))
    for key in ("overall", "per_task", "per_category"):
        if ma[key] != mb[key]:
            return False, f"{key} differs"
    if ma["train"]["losses"] != mb["train"]["losses"]:
        return False, "losses differ"
    lines = (run / "predictions.jsonl").read_text().splitlines()
    if sorted(lines) != sorted((ref / "predictions.jsonl").read_text().splitlines()):
        return False, "predictions differ"
    return True, ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="independent chaos trials (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    parser.add_argument("--workdir", type=Path, default=Path("runs/chaos"), help="scratch directory (replaced)")
    parser.add_argument("--max-kills", type=int, default=4, help="interruptions per trial at most (default 4)")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    data_dir = generate_demo_data(args.workdir / "data", seed=0, train_instances=8, test_instances=4,
                                  pretrain_instances=1)  # fmt: skip
    config = write_config(args.workdir, data_dir)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for tests.support
    from tests.support.slow import slow_env

    chaos_env = {**env, **slow_env(step_s=0.03, checkpoint_file_s=0.07, evaluation_batch_s=0.03)}

    start = time.perf_counter()
    ref = train(config, args.workdir / "reference", env)
    if ref.wait() != 0:
        print(f"reference run failed: {last_error(args.workdir / 'reference')}")
        return 1
    reference = args.workdir / "reference" / "run"
    print(f"reference run: {time.perf_counter() - start:.1f} s")

    same = sent_term = sent_kill = quarantined = 0
    exit_codes: dict[int, int] = {}
    phases: dict[str, int] = {}
    for trial in range(1, args.trials + 1):
        out = args.workdir / f"trial{trial:02d}"
        kills, attempts = rng.randint(1, args.max_kills), 0
        while True:
            attempts += 1
            proc = train(config, out, chaos_env)
            if kills > 0:
                time.sleep(rng.uniform(2.0, 12.0))  # start-up takes ~3 s; training, saving, evaluation follow
                if proc.poll() is None:
                    where = phase(out / "run", proc.pid)
                    phases[where] = phases.get(where, 0) + 1
                    sig = rng.choice([signal.SIGTERM, signal.SIGKILL])
                    proc.send_signal(sig)
                    sent_term += sig == signal.SIGTERM
                    sent_kill += sig == signal.SIGKILL
                kills -= 1
            code = proc.wait()
            exit_codes[code] = exit_codes.get(code, 0) + 1
            if code == 0:
                break
            if code not in (75, -9, -15) or attempts > 20:
                print(f"trial {trial}: unexpected exit {code}: {last_error(out)}")
                return 1
        run = out / "run"
        q = len(list((run / "quarantine").iterdir())) if (run / "quarantine").is_dir() else 0
        quarantined += q
        ok, why = identical(run, reference)
        same += ok
        print(f"trial {trial:2d}: {attempts} attempt(s), {q} checkpoint(s) quarantined: "
              f"{'identical' if ok else 'DIFFERENT (' + why + ')'}", flush=True)  # fmt: skip
    print(f"{same}/{args.trials} identical | signals: {sent_term} SIGTERM, {sent_kill} SIGKILL | "
          f"exit codes: {dict(sorted(exit_codes.items()))} | signalled during: {dict(sorted(phases.items()))} | "
          f"quarantined checkpoints: {quarantined} | "
          f"{time.perf_counter() - start:.0f} s")  # fmt: skip
    return 0 if same == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
