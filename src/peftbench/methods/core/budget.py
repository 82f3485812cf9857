"""Parameter-budget matching: pick a method's size so that its trainable parameters land on a budget.

``method.budget`` is a share of the base model's parameters (``"0.1%"``) or an absolute count
(``120000``, ``"1.5M"``, ``"200k"``). For the method's size knob (LoRA's ``r``, an adapter's ``size``, a
prompt's ``num_virtual_tokens``, ...) the allowed value whose trainable count is closest to the budget is
chosen (ties go to the smaller value). Counting uses the model's architecture on the ``meta`` device, so
no weights are loaded: planning for a 3B model costs seconds and no memory.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from torch import nn

from peftbench.config import ModelConfig
from peftbench.errors import PeftbenchError
from peftbench.methods.core.registry import MethodSpec, apply_method, build_method_config, get_method

MAX_MULTIPLE = 1 << 16
"""Largest multiple of the knob's step tried (LoRA: r up to 65536)."""

_COUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmb]?)\s*$", re.IGNORECASE)
_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000, "b": 1_000_000_000}


@dataclass(frozen=True)
class Budget:
    """A parsed budget: a percentage of the base model or an absolute parameter count."""

    text: str
    percent: float | None = None
    count: int | None = None

    def target(self, base_total: int) -> int:
        """The budget in parameters for a base model of ``base_total`` parameters."""
        return self.count if self.count is not None else round(base_total * self.percent / 100)


def parse_budget(value: Any) -> Budget:
    """Reads ``"0.1%"``, ``120000``, ``"1.5M"`` or ``"200k"``; one-line error otherwise."""
    if isinstance(value, bool) or value is None:
        raise PeftbenchError(f"method.budget {value!r}: give a percentage ('0.1%') or a parameter count (120000)")
    if isinstance(value, float):
        raise PeftbenchError(
            f"method.budget {value!r}: write a share as a percentage ('{value:g}%') or give a whole parameter count"
        )
    if isinstance(value, int):
        if value < 1:
            raise PeftbenchError(f"method.budget must be a positive count, got {value}")
        return Budget(str(value), count=value)
    text = str(value).strip()
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            raise PeftbenchError(f"method.budget {text!r} is not a percentage (e.g. 0.1%)") from None
        if not 0 < percent <= 100:
            raise PeftbenchError(f"method.budget {text!r}: a percentage must be in (0, 100]")
        return Budget(text, percent=percent)
    match = _COUNT.match(text)
    if match is None:
        raise PeftbenchError(
            f"method.budget {text!r}: give a percentage ('0.1%') or a parameter count (120000, '1.5M', '200k')"
        )
    count = round(float(match.group(1)) * _SUFFIX[match.group(2).lower()])
    if count < 1:
        raise PeftbenchError(f"method.budget {text!r} is less than one parameter")
    return Budget(text, count=count)


@dataclass(frozen=True)
class BudgetMatch:
    """The size chosen for a budget and what it achieves."""

    method: str
    knob: str
    value: int
    trainable: int
    target: int
    base_total: int
    budget: str

    def as_dict(self) -> dict[str, Any]:
        """For metrics.json."""
        return asdict(self)


def _count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _skeleton(model_cfg: ModelConfig) -> nn.Module:
    """The model's meta-device skeleton, built once per process and model (a sweep counts many methods on one; a
    local model's is built again when its config.json changes): read only, each count works on a copy."""
    config_file = Path(model_cfg.name) / "config.json"
    stamp = hashlib.sha256(config_file.read_bytes()).hexdigest() if config_file.is_file() else None
    return _cached_skeleton(json.dumps(asdict(model_cfg), sort_keys=True), stamp)


@functools.lru_cache(maxsize=8)
def _cached_skeleton(model_key: str, stamp: str | None) -> nn.Module:
    from peftbench.models import model_skeleton  # transformers: only when a model is counted

    return model_skeleton(ModelConfig(**json.loads(model_key)))


class MethodCounter:
    """Trainable parameters of one method on one model, for any option values, without loading weights."""

    def __init__(self, spec: MethodSpec, model_cfg: ModelConfig) -> None:
        self.spec = spec
        self.model_cfg = model_cfg
        self.skeleton = _skeleton(model_cfg)
        self.base_total = sum(p.numel() for p in self.skeleton.parameters())
        reason = spec.supports(self.skeleton.config)
        if reason:
            raise PeftbenchError(f"method {spec.name!r} cannot be used with {model_cfg.name!r}: {reason}")

    def count(self, options: dict[str, Any]) -> int:
        """Trainable parameters with these method options."""
        method_config = build_method_config(self.spec.name, options)
        model = copy.deepcopy(self.skeleton)
        from accelerate import init_empty_weights

        with init_empty_weights(include_buffers=False):
            model = apply_method(self.spec, model, method_config, self.model_cfg.name)
        return _count_trainable(model)


def _closest(count: Callable[[int], int], target: int, monotone: bool) -> int:
    """The multiple ``k >= 1`` whose count is closest to ``target`` (ties: the smaller ``k``)."""
    seen: dict[int, int] = {}

    def c(k: int) -> int:
        if k not in seen:
            seen[k] = count(k)
        return seen[k]

    if monotone:
        if c(1) >= target:
            return 1
        hi = 2
        while c(hi) < target and hi < MAX_MULTIPLE:
            hi = min(hi * 2, MAX_MULTIPLE)
        if c(hi) < target:
            return hi  # the largest allowed size, still under the budget
        lo = hi // 2
        while hi - lo > 1:  # invariant: c(lo) < target <= c(hi)
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if c(mid) >= target else (mid, hi)
        return lo if target - c(lo) <= c(hi) - target else hi
    # Not monotone (LoKr): find where the count stops changing, then try every value up to there.
    limit = 1
    while limit < MAX_MULTIPLE and c(limit) != c(limit * 2):
        limit *= 2
    candidates = range(1, min(limit * 2, MAX_MULTIPLE) + 1)
    return min(candidates, key=lambda k: (abs(c(k) - target), k))


def match_budget(method: str, model_cfg: ModelConfig, options: dict[str, Any], budget: Any) -> BudgetMatch:
    """Chooses the method's size for ``budget`` on ``model_cfg`` (the other options as given)."""
    parse_budget(budget)  # a bad budget fails here, before any model is looked at
    key = json.dumps(options, sort_keys=True, default=str)
    model_key = json.dumps(asdict(model_cfg), sort_keys=True)
    return _match(method, model_key, key, str(budget) if not isinstance(budget, int) else budget)


@functools.lru_cache(maxsize=256)
def _match(method: str, model_key: str, options_key: str, budget: Any) -> BudgetMatch:
    spec = get_method(method)
    parsed = parse_budget(budget)
    knob = spec.size_knob
    if knob is None:
        raise PeftbenchError(f"method {method!r} has a fixed size; method.budget applies only to methods with a size")
    options = json.loads(options_key)
    set_conflicts = [name for name in knob.conflicts if options.get(name) is not None]
    if set_conflicts:
        raise PeftbenchError(f"method.budget sets {method}'s {knob.field}; leave method.{set_conflicts[0]} unset")
    counter = MethodCounter(spec, ModelConfig(**json.loads(model_key)))
    target = parsed.target(counter.base_total)
    step = knob.step(build_method_config(method, {k: v for k, v in options.items() if k != knob.field}))

    def count(k: int) -> int:
        return counter.count({**options, knob.field: k * step})

    k = _closest(count, target, knob.monotone)
    return BudgetMatch(method, knob.field, k * step, count(k), target, counter.base_total, parsed.text)
