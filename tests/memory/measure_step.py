"""The bytes a real training step allocates on CPU, measured at the allocator (torch.profiler memory events),
independently of the plan's machinery: the check of ``peftbench.memory.plan`` (tests/memory/test_plan.py)."""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from peftbench.config import ExperimentConfig
from peftbench.memory.plan import train_batch
from peftbench.models import is_encoder_decoder
from peftbench.recipe.setup import build_model


def _live_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def measured_train_peak(cfg: ExperimentConfig) -> tuple[int, int]:
    """(peak bytes of a steady-state training step, bytes live before it: weights, buffers, AdamW state).

    The step is the trainer's: forward with labels, backward per micro-batch, gradient clipping, AdamW step,
    ``zero_grad(set_to_none=True)``; one step runs first so that the optimizer state exists. The peak is the
    largest running sum of the profiler's allocation and free events of the step, plus what was live before."""
    torch.manual_seed(0)
    model, _ = build_model(cfg)
    model.train()
    batch = train_batch(cfg, is_encoder_decoder(getattr(model, "get_base_model", lambda: model)()))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=cfg.train.weight_decay)

    def step() -> None:
        for _ in range(min(cfg.train.gradient_accumulation_steps, 2)):
            model(**batch).loss.backward()
        if cfg.train.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    before = _live_bytes([*model.parameters(), *model.buffers(), *state])
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    # every allocation (+bytes) and free (-bytes) of the step, in time order
    events = sorted(
        ((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
        key=lambda e: e[0],
    )
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return before + peak, before
