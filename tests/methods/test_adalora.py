"""AdaLoRA inside peftbench's loop: ranks are pruned during training, and a pre-empted run resumes exactly."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from peftbench.configure import config_from_dict
from peftbench.data.tokenize import Features
from peftbench.errors import PeftbenchError
from peftbench.methods import get_method
from peftbench.models import is_encoder_decoder
from peftbench.recipe.rundir import config_hash
from peftbench.recipe.setup import build_model
from peftbench.training.checkpoint import latest_valid_checkpoint
from peftbench.training.preemption import Preempted, StopFlag
from peftbench.training.trainer import Checkpointing, Schedule, fit

STEPS = 12


def _cfg(**method):
    return config_from_dict(
        {
            "model": {"name": "tiny-t5"},
            "method": {"name": "adalora", "init_r": 6, "target_r": 2, "tinit": 2, "tfinal": 3, **method},
            "train": {"max_steps": STEPS, "per_device_batch_size": 2, "learning_rate": 1e-2},
            "seed": 3,
        }
    )


FEATS = [Features(str(i), "t", "c", [5 + i, 6 + i % 3, 1], [7 + i % 4, 8, 1], ("x",)) for i in range(10)]


def _fit(cfg, run_dir=None, stop_at=None):
    torch.manual_seed(0)
    model, _ = build_model(cfg)
    spec = get_method("adalora")
    stop = StopFlag()
    hooks = spec.training_hooks
    if stop_at is not None:

        def hooks(model, steps):  # AdaLoRA's hooks, plus a "signal" arriving after step ``stop_at``
            inner = spec.training_hooks(model, steps)
            original = inner.after_step

            def after_step(step):
                original(step)
                if step == stop_at:
                    stop.signal = 15

            inner.after_step = after_step
            return inner

    checkpointing = None
    if run_dir is not None:
        resume = latest_valid_checkpoint(run_dir, config_hash(cfg), 1)
        checkpointing = Checkpointing(run_dir, 0, 2, config_hash(cfg), {}, resume)
    fit(
        model, FEATS, cfg.train, Schedule.of(cfg.train), Accelerator(), seed=cfg.seed, pad_id=0,
        encoder_decoder=is_encoder_decoder(model), progress=False, checkpointing=checkpointing, stop=stop,
        hooks=hooks,
    )  # fmt: skip
    return model


def _lora_e(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_E" in n}


def test_ranks_are_pruned_to_the_target_budget():
    cfg = _cfg()
    model = _fit(cfg)
    pattern = model.peft_config["default"].rank_pattern
    assert pattern, "update_and_allocate never ran"
    kept = sum(sum(mask) for mask in pattern.values())
    assert kept == 2 * len(pattern)  # target_r per adapted matrix on average
    zeros = sum(int((e == 0).sum()) for e in _lora_e(model).values())
    assert zeros == (6 - 2) * len(pattern)  # pruned singular values are zeroed


@pytest.mark.parametrize("stop_at", [4, 10])  # during pruning, and after the final ranks are fixed
def test_preempted_adalora_resumes_bit_identically(tmp_path, stop_at):
    cfg = _cfg()
    reference = _fit(cfg)
    with pytest.raises(Preempted):
        _fit(cfg, tmp_path, stop_at=stop_at)
    ckpt = latest_valid_checkpoint(tmp_path, config_hash(cfg), 1)
    assert ckpt is not None and ckpt.step == stop_at
    assert (ckpt.path / "method_state.safetensors").is_file()
    resumed = _fit(cfg, tmp_path)
    for (name, a), b in zip(reference.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b), name
    assert resumed.peft_config["default"].rank_pattern == reference.peft_config["default"].rank_pattern


def test_schedule_without_pruning_phase_is_refused():
    with pytest.raises(PeftbenchError, match="no pruning phase"):
        _fit(_cfg(tinit=8, tfinal=4))


def test_default_schedule_follows_the_paper_s_scripts():
    """Without tinit/tfinal/delta_t the schedule takes the proportions of QingruZhang/AdaLoRA's scripts: warm-up
    4-18% of the run, final fixed-rank phase 31-63%, pruning every 100 steps in long runs (MNLI: T = 85,904,
    tinit 8000, tfinal 50000, deltaT 100), orthogonality weight 0.1; the hooks hand them to peft."""
    from peftbench.methods.adalora import AdaLoraConfig

    for total in (85_904, 16_370, 3_450):
        tinit, tfinal, _ = AdaLoraConfig().schedule(total)
        assert 0.04 <= tinit / total <= 0.18 and 0.31 <= tfinal / total <= 0.63
        assert tinit + tfinal < total
    assert AdaLoraConfig().schedule(85_904)[2] == 100 and AdaLoraConfig().schedule(3_450)[2] == 6
    assert AdaLoraConfig().orth_reg_weight == 0.1
    cfg = config_from_dict({"model": {"name": "tiny-t5"}, "method": {"name": "adalora", "init_r": 6}, "seed": 3})
    model, _ = build_model(cfg)
    hooks = get_method("adalora").training_hooks(model, 1000)
    peft_config = model.base_model.peft_config["default"]
    assert (peft_config.tinit, peft_config.tfinal, peft_config.deltaT, peft_config.total_step) == (100, 500, 2, 1000)
    assert hooks.config is peft_config
    given = config_from_dict({"model": {"name": "tiny-t5"}, "method": {"name": "adalora", "tinit": 7}, "seed": 3})
    model, _ = build_model(given)
    get_method("adalora").training_hooks(model, 1000)
    assert model.base_model.peft_config["default"].tinit == 7
