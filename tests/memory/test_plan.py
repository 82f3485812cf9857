"""The memory plan (fake weights, MemTracker) against the bytes a real CPU training step allocates (torch.profiler
allocation events, tests/memory/measure_step.py): within 10% for 3 model shapes x 5 methods."""

from __future__ import annotations

import pytest

from peftbench.configure import config_from_dict
from peftbench.errors import PeftbenchError
from peftbench.memory.figures import MemoryPlan, StepMemory, parse_bytes
from peftbench.memory.plan import plan_memory
from tests.memory.measure_step import measured_train_peak

SHAPE = {"max_source_length": 256, "max_target_length": 32}
"""Activations dominate the peak at these lengths (batch 8): the check is of the step, not of the weights."""


def _cfg(model: str, method: str, accumulation: int = 2):
    return config_from_dict(
        {
            "model": {"name": model},
            "method": {"name": method},
            "data": SHAPE,
            "train": {"per_device_batch_size": 8, "gradient_accumulation_steps": accumulation},
            "launch": {"num_processes": 1},
        }
    )


@pytest.mark.parametrize("model", ["tiny-t5", "tiny-llama", "tiny-gpt2"])
@pytest.mark.parametrize("method", ["full", "lora", "adapter_houlsby", "prefix", "prompt"])
def test_plan_matches_a_measured_cpu_step(model, method):
    cfg = _cfg(model, method)
    plan = plan_memory(cfg, device="cpu", evaluate=False)
    measured, before = measured_train_peak(cfg)
    assert measured - before > 0.5 * measured, "the step itself, not the weights, should dominate the check"
    assert abs(plan.train_peak_bytes / measured - 1) <= 0.10, (plan.train, measured, before)


@pytest.mark.parametrize("model", ["tiny-t5", "tiny-llama", "tiny-gpt2"])
def test_plan_matches_a_measured_step_dominated_by_weights(model):
    """Short sequences, full fine-tuning: weights, gradients and AdamW state are most of the peak (a plan without
    the optimizer state is off by about a third here)."""
    cfg = config_from_dict(
        {
            "model": {"name": model},
            "method": {"name": "full"},
            "data": {"max_source_length": 16, "max_target_length": 4},
            "train": {"per_device_batch_size": 2, "gradient_accumulation_steps": 2},
            "launch": {"num_processes": 1},
        }
    )
    plan = plan_memory(cfg, device="cpu", evaluate=False)
    measured, before = measured_train_peak(cfg)
    assert abs(plan.train_peak_bytes / measured - 1) <= 0.10, (plan.train, measured, before)
    assert plan.train.optimizer > 0.3 * measured


def test_categories_sum_and_sharding():
    cfg = _cfg("tiny-llama", "full")
    one = plan_memory(cfg, world_size=1, device="cpu")
    assert one.train.total == one.train_peak_bytes and one.strategy == "single"
    assert one.train.optimizer >= 2 * one.train.trainable  # exp_avg and exp_avg_sq (and the step counters)
    assert one.eval.gradients == 0 and one.eval.optimizer == 0 and one.eval_peak_bytes > 0
    ddp = plan_memory(cfg, world_size=4, device="cpu")
    assert ddp.strategy == "ddp" and ddp.train.gradients == one.train.gradients + one.train.trainable
    cfg.launch.accelerate_config = "configs/accelerate/fsdp.yaml"
    fsdp = plan_memory(cfg, world_size=4, device="cpu")
    assert fsdp.strategy == "fsdp" and fsdp.train.optimizer < one.train.optimizer / 3
    assert fsdp.train_peak_bytes < one.train_peak_bytes
    assert "FSDP" in fsdp.table() and "optimizer state" in fsdp.table()


def test_fits_says_what_would_fit():
    plan = plan_memory(_cfg("tiny-llama", "lora"), device="cpu", evaluate=False)
    assert plan.fits(plan.peak_bytes) is None
    advice = plan.fits(int(plan.train_peak_bytes * 0.6))
    assert advice and "train.per_device_batch_size=" in advice and "gradient_accumulation_steps=" in advice
    ten = StepMemory(0, 0, 0, 0, 10)  # activations of a batch of one: no batch, no sharding helps
    tiny = MemoryPlan("m", "lora", "single", 1, 1, 1, (1, 2), (1, 2), "float32", "no", False, 1, 1, ten, ten)
    assert "nothing planned here fits" in tiny.fits(5)


def test_parse_bytes():
    assert parse_bytes("80GiB") == 80 * 2**30 and parse_bytes("40GB") == 40 * 10**9 and parse_bytes("1024") == 1024
    with pytest.raises(PeftbenchError, match="memory size"):
        parse_bytes("eighty")
