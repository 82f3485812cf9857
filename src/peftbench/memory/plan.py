"""A memory plan from shapes alone: one training step and one generation step on fake weights.

The configured model is built on the ``meta`` device with the configured method applied (as
``recipe.setup.build_model`` applies it), its tensors are swapped for fake ones (``FakeTensorMode``: shapes and
dtypes, no storage), and one steady-state training step (forward and backward of ``min(accumulation, 2)``
micro-batches, gradient clipping, the AdamW step; the optimizer state already exists) and one generation step
(prefill of the longest prompt, then one decode step with the KV cache) run under torch's ``MemTracker``
(``torch.distributed._tools.mem_tracker``), which sorts every live tensor into parameters, buffers,
gradients, activations, temporaries and optimizer state. The peak is per device; DDP and FSDP over
``world_size`` devices are applied to the one-device figures afterwards (see :func:`_distributed`).

No weights are read and no GPU is needed: ``plan_memory(cfg)`` for T5-XL with 1024-token prompts takes seconds.
See docs/memory.md for what it models, its measured accuracy and its limits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensorMode,
    UnsupportedFakeTensorException,
)
from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType

from peftbench.config import ExperimentConfig
from peftbench.configure import method_config
from peftbench.errors import PeftbenchError
from peftbench.memory.figures import MemoryPlan, StepMemory, distributed, split_peak
from peftbench.methods import apply_method, get_method
from peftbench.methods.core.activations import enable_gradient_checkpointing
from peftbench.models import is_encoder_decoder, model_skeleton

# --------------------------------------------------------------------------------------------------
# Building the model on fake weights


def strategy_of(cfg: ExperimentConfig, world_size: int) -> str:
    """single (one device), fsdp (``launch.accelerate_config`` names FSDP or DeepSpeed ZeRO-3) or ddp."""
    if world_size <= 1:
        return "single"
    name = (cfg.launch.accelerate_config or "").lower()
    return "fsdp" if "fsdp" in name or "zero3" in name else "ddp"


def _skeleton(cfg: ExperimentConfig) -> nn.Module:
    """The base model on ``meta`` with the configured method applied, as ``build_model`` builds it."""
    with torch.device("meta"):
        model = model_skeleton(cfg.model)
        return apply_method(get_method(cfg.method_name), model, method_config(cfg), cfg.model.name)


def _to_fake(model: nn.Module, mode: FakeTensorMode) -> None:
    """Swaps every tensor the model holds (parameters, buffers, plain tensor attributes such as peft's prompt token
    ids) for a fake CPU tensor of the same shape and dtype; tied tensors stay tied."""
    memo: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # keeps the originals alive: ids stay unique

    def fake(t: torch.Tensor) -> torch.Tensor:
        if id(t) not in memo:
            with mode:
                new = torch.empty(t.shape, dtype=t.dtype, device="cpu")
            memo[id(t)] = (t, nn.Parameter(new, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else new)
        return memo[id(t)][1]

    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for key, t in table.items():
                if t is not None:
                    table[key] = fake(t)
        for key, value in vars(module).items():
            if key in ("_parameters", "_buffers"):  # done above (faking them again would untie tied weights)
                continue
            if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
                setattr(module, key, fake(value))
            elif isinstance(value, dict) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
                for k, v in value.items():
                    value[k] = fake(v)


class _Tracker(MemTracker):
    """``MemTracker`` with two changes: no gradient hooks on frozen parameters (torch 2.13's tracker registers one on
    every parameter, which fails on a frozen one), and only the global peak is kept per operation (the per-module
    peaks cost a pass over every module per operation: minutes for T5-XL instead of seconds)."""

    def _track_module_params_and_buffers(self, module: nn.Module, install_grad_hooks: bool = True) -> tuple[int, int]:
        def grad_hook(grad: torch.Tensor) -> None:
            self._update_and_maybe_create_winfos(grad, _MemRefType.GRAD)

        param_memory = buffer_memory = 0
        for param in module.parameters():
            winfos = self._update_and_maybe_create_winfos(param, _MemRefType.PARAM)
            param_memory += sum(w.mem_consumed for w in winfos)
            if param.grad is not None:
                self._update_and_maybe_create_winfos(param.grad, _MemRefType.GRAD)
            if install_grad_hooks and param.requires_grad and self._param_to_grad_hook_handles.get(param) is None:
                self._param_to_grad_hook_handles[param] = (
                    param.register_hook(grad_hook),
                    param.register_post_accumulate_grad_hook(lambda p: grad_hook(p.grad)),
                )
        for buffer in module.buffers():
            buffer_memory += sum(
                w.mem_consumed for w in self._update_and_maybe_create_winfos(buffer, _MemRefType.BUFFER)
            )
        return param_memory, buffer_memory

    def _update_peak_stats(self, peak_state: Any) -> None:
        for dev, snap in self._curr_mem_snap.items():
            if self._peak_mem.get(dev, 0) < snap["Total"]:
                self._peak_mem[dev] = snap["Total"]
                self._peak_mem_snap[dev] = dict(snap)

    def peak(self) -> dict[str, int]:
        """The categories at the peak (one device): Parameter, Buffer, Gradient, Activation, Temp, Optstate, Total."""
        snaps = list(self.get_tracker_snapshot("peak").values())
        return {str(getattr(k, "value", k)): int(v) for k, v in (snaps[0] if snaps else {}).items()}


def _nbytes(tensors: Iterator[torch.Tensor]) -> int:
    seen: set[int] = set()
    total = 0
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


# --------------------------------------------------------------------------------------------------
# The steps


def train_batch(cfg: ExperimentConfig, encoder_decoder: bool, batch: int | None = None) -> dict[str, torch.Tensor]:
    """A training batch of the configured shape (the longest prompt and target; decoder-only: both in one
    sequence with the prompt masked in the labels, as ``data.collate.training_batch`` builds it). Its last example
    is one token shorter (padded), as in a real batch: transformers skips building the attention mask of a batch
    without padding, which it can only see from the values (a fake step builds it). Real tensors outside a fake
    mode, fake ones inside."""
    b = batch or cfg.train.per_device_batch_size
    s, t = cfg.data.max_source_length, cfg.data.max_target_length
    length = s if encoder_decoder else s + t
    mask = torch.ones(b, length, dtype=torch.long)
    mask[-1, -1] = 0
    if encoder_decoder:
        labels = torch.ones(b, t, dtype=torch.long)
    else:
        labels = torch.cat([torch.full((b, s), -100, dtype=torch.long), torch.ones(b, t, dtype=torch.long)], dim=1)
        labels[-1, -1] = -100
    return {"input_ids": torch.ones(b, length, dtype=torch.long), "attention_mask": mask, "labels": labels}


def decoder_only_prompt_length(cfg: ExperimentConfig, model_config: Any) -> int:
    """The longest prompt a decoder-only run sees: ``max_source_length`` capped by the positions the model has
    left after the target (as ``recipe.setup.prepare_data`` caps it)."""
    positions = getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", None)
    source = cfg.data.max_source_length
    return min(source, int(positions) - cfg.data.max_target_length) if positions else source


def _autocast(mixed_precision: str) -> contextlib.AbstractContextManager:
    if mixed_precision == "no":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16 if mixed_precision == "bf16" else torch.float16)


def _train_step(
    model: nn.Module, cfg: ExperimentConfig, batch: dict[str, torch.Tensor], foreach: bool, mode: FakeTensorMode
) -> tuple[dict[str, int], int]:
    """A steady-state training step under the tracker; returns the peak's categories and the optimizer state bytes."""
    params = [p for p in model.parameters() if p.requires_grad]
    with mode:
        optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=cfg.train.weight_decay, foreach=foreach)
        for p in params:  # the state a previous step left: AdamW builds it lazily
            p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        fake_batch = {k: mode.from_tensor(v) for k, v in batch.items()}
    state = _nbytes(t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor))
    model.train()
    tracker = _Tracker()
    tracker.track_external(model, optimizer)
    with mode, tracker:
        for i in range(min(cfg.train.gradient_accumulation_steps, 2)):  # the second one runs with gradients live
            if i:
                tracker.reset_mod_stats()
            with _autocast(cfg.train.mixed_precision):
                loss = model(**fake_batch).loss
            loss.backward()
            del loss
        if cfg.train.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.train.max_grad_norm, foreach=foreach)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return tracker.peak(), state


def _eval_step(model: nn.Module, cfg: ExperimentConfig, encoder_decoder: bool, mode: FakeTensorMode) -> dict[str, int]:
    """Prefill of the longest prompt, then one decode step with the KV cache, batch ``eval.batch_size`` x beams."""
    model.eval()
    b = cfg.eval.batch_size * cfg.eval.num_beams
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    prompt = cfg.data.max_source_length if encoder_decoder else decoder_only_prompt_length(cfg, base.config)
    tracker = _Tracker()
    tracker.track_external(model)
    with mode:
        ids = torch.ones(b, prompt, dtype=torch.long)
        mask = torch.ones(b, prompt, dtype=torch.long)
        one = torch.ones(b, 1, dtype=torch.long)
    with mode, tracker, torch.no_grad(), _autocast(cfg.train.mixed_precision):
        if encoder_decoder:
            out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=one, use_cache=True)
            tracker.reset_mod_stats()
            cache, encoded = out.past_key_values, (out.encoder_last_hidden_state,)
            del out
            with mode:  # the encoder's output may be longer than the prompt (prompt tuning's virtual tokens)
                mask = torch.ones(b, encoded[0].shape[1], dtype=torch.long)
            base(
                encoder_outputs=encoded,
                attention_mask=mask,
                decoder_input_ids=one,
                past_key_values=cache,
                use_cache=True,
            )
        else:
            out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
            tracker.reset_mod_stats()
            cache = out.past_key_values
            del out
            past = cache.get_seq_length()
            with mode:
                full_mask = torch.ones(b, past + 1, dtype=torch.long)
            base(input_ids=one, attention_mask=full_mask, past_key_values=cache, use_cache=True, logits_to_keep=1)
    return tracker.peak()


def _largest_block(model: nn.Module, compute: torch.dtype | None) -> int:
    """Bytes of the largest transformer block (``_no_split_modules``) as gathered for compute."""
    names: set[str] = set()
    for module in model.modules():
        names |= set(getattr(module, "_no_split_modules", None) or ())
    sizes = [
        sum(
            p.numel() * (torch.empty((), dtype=compute).element_size() if compute else p.element_size())
            for p in m.parameters()
        )
        for m in model.modules()
        if type(m).__name__ in names
    ]
    return max(sizes, default=0)


def plan_memory(
    cfg: ExperimentConfig,
    world_size: int | None = None,
    *,
    device: str = "cuda",
    gradient_checkpointing: bool | None = None,
    alternatives: bool = False,
    train: bool = True,
    evaluate: bool = True,
) -> MemoryPlan:
    """The per-device peak memory of ``cfg``'s training and evaluation steps, planned on fake weights.

    ``world_size`` defaults to ``launch.num_processes``. ``device`` is the device the plan is for: ``cuda`` (AdamW
    and gradient clipping as on a GPU, with ``foreach`` kernels and their temporaries) or ``cpu``.
    ``gradient_checkpointing`` overrides ``train.gradient_checkpointing``; ``alternatives`` also plans the run with
    gradient checkpointing, for :meth:`MemoryPlan.fits`.
    """
    with warnings.catch_warnings():  # MemTracker's notes on frozen modules' backward hooks: noise for a plan
        warnings.filterwarnings("ignore", message="Module is None")
        warnings.filterwarnings("ignore", message=".*deprecated.*")
        return _plan_memory(cfg, world_size, device, gradient_checkpointing, alternatives, train, evaluate)


def _plan_memory(
    cfg: ExperimentConfig,
    world_size: int | None,
    device: str,
    gradient_checkpointing: bool | None,
    alternatives: bool,
    train: bool,
    evaluate: bool,
) -> MemoryPlan:
    n = cfg.launch.num_processes if world_size is None else world_size
    if n < 1:
        raise PeftbenchError(f"world size must be >= 1, got {n}")
    checkpointing = bool(
        getattr(cfg.train, "gradient_checkpointing", False)
        if gradient_checkpointing is None
        else gradient_checkpointing
    )
    mode = FakeTensorMode()
    model = _skeleton(cfg)
    _to_fake(model, mode)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    enc_dec = is_encoder_decoder(base)
    if checkpointing:
        enable_gradient_checkpointing(model)  # as the run does (methods.core.activations)
    if not enc_dec:
        cfg = dataclasses.replace(
            cfg, data=dataclasses.replace(cfg.data, max_source_length=decoder_only_prompt_length(cfg, base.config))
        )
    params = {id(p): p for p in model.parameters()}.values()
    trainable = _nbytes(p for p in params if p.requires_grad)
    weights = _nbytes(iter(params)) - trainable + _nbytes(model.buffers())
    empty = StepMemory(weights, trainable, 0, 0, 0)
    one = empty
    try:
        if train:
            peak, state = _train_step(model, cfg, train_batch(cfg, enc_dec), device == "cuda", mode)
            one = split_peak(peak, weights, trainable, state)
        evaluation = empty
        if evaluate:
            evaluation = split_peak(_eval_step(model, cfg, enc_dec, mode), weights, trainable, 0)
    except (DataDependentOutputException, DynamicOutputShapeException, UnsupportedFakeTensorException) as exc:
        raise PeftbenchError(
            f"{cfg.method_name} cannot be planned on fake weights: its step reads tensor values ({exc}); measure a "
            "real step instead"
        ) from None
    strategy = strategy_of(cfg, n)
    mp = cfg.train.mixed_precision
    compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mp) if strategy == "fsdp" else None
    block = _largest_block(model, compute)
    full = all(p.requires_grad for p in params)
    s, t = cfg.data.max_source_length, cfg.data.max_target_length
    batch = cfg.train.per_device_batch_size
    plan = MemoryPlan(
        model=cfg.model.name,
        method=cfg.method_name,
        strategy=strategy,
        world_size=n,
        batch_size=batch,
        gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
        train_shape=(batch, s, t) if enc_dec else (batch, s + t),
        eval_shape=(cfg.eval.batch_size * cfg.eval.num_beams, s),
        dtype=cfg.model.dtype,
        mixed_precision=mp,
        gradient_checkpointing=checkpointing,
        parameters=sum(p.numel() for p in params),
        trainable_parameters=sum(p.numel() for p in params if p.requires_grad),
        train=distributed(one, strategy, n, block, block if full else 0),
        eval=distributed(evaluation, "fsdp" if strategy == "fsdp" else "single", n, block, 0),
        block_bytes=block,
        unsharded=one if strategy != "single" else None,
    )
    if alternatives and not checkpointing and train:
        alt = plan_memory(cfg, n, device=device, gradient_checkpointing=True, evaluate=False)
        plan = dataclasses.replace(plan, checkpointed=alt)
    return plan
