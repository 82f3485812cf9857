"""A crash can tear any byte: every file a run reads back, damaged at the byte level, leads to a repaired run equal
to the undamaged one (exit 0) or to one line naming the file (exit 2); never a traceback, a hang, or a lost
valid prediction or checkpoint.

One real small run (tiny T5, LoRA, the demo's generated tasks, test references with multi-byte UTF-8) is made
once. Each case copies it, damages one file (truncated at a seeded sample of offsets, inside multi-byte characters
too; bits flipped; a byte made invalid UTF-8; 64 bytes zeroed; emptied; replaced by a directory), and runs what
reads that file: ``train`` (finish or resume), ``status`` and ``report``. Three states of the run are damaged:
finished, stopped during the test evaluation (predictions half written) and stopped during training (checkpoints
only). ``make test`` runs a sample of the matrix (every damage of a torn predictions file, one of every other
file); ``PEFTBENCH_FAULTS=full`` runs all 168 cases. The readers themselves are checked at every offset in
``test_readers_at_every_offset``. docs/preemption.md has the table of files.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from peftbench.demodata import generate_demo_data
from peftbench.errors import PeftbenchError
from tests.conftest import in_process

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("faults")]

NON_ASCII = " — réponse 答案 👍"
"""Appended to every test reference: predictions.jsonl lines then hold 2-, 3- and 4-byte UTF-8 characters."""


def _config(data: Path, out: Path) -> dict:
    return {
        "model": {"name": "tiny-t5"},
        "method": {"name": "lora"},
        "data": {"data_dir": str(data), "split": "demo", "max_source_length": 128, "max_target_length": 16,
                 "num_validation_tasks": 2},
        "train": {"max_steps": 8, "per_device_batch_size": 4, "logging_steps": 1, "save_steps": 3, "eval_steps": 4,
                  "learning_rate": 1e-3},
        "eval": {"batch_size": 4, "max_new_tokens": 8},
        "output_dir": str(out),
        "run_name": "run",
    }  # fmt: skip


class Reference:
    def __init__(self, root: Path):
        data = generate_demo_data(root / "data", seed=0, train_instances=4, test_instances=3, pretrain_instances=1)
        for split_file in (data / "splits" / "demo").glob("test_tasks.txt"):
            for name in split_file.read_text().split():
                path = data / "tasks" / f"{name}.json"
                task = json.loads(path.read_text(encoding="utf-8"))
                for instance in task["Instances"]:
                    instance["output"] = [o + NON_ASCII for o in instance["output"]]
                path.write_text(json.dumps(task, ensure_ascii=False), encoding="utf-8")
        self.root, self.data = root, data
        self.cfg = self.config_for(root / "reference")
        proc = in_process("train", str(self.cfg), "--no-progress")
        assert proc.returncode == 0, proc.stderr[-3000:]
        self.run = root / "reference" / "run"
        self.metrics = json.loads((self.run / "metrics.json").read_text(encoding="utf-8"))
        self.predictions = (self.run / "predictions.jsonl").read_bytes()
        self.count = 0

    def config_for(self, out: Path) -> Path:
        path = out.with_suffix(".yaml")
        path.write_text(yaml.safe_dump(_config(self.data, out)))
        return path

    def copy(self, state: str) -> tuple[Path, Path]:
        """A copy of the reference run in ``state``: finished, evaluating (stopped half-way through the test
        predictions) or training (stopped after its checkpoints, before the final weights)."""
        self.count += 1
        out = self.root / f"case-{self.count}"
        shutil.copytree(self.run, out / "run")
        run = out / "run"
        if state in ("evaluating", "training"):
            (run / "metrics.json").unlink()
            (run / "instance_scores.json").unlink()
            _mark_stopped(run, trained=state == "evaluating")
        if state == "evaluating":  # torn inside a multi-byte character of a line's references
            cut = self.predictions.index(NON_ASCII.encode()[-3:], len(self.predictions) // 2) + 1
            (run / "predictions.jsonl").write_bytes(self.predictions[:cut])
        if state == "training":
            for name in ("predictions.jsonl", "trainable.safetensors", "last.safetensors"):
                (run / name).unlink(missing_ok=True)
        return self.config_for(out), run


def _mark_stopped(run: Path, trained: bool) -> None:
    state = json.loads((run / "run_state.json").read_text())
    state["status"] = "preempted"
    if not trained:
        state.pop("trained", None)
        state.pop("train", None)
        state.pop("weights", None)
        state.pop("weights_sha256", None)
    (run / "run_state.json").write_text(json.dumps(state))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    return Reference(tmp_path_factory.mktemp("faults"))


def test_the_reference_predictions_hold_multibyte_characters(reference):
    text = reference.predictions.decode("utf-8")
    assert "答案" in text and "👍" in text and text.count("\n") == reference.metrics["overall"]["num_examples"]


# --------------------------------------------------------------------------------------------------
# Damage


def truncate(fraction: float | None = None) -> Callable[[Path, random.Random], str]:
    def damage(path: Path, rng: random.Random) -> str:
        data = path.read_bytes()
        if fraction is None:  # a seeded offset inside a multi-byte character where there is one
            inside = [i for i, b in enumerate(data) if 0x80 <= b < 0xC0]
            offset = rng.choice(inside) if inside else rng.randrange(len(data) + 1)
        else:
            offset = int(len(data) * fraction)
        path.write_bytes(data[:offset])
        return f"truncated at {offset}/{len(data)}"

    return damage


def flip(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    if not data:
        return "empty already"
    i = rng.randrange(len(data))
    data[i] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return f"bit flipped at {i}"


def invalid_utf8(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    i = rng.randrange(max(len(data), 1))
    data[i : i + 1] = b"\xff"
    path.write_bytes(bytes(data))
    return f"0xFF at {i}"


def zero_block(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    i = rng.randrange(max(len(data), 1))
    data[i : i + 64] = bytes(len(data[i : i + 64]))
    path.write_bytes(bytes(data))
    return f"64 zero bytes at {i}"


def directory(path: Path, rng: random.Random) -> str:
    path.unlink()
    path.mkdir()
    (path / "x").write_text("x")
    return "replaced by a directory"


DAMAGES = {
    "empty": truncate(0.0), "half": truncate(0.5), "last-byte": truncate(0.999999), "multibyte": truncate(None),
    "flip": flip, "invalid-utf8": invalid_utf8, "zeros": zero_block, "directory": directory,
}  # fmt: skip

# What each state's run reads back when it is run again (paths relative to the run directory).
FINISHED = ["metrics.json", "config.yaml", "run_state.json", "predictions.jsonl", "instance_scores.json", "base.json",
            "trainable.safetensors"]  # fmt: skip
EVALUATING = ["predictions.jsonl", "run_state.json", "trainable.safetensors", "config.yaml", "base.json"]
TRAINING = [
    "checkpoints/checkpoint-00000006/manifest.json", "checkpoints/checkpoint-00000006/trainer_state.json",
    "checkpoints/checkpoint-00000006/rng_state_rank0.json", "checkpoints/checkpoint-00000006/optimizer.pt",
    "checkpoints/checkpoint-00000006/scheduler.pt", "checkpoints/checkpoint-00000006/trainable.safetensors",
    "best/step-00000004/best.json", "best/step-00000004/trainable.safetensors", "run_state.json",
]  # fmt: skip
FULL = [(s, f, d) for s, files in (("finished", FINISHED), ("evaluating", EVALUATING), ("training", TRAINING))
        for f in files for d in DAMAGES]  # fmt: skip
"""Every damage of every file in every state: 168 cases, 12.5 minutes on 2 busy cores (PEFTBENCH_FAULTS=full)."""


def _sample() -> list[tuple[str, str, str]]:
    """What ``make test`` runs: every damage of the torn-predictions case, and one damage of every other file
    (chosen in turn, so every damage kind is used about equally)."""
    kinds = list(DAMAGES)
    cases = [("evaluating", "predictions.jsonl", d) for d in kinds]
    pairs = [(s, f) for s, f, _ in FULL if (s, f) != ("evaluating", "predictions.jsonl")]
    return cases + [(state, name, kinds[k % len(kinds)]) for k, (state, name) in enumerate(dict.fromkeys(pairs))]


CASES = FULL if os.environ.get("PEFTBENCH_FAULTS") == "full" else _sample()


def _one_line_or_ok(proc, what: str) -> None:
    assert "Traceback" not in proc.stderr, f"{what}: traceback\n{proc.stderr[-3000:]}"
    if proc.returncode == 2:
        lines = [line for line in proc.stderr.splitlines() if line.strip() and "warn" not in line.lower()]
        assert len(lines) == 1 and lines[0].startswith("peftbench: error: "), f"{what}: {proc.stderr[-2000:]}"
    else:
        assert proc.returncode == 0, f"{what}: exit {proc.returncode}\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize(("state", "name", "damage"), CASES, ids=[f"{s}-{f.split('/')[-1]}-{d}" for s, f, d in CASES])
def test_a_damaged_file_is_repaired_or_refused_in_one_line(reference, state, name, damage):
    cfg, run = reference.copy(state)
    target = run / name
    rng = random.Random(f"{state}/{name}/{damage}")
    what = f"{state} run, {name} {DAMAGES[damage](target, rng)}"
    checkpoints_before = sorted(p.name for p in (run / "checkpoints").iterdir())

    proc = in_process("train", str(cfg), "--no-progress")
    _one_line_or_ok(proc, f"train after {what}")
    if proc.returncode == 0:  # repaired: the result is the undamaged run's, to the last prediction
        metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
        assert metrics["overall"] == reference.metrics["overall"], what
        assert metrics["per_task"] == reference.metrics["per_task"], what
        if state != "finished" or name != "predictions.jsonl":  # a finished run does not read its predictions
            # the same lines (a batch generated again after a damaged one was dropped is appended at the end)
            assert sorted((run / "predictions.jsonl").read_bytes().splitlines()) == sorted(
                reference.predictions.splitlines()
            ), what
    else:
        assert str(target.relative_to(run.parent)) in proc.stderr or name.split("/")[-1] in proc.stderr, what
    # nothing valid is lost: every checkpoint is still there or set aside in quarantine/ with its reason
    kept = {p.name for p in (run / "checkpoints").iterdir()}
    quarantine = run / "quarantine"
    quarantined = {p.name.split("-2")[0] for p in quarantine.iterdir()} if quarantine.is_dir() else set()
    assert all(c in kept or c in quarantined for c in checkpoints_before), what
    _one_line_or_ok(in_process("status", str(run.parent)), f"status after {what}")
    if state == "finished":  # the report reads finished runs only
        _one_line_or_ok(in_process("report", str(run.parent), "-o", str(run.parent / "rep")), f"report after {what}")
    if state == "finished" and name == "trainable.safetensors":  # evaluate reads the saved weights
        proc = in_process("evaluate", str(run), "--no-progress")
        _one_line_or_ok(proc, f"evaluate after {what}")
        if proc.returncode == 0:
            metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
            assert metrics["overall"] == reference.metrics["overall"], what


def test_the_matrix_covers_every_file_a_run_reads_back(reference):
    listed = set(FINISHED) | set(EVALUATING) | set(TRAINING) | {"train.log", "last.safetensors"}
    files = {str(p.relative_to(reference.run)) for p in reference.run.rglob("*") if p.is_file()}
    older = {f for f in files if f.startswith("checkpoints/checkpoint-00000003/")}  # the fallback, kept whole
    assert files - older <= listed, sorted(files - older - listed)
    assert len(FULL) == 168 and len(CASES) >= 28


def test_readers_at_every_offset(reference):
    """Each reader of a small file, at every truncation offset: the file's value or one PeftbenchError."""
    from peftbench.recipe.rundir import check_base, read_run_config
    from peftbench.recipe.runfiles import RunState, finished_metrics
    from peftbench.training.checkpoint import validate_checkpoint

    run = reference.root / "offsets"
    shutil.copytree(reference.run, run)
    sha = json.loads((run / "base.json").read_text())["sha256"]
    ckpt = run / "checkpoints" / "checkpoint-00000006"
    config_hash = reference.metrics["config_hash"]
    readers = {
        "config.yaml": lambda: read_run_config(run),
        "metrics.json": lambda: finished_metrics(run),
        "run_state.json": lambda: RunState(run / "run_state.json"),
        "base.json": lambda: check_base(run, sha),
        "checkpoints/checkpoint-00000006/manifest.json": lambda: validate_checkpoint(ckpt, config_hash, 1),
        "checkpoints/checkpoint-00000006/trainer_state.json": lambda: validate_checkpoint(ckpt, config_hash, 1),
    }
    cases = 0
    for name, read in readers.items():
        path = run / name
        whole = path.read_bytes()
        for offset in range(len(whole) + 1):
            path.write_bytes(whole[:offset])
            try:
                value = read()
            except PeftbenchError as exc:
                assert len(str(exc).splitlines()) == 1 and name.split("/")[-1] in str(exc), (name, offset)
            else:
                if name == "metrics.json" and value is not None:
                    assert value == reference.metrics, offset  # only a whole document is trusted
                if name.startswith("checkpoints/") and value is None:
                    assert offset >= len(whole.rstrip()), offset  # validated only when whole
            cases += 1
        path.write_bytes(whole)
    assert cases > 5000


def test_a_changed_weight_is_caught_by_the_recorded_sha256(reference):
    """A flipped bit in the tensor data of the final weights still loads; only the recorded SHA-256 can catch it."""
    cfg, run = reference.copy("finished")
    path = run / "trainable.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # inside the last tensor's values (the header is at the start)
    path.write_bytes(bytes(data))
    proc = in_process("evaluate", str(run), "--no-progress")
    assert proc.returncode == 2 and "trainable.safetensors is damaged" in proc.stderr and "SHA-256" in proc.stderr
    (run / "metrics.json").unlink()
    proc = in_process("train", str(cfg), "--no-progress")  # resumes from the checkpoints, saves them again
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run / "trainable.safetensors.damaged").is_file()
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["overall"] == reference.metrics["overall"]
