"""What a memory plan says (:func:`peftbench.memory.plan.plan_memory` makes one): per-device bytes by category for a
training and a generation step, how they divide over DDP and FSDP devices, whether they fit a GPU and what would.
Arithmetic only: no model, no torch."""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass

from peftbench.errors import PeftbenchError

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
            if distributed(one, "fsdp", n, self.block_bytes, self._block_trainable).total <= gpu_bytes:
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


def distributed(one: StepMemory, strategy: str, n: int, block: int, block_trainable: int) -> StepMemory:
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


def split_peak(peak: dict[str, int], weights: int, trainable: int, state: int) -> StepMemory:
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
