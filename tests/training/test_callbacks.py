"""Callbacks: a run tells them of every step, checkpoint file and test batch; installed plugins are found
through their entry points, and a broken one is a one-line error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peftbench.configure import config_from_dict
from peftbench.errors import PeftbenchError
from peftbench.recipe.run import run_experiment
from peftbench.training.callbacks import Callback, installed_callbacks
from peftbench.training.checkpoint import MANIFEST, checkpoint_dirs
from tests.conftest import tiny_mini_config
from tests.support.slow import PLUGIN_DIR, slow_env


class Recorder(Callback):
    def __init__(self) -> None:
        self.steps: list[tuple[int, int]] = []
        self.files: list[tuple[Path, bool]] = []
        self.batches: list[tuple[int, int]] = []

    def on_step_end(self, step: int, total: int) -> None:
        self.steps.append((step, total))

    def on_checkpoint_file(self, path: Path) -> None:
        self.files.append((path, path.is_file()))

    def on_evaluation_batch(self, done: int, total: int) -> None:
        self.batches.append((done, total))


def test_a_run_tells_its_callbacks_of_every_step_checkpoint_file_and_test_batch(superni_mini, tmp_path):
    raw = tiny_mini_config(superni_mini, tmp_path / "runs", run_name="run")
    raw["train"].update(max_steps=5, save_steps=2, save_total_limit=5)
    raw["eval"]["batch_size"] = 4
    recorder = Recorder()
    result = run_experiment(config_from_dict(raw), progress=False, quiet=True, callbacks=[recorder])

    assert recorder.steps == [(step, 5) for step in range(1, 6)]
    saved = checkpoint_dirs(result.run_dir)
    assert [d.name for d in saved] == ["checkpoint-00000002", "checkpoint-00000004"]
    expected = []
    for ckpt in saved:  # every file of the manifest, then the manifest; each in the temporary directory
        listed = json.loads((ckpt / MANIFEST).read_text())["files"]
        written = [path for path, _ in recorder.files if path.parent.name.startswith(f".tmp-{ckpt.name}-")]
        assert [p.name for p in written[:-1]] == _write_order(listed) and written[-1].name == MANIFEST
        expected += written
    assert [path for path, _ in recorder.files] == expected
    assert all(existed for _, existed in recorder.files)

    total = recorder.batches[-1][1]
    assert recorder.batches == [(done, total) for done in range(1, total + 1)]
    assert total >= 2 and result.metrics["overall"]["num_examples"] > total  # several examples a batch


def _write_order(names) -> list[str]:
    order = ["trainable.safetensors", "optimizer.pt", "scheduler.pt"]
    rng = sorted(n for n in names if n.startswith("rng_state_rank"))
    return [n for n in order if n in names] + rng + ["trainer_state.json"]


def test_the_slow_plugin_of_the_tests_is_found_through_pythonpath(monkeypatch):
    for name, value in slow_env(step_s=0.25, checkpoint_file_s=0.5).items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    (callback,) = installed_callbacks()
    assert type(callback).__name__ == "Slow" and isinstance(callback, Callback)
    assert (callback.step_s, callback.checkpoint_file_s, callback.evaluation_batch_s) == (0.25, 0.5, 0.0)


def _plugin(root: Path, target: str, module: str = "") -> None:
    info = root / "broken_plugin-0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[peftbench.callbacks]\nbroken = {target}\n")
    if module:
        (root / "broken_plugin.py").write_text(module)


@pytest.mark.parametrize(
    ("target", "module", "message"),
    [
        ("no_such_module:Thing", "", r"callback plugin 'broken' \(no_such_module:Thing of broken-plugin\) failed to "
                                     r"load: ModuleNotFoundError"),
        ("broken_plugin:make", "def make():\n    return object()\n", "gave a object, not a peftbench Callback"),
    ],
)  # fmt: skip
def test_a_broken_plugin_is_a_one_line_error(tmp_path, monkeypatch, target, module, message):
    _plugin(tmp_path, target, module)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PeftbenchError, match=message) as err:
        installed_callbacks()
    assert "\n" not in str(err.value)


class _CtrlC(Callback):
    """A second Ctrl-C in the middle of step 2 (the handler's first one would have asked for a save)."""

    def on_step_end(self, step: int, total: int) -> None:
        if step == 2:
            raise KeyboardInterrupt


def test_a_second_ctrl_c_is_recorded_as_interrupted_not_as_a_failure(superni_mini, tmp_path, cli):
    raw = tiny_mini_config(superni_mini, tmp_path / "runs", run_name="run")
    raw["train"].update(max_steps=5)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config_from_dict(raw), progress=False, quiet=True, callbacks=[_CtrlC()])
    state = json.loads((tmp_path / "runs" / "run" / "run_state.json").read_text())
    assert state["status"] == "interrupted" and "Ctrl-C" in state["error"]
    (line,) = cli("status", str(tmp_path / "runs")).stdout.splitlines()[1:]
    assert "interrupted" in line and "failed" not in line and "KeyboardInterrupt" not in line
