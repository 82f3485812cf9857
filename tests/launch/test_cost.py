"""``peftbench methods --cost``: per method, trainable parameters, AdamW and checkpoint bytes and the planned peaks."""

from __future__ import annotations

import pytest

from peftbench.launch.cost import method_cost
from peftbench.launch.presets import preset_config
from peftbench.models import load_model, load_tokenizer


@pytest.mark.parametrize("method", ["full", "lora"])
def test_the_costs_follow_adamw_and_the_model(method):
    """Independent of the plan: the base's parameter count from the real model, and AdamW's state as two fp32
    moments per trainable parameter (plus a step scalar per tensor), the checkpoint as trainable weights + state."""
    cost = method_cost(method, "tiny-t5", "dev")
    model_cfg = preset_config(method, "dev").model  # the preset's tokenizer sizes the vocabulary
    base = sum(p.numel() for p in load_model(model_cfg, vocab_size=len(load_tokenizer(model_cfg))).parameters())
    assert cost.base == base
    if method == "full":
        assert cost.trainable == base
    moments = 2 * 4 * cost.trainable
    assert moments <= cost.optimizer_bytes <= moments + 4 * 1000  # step counters: one small tensor per parameter
    assert cost.checkpoint_bytes == 4 * cost.trainable + cost.optimizer_bytes
    assert cost.plan.train_peak_bytes > cost.checkpoint_bytes


def test_the_cost_table_names_every_method_and_says_why_one_cannot_be_planned(cli, monkeypatch):
    """One row per method with a preset, in the registry's order (three of them here: planning all 19 takes 19 s)."""
    from peftbench.launch import cost

    monkeypatch.setattr(cost, "available_presets", lambda: ["full", "lora", "loha"])
    done = cli("methods", "--cost", "--model", "tiny-t5", "--mode", "dev", "--no-progress")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines[3:]] == ["full", "lora", "loha"]
    assert any(line.startswith("full ") and "100.000%" in line for line in lines)
    assert any(line.startswith("loha ") and "cannot" not in line and "reads tensor values" in line for line in lines)
    bad = cli("methods", "--cost")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "peftbench: error: --cost needs --model (the memory is planned on a model)"
