"""The training loop itself: step counting, gradient accumulation, per-method schedule defaults."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from peftbench.config import TrainConfig
from peftbench.configure import config_from_dict
from peftbench.data.tokenize import Features
from peftbench.models import is_encoder_decoder
from peftbench.recipe.setup import build_model
from peftbench.training.trainer import Schedule, fit, total_steps


@pytest.mark.parametrize(
    ("examples", "batch", "accum", "epochs", "expected"),
    [(10, 4, 1, 1.0, 3), (10, 4, 3, 2.0, 2), (100, 8, 2, 4.0, 28), (7, 8, 1, 3.0, 3), (100, 8, 2, 0.5, 4)],
)
def test_total_steps_counts_optimizer_steps(examples, batch, accum, epochs, expected):
    train = TrainConfig(num_epochs=epochs, per_device_batch_size=batch, gradient_accumulation_steps=accum)
    assert total_steps(train, examples) == expected


def test_max_steps_overrides_epochs():
    assert total_steps(TrainConfig(max_steps=5, num_epochs=100), 1000) == 5


@pytest.mark.parametrize(("method", "scheduler", "warmup"), [("full", "constant", 0.0), ("lora", "linear", 0.03)])
def test_method_defaults_fill_the_schedule(method, scheduler, warmup):
    cfg = config_from_dict({"method": {"name": method}})
    assert (cfg.train.lr_scheduler, cfg.train.warmup_ratio) == (scheduler, warmup)
    explicit = config_from_dict({"method": {"name": method}, "train": {"lr_scheduler": "cosine"}})
    assert explicit.train.lr_scheduler == "cosine"


def test_fit_runs_the_configured_number_of_steps_with_accumulation():
    cfg = config_from_dict(
        {
            "model": {"name": "tiny-t5"},
            "method": {"name": "lora"},
            "train": {"num_epochs": 2, "per_device_batch_size": 2, "gradient_accumulation_steps": 2},
        }
    )
    model, _ = build_model(cfg)
    feats = [Features(str(i), "t", "c", [5 + i, 6, 1], [7, 8, 1], ("x",)) for i in range(9)]
    accelerator = Accelerator(gradient_accumulation_steps=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    result = fit(
        model, feats, cfg.train, Schedule.of(cfg.train), accelerator, seed=0, pad_id=0,
        encoder_decoder=is_encoder_decoder(model), progress=False,
    )  # fmt: skip
    # 9 examples / batch 2 = 5 batches an epoch -> 3 optimizer steps (the last group is short), x 2 epochs
    assert result.steps == 6 == total_steps(cfg.train, len(feats))
    assert result.lr_scheduler == "linear" and result.warmup_steps == 0
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed


def test_progress_round_trips_through_a_checkpoints_trainer_state():
    import dataclasses
    import json

    from peftbench.training.state import Progress

    progress = Progress(
        step=3, epoch=1, batches_done=2, running=1.5, seen=2, losses=[(1, 2.0)], train_time_s=4.0, best=(2, 30.0),
        validation=[(2, 30.0)],
    )  # fmt: skip
    assert Progress.from_state(json.loads(json.dumps(progress.to_state()))) == progress
    older = {k: v for k, v in progress.to_state().items() if k not in ("best", "validation")}  # before validation
    assert Progress.from_state(older) == dataclasses.replace(progress, best=None, validation=[])


def test_the_schedule_comes_from_the_resolved_config_only():
    """Method defaults are filled in once, when the config is loaded; the trainer never guesses them."""
    from peftbench.config import TrainConfig
    from peftbench.errors import PeftbenchError
    from peftbench.methods import get_method

    resolved = config_from_dict({"method": {"name": "ia3"}}).train
    spec = get_method("ia3")
    assert Schedule.of(resolved) == Schedule(spec.default_learning_rate, spec.lr_scheduler, spec.warmup_ratio)
    with pytest.raises(PeftbenchError, match=r"train.learning_rate, train.lr_scheduler, train.warmup_ratio unset"):
        Schedule.of(TrainConfig())
