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
import math
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
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
from peftbench.methods import apply_method, get_method
from peftbench.methods.core.activations import enable_gradient_checkpointing
from peftbench.models import is_encoder_decoder, model_skeleton

GiB = 2**30
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_bytes(text: str) -> int:
    """``'80GiB'``, ``'80 GB'``, ``'81920MiB'``, ``'80G'`` (binary), or a plain byte count -> bytes; one-line error."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS or float(match.group(1)) <= 0:
        raise PeftbenchError(f"cannot read a memory size from {text!r}: use e.g. 80GiB, 40GB or 81920MiB")
    return int(float(match.group(1)) * _UNITS[unit])


def gib(n: int | float) -> str:
    """Bytes as GiB with two decimals (MiB with one below a GiB)."""
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / 2**20:.1f} MiB"


@dataclass(frozen=True)
class StepMemory:
    """What is live on one device at the peak of a step, in bytes, by category (they sum to ``total``)."""

    weights: int
    """Frozen parameters and buffers (FSDP: this device's shards plus one gathered block)."""
    trainable: int
    """Trainable parameters (fp32 over a half-precision base; FSDP: this device's shards)."""
    gradients: int
    """Gradients of the trainable parameters live at the peak (DDP: plus its gradient buckets)."""
    optimizer: int
    """AdamW state (exp_avg, exp_avg_sq, step) of the trainable parameters."""
    activations: int
    """Activations saved for backward, the KV cache when generating, and temporaries (backward, optimizer step)."""

    @property
    def total(self) -> int:
        """The peak, in bytes."""
        return self.weights + self.trainable + self.gradients + self.optimizer + self.activations


@dataclass(frozen=True)
class MemoryPlan:
    """The planned per-device peak memory of a run's training and evaluation (``plan_memory``)."""

    model: str
    method: str
    strategy: str
    """single, ddp or fsdp (FSDP / DeepSpeed ZeRO-3)."""
    world_size: int
    batch_size: int
    gradient_accumulation_steps: int
    train_shape: tuple[int, ...]
    """(batch, prompt, target) of an encoder-decoder model; (batch, prompt + target) of a decoder-only one."""
    eval_shape: tuple[int, int]
    """(batch x beams, longest prompt) of the generation step."""
    dtype: str
    mixed_precision: str
    gradient_checkpointing: bool
    parameters: int
    trainable_parameters: int
    train: StepMemory
    eval: StepMemory
    block_bytes: int = 0
    """Bytes of the largest transformer block's weights as computed (the unit FSDP gathers at a time)."""
    unsharded: StepMemory | None = None
    """The one-device figures the distributed ones derive from (None for a single device)."""
    checkpointed: MemoryPlan | None = None
    """The same run with gradient checkpointing (``plan_memory(..., alternatives=True)``), for :meth:`fits`."""

    @property
    def train_peak_bytes(self) -> int:
        """Per-device peak of a training step, in bytes: what the preflight compares with a GPU's memory."""
        return self.train.total

    @property
    def eval_peak_bytes(self) -> int:
        """Per-device peak of a generation step, in bytes."""
        return self.eval.total

    @property
    def peak_bytes(self) -> int:
        """The larger of the two."""
        return max(self.train_peak_bytes, self.eval_peak_bytes)

    def fits(self, gpu_bytes: int) -> str | None:
        """None when training and evaluation fit in ``gpu_bytes`` per device; otherwise one line saying by how much
        it does not and what would fit (a smaller batch with matching accumulation, gradient checkpointing, FSDP)."""
        if self.peak_bytes <= gpu_bytes:
            return None
        what = "training" if self.train_peak_bytes >= self.eval_peak_bytes else "evaluation"
        head = f"{what} needs {gib(self.peak_bytes)} per device, more than {gib(gpu_bytes)}"
        if self.eval_peak_bytes > gpu_bytes >= self.train_peak_bytes:
            per = self.eval.activations / max(self.eval_shape[0], 1)
            fixed = self.eval.total - self.eval.activations
            batch = int((gpu_bytes - fixed) // per) if per and gpu_bytes > fixed else 0
            return head + (f"; would fit: eval.batch_size={batch}" if batch >= 1 else "; no eval batch size fits")
        options = [o for o in (self._smaller_batch(gpu_bytes), self._checkpointing(gpu_bytes)) if o]
        options += [o for o in [self._fsdp(gpu_bytes)] if o]
        return head + ("; would fit: " + ", or ".join(options) if options else "; nothing planned here fits")

    def _smaller_batch(self, gpu_bytes: int) -> str | None:
        """The largest per-device batch that fits (activations scale with the batch), with the accumulation that
        keeps the global batch."""
        fixed = self.train.total - self.train.activations
        per = self.train.activations / self.batch_size
        for b in range(self.batch_size - 1, 0, -1):
            if fixed + per * b <= gpu_bytes:
                accumulation = math.ceil(self.batch_size * self.gradient_accumulation_steps / b)
                return f"train.per_device_batch_size={b} train.gradient_accumulation_steps={accumulation}"
        return None

    def _checkpointing(self, gpu_bytes: int) -> str | None:
        alt = self.checkpointed
        if self.gradient_checkpointing or alt is None or alt.train_peak_bytes > gpu_bytes:
            return None
        return f"train.gradient_checkpointing=true ({gib(alt.train_peak_bytes)})"

    def _fsdp(self, gpu_bytes: int) -> str | None:
        one = self.unsharded or self.train
        for n in (2, 4, 8, 16, 32, 64):
            if n <= self.world_size and self.strategy == "fsdp":
                continue
            if _distributed(one, "fsdp", n, self.block_bytes, self._block_trainable).total <= gpu_bytes:
                fsdp = "launch.accelerate_config=configs/accelerate/fsdp.yaml"
                return f"FSDP over {n} GPUs ({fsdp} launch.num_processes={n})"
        return None

    @property
    def _block_trainable(self) -> int:
        return self.block_bytes if self.trainable_parameters == self.parameters else 0

    def table(self) -> str:
        """The plan as a readable table (GiB per device; MiB when the peak is under one GiB)."""
        rows = [
            ("weights (frozen)", self.train.weights, self.eval.weights),
            ("trainable weights", self.train.trainable, self.eval.trainable),
            ("gradients", self.train.gradients, self.eval.gradients),
            ("optimizer state", self.train.optimizer, self.eval.optimizer),
            ("activations + temporaries", self.train.activations, self.eval.activations),
            ("peak", self.train_peak_bytes, self.eval_peak_bytes),
        ]
        where = "one device" if self.strategy == "single" else f"{self.strategy.upper()} over {self.world_size} devices"
        shape = "x".join(map(str, self.train_shape))
        lines = [
            f"memory plan: {self.model}, method {self.method}, {where} (per device)",
            f"  train batch {shape} x {self.gradient_accumulation_steps} accumulation, dtype {self.dtype}, mixed "
            f"precision {self.mixed_precision}, gradient checkpointing {'on' if self.gradient_checkpointing else 'off'}"
            "",
            f"  eval batch {'x'.join(map(str, self.eval_shape))} (prefill + one decode step)",
            f"  parameters {self.parameters:,}, trainable {self.trainable_parameters:,}",
            "",
            f"  {'':<27}{'train':>12}{'eval':>12}",
        ]
        scale, unit = (GiB, "GiB") if self.peak_bytes >= GiB else (2**20, "MiB")
        lines += [f"  {name:<27}{t / scale:>8.2f} {unit}{e / scale:>8.2f} {unit}" for name, t, e in rows]
        alt = self.checkpointed
        if alt is not None and not self.gradient_checkpointing:
            saved = self.train.activations - alt.train.activations
            lines.append(
                f"  with train.gradient_checkpointing=true: train peak {gib(alt.train_peak_bytes)} (activations "
                f"{gib(alt.train.activations)}, {gib(saved)} less)"
            )
        return "\n".join(lines)


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


def _distributed(one: StepMemory, strategy: str, n: int, block: int, block_trainable: int) -> StepMemory:
    """Per-device figures of ``n`` devices from one device's: DDP keeps a full replica and adds its gradient
    buckets (a flat copy of the gradients: accelerate's default ``gradient_as_bucket_view=False``); FSDP divides
    parameters, gradients and optimizer state by ``n`` and adds one gathered block (and that block's unsharded
    gradient in backward)."""
    if strategy == "ddp" and n > 1:
        return dataclasses.replace(one, gradients=one.gradients + one.trainable)
    if strategy == "fsdp" and n > 1:
        return StepMemory(
            weights=math.ceil(one.weights / n) + block,
            trainable=math.ceil(one.trainable / n),
            gradients=math.ceil(one.gradients / n) + (block_trainable if one.gradients else 0),
            optimizer=math.ceil(one.optimizer / n),
            activations=one.activations,
        )
    return one


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
            one = _split(peak, weights, trainable, state)
        evaluation = empty
        if evaluate:
            evaluation = _split(_eval_step(model, cfg, enc_dec, mode), weights, trainable, 0)
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
        train=_distributed(one, strategy, n, block, block if full else 0),
        eval=_distributed(evaluation, "fsdp" if strategy == "fsdp" else "single", n, block, 0),
        block_bytes=block,
        unsharded=one if strategy != "single" else None,
    )
    if alternatives and not checkpointing and train:
        alt = plan_memory(cfg, n, device=device, gradient_checkpointing=True, evaluate=False)
        plan = dataclasses.replace(plan, checkpointed=alt)
    return plan


def _split(peak: dict[str, int], weights: int, trainable: int, state: int) -> StepMemory:
    """The tracker's peak categories as the plan's: parameters split into frozen and trainable by their own sizes,
    optimizer temporaries (allocated inside the step, counted as Optstate by the tracker) moved to temporaries."""
    total = peak.get("Total", 0)
    if not total:
        return StepMemory(weights, trainable, 0, 0, 0)
    gradients = peak.get("Gradient", 0)
    optimizer = min(state, peak.get("Optstate", 0))
    return StepMemory(
        weights, trainable, gradients, optimizer, max(0, total - weights - trainable - gradients - optimizer)
    )
