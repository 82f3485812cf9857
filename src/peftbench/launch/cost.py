"""``peftbench methods --cost --model NAME``: what each method's preset costs on a model, before anything runs.

Per method, with the preset's batch shape, precision and launch (``--mode``, default ``full``: the study's): the
trainable parameters and their share of the base, the AdamW state they need, the bytes a resumable checkpoint
holds (trainable weights and optimizer state; the base is never saved unless the method trains it), and the
planned per-device peak of a training step and of a generation step (:func:`peftbench.memory.plan.plan_memory`,
on fake weights: no GPU, no download).
"""

from __future__ import annotations

from dataclasses import dataclass

from tqdm.auto import tqdm

from peftbench.errors import PeftbenchError
from peftbench.launch.presets import available_presets, preset_config
from peftbench.memory.figures import MemoryPlan
from peftbench.memory.plan import plan_memory
from peftbench.methods import all_methods, method_origin


@dataclass(frozen=True)
class MethodCost:
    """One row of the cost table."""

    method: str
    trainable: int
    base: int
    optimizer_bytes: int
    """AdamW's two moments (and step) for every trainable parameter, summed over devices."""
    checkpoint_bytes: int
    """Trainable weights plus optimizer state: what a resumable checkpoint holds, summed over devices."""
    plan: MemoryPlan

    @property
    def trainable_percent(self) -> float:
        return 100 * self.trainable / self.base if self.base else 0.0


def _size(n: int) -> str:
    """Bytes in GiB, or MiB below one GiB (tiny models)."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def method_cost(method: str, model_name: str, mode: str = "full") -> MethodCost:
    """The cost of ``method``'s preset on ``model_name``."""
    cfg = preset_config(method, mode, [f"model.name={model_name}"])
    plan = plan_memory(cfg)
    one = plan.unsharded or plan.train  # one replica's figures (the distributed ones divide or add to them)
    base = plan.parameters - plan.trainable_parameters if method != "full" else plan.parameters
    return MethodCost(method, plan.trainable_parameters, base, one.optimizer, one.trainable + one.optimizer, plan)


def cost_table(model_name: str, mode: str = "full", progress: bool = True) -> str:
    """The table, one line per method with a preset (registry order), then the plugins' methods (whose preset is
    the study's shared settings, ``preset_dict``)."""
    presets = set(available_presets())
    methods = [m.name for m in all_methods() if m.name in presets or method_origin(m.name) != "built-in"]
    rows = []
    for method in tqdm(methods, desc="planning", unit="method", disable=not progress):
        try:
            c = method_cost(method, model_name, mode)
        except PeftbenchError as exc:
            if "cannot load model" in str(exc):
                raise
            rows.append((method, "-", "-", "-", "-", "-", "-", str(exc).split(": ", 1)[-1]))
            continue
        p = c.plan
        where = "1 device" if p.strategy == "single" else f"{p.strategy.upper()} x{p.world_size}"
        sizes = (c.optimizer_bytes, c.checkpoint_bytes, p.train_peak_bytes, p.eval_peak_bytes)
        rows.append((method, f"{c.trainable:,}", f"{c.trainable_percent:.3f}%", *map(_size, sizes), where))
    head = ("method", "trainable", "% of base", "optimizer", "checkpoint", "train peak", "eval peak", "per device of")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = [
        f"cost of each method's {mode} preset on {model_name} (memory planned per device, `peftbench plan`):",
        "",
        "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip(),
    ]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)
