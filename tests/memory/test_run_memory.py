"""Each run's recorded peak memory is its own: two runs in one process (full fine-tuning, then LoRA, tiny T5 on the
SuperNI sample), as the demo runs its methods."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import in_process, require_superni_mini, tiny_mini_config

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("run_memory")]


def _train(root, method: str) -> dict:
    data_dir = require_superni_mini()
    cfg_path = root / f"{method}.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_mini_config(data_dir, root / method, "tiny-t5", method)))
    proc = in_process("train", str(cfg_path), "train.learning_rate=1e-3", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (root / method).iterdir()
    return json.loads((run_dir / "metrics.json").read_text())


def test_two_runs_in_one_process_each_record_their_own_peak(tmp_path):
    full = _train(tmp_path, "full")  # the larger run first: a process-wide peak would carry over to LoRA
    lora = _train(tmp_path, "lora")
    for m in (full, lora):
        assert m["peak_memory_kind"] == m["train"]["peak_memory_kind"] == "tensor_bytes"
        assert m["peak_memory_of"] == "training"
        assert m["peak_memory_mb"] == m["train"]["peak_memory_mb"] > m["train"]["peak_memory_baseline_mb"] > 0
        assert m["eval_peak_memory_mb"] > 0 and m["eval_peak_memory_kind"] == "tensor_bytes"
    weights_mb = full["total_params"] * 4 / 2**20  # fp32
    print({k: (m["peak_memory_mb"], m["train"]["peak_memory_baseline_mb"], m["eval_peak_memory_mb"])
           for k, m in (("full", full), ("lora", lora))}, f"weights {weights_mb:.2f} MB")  # fmt: skip
    # full fine-tuning holds a gradient and two AdamW moments per weight on top of the weights; LoRA almost none
    # (with a process-wide peak, LoRA's would be at least the full run's)
    assert full["peak_memory_mb"] > lora["peak_memory_mb"] + 2.5 * weights_mb
    # LoRA's count starts from its own weights: nothing the full run left in the process
    assert lora["train"]["peak_memory_baseline_mb"] == pytest.approx(weights_mb, rel=0.05)
    assert full["train"]["peak_memory_baseline_mb"] == pytest.approx(weights_mb, rel=0.05)
