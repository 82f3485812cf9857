"""The method registry: what peftbench knows about a method (``MethodSpec``), registration and lookup, and the
helpers methods share to mark what trains. Method modules import from here; ``peftbench.methods`` imports them
all (registration order = table order) and re-exports this module's names."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Protocol

import torch
from torch import nn

from peftbench.errors import PeftbenchError
from peftbench.methods.core.precision import keep_trainable_fp32


@dataclass(frozen=True)
class SizeKnob:
    """The hyperparameter that sets a method's size, which ``method.budget`` chooses."""

    field: str
    """Name of the config field (e.g. ``r``, ``size``, ``num_virtual_tokens``)."""
    step: Callable[[Any], int] = lambda method_config: 1
    """Allowed values are the positive multiples of this (given the rest of the method's config)."""
    monotone: bool = True
    """True when the trainable count never decreases as the value grows (a bisection finds the best value)."""
    conflicts: tuple[str, ...] = ()
    """Fields that also set the size and so must be left unset when a budget is given."""


class TrainingHooks(Protocol):
    """Per-run state a method keeps outside its weights (e.g. AdaLoRA's rank allocator)."""

    def after_step(self, step: int) -> None:
        """Called after each optimizer step (``step`` counts from 1), before the gradients are cleared."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors to save in a checkpoint so that a resumed run continues exactly."""

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restores what ``state_dict`` returned."""


@dataclass(frozen=True)
class Anatomy:
    """How a method is built, with the source it follows (the second table of docs/methods.md)."""

    placement: str
    """What the method reads and where its output goes."""
    init: str
    """How its trained parameters start."""
    activation: str
    """Its non-linearity, or "—"."""
    layer_norms: str
    """Whether the model's layer norms train: starts with "trained" or "frozen" (checked against the model by
    tests/methods/test_methods_table.py), then any option that changes it."""
    source: str
    """The paper section and reference code it follows, and where peftbench differs from the study's code."""


@dataclass(frozen=True)
class MethodSpec:
    """Everything the rest of peftbench knows about one PEFT method."""

    name: str
    """Registry key used in configs (``method.name``): lowercase letters, digits and ``_``."""
    config_cls: type
    """Dataclass of the method's hyperparameters (every field documented where declared)."""
    apply: Callable[[nn.Module, Any], nn.Module]
    """Adds the method to a loaded model and freezes everything that is not the method's."""
    summary: str
    """Where the method acts, in a few words (shown by ``peftbench methods``)."""
    paper: str
    """The source paper."""
    default_learning_rate: float
    """Learning rate used when ``train.learning_rate`` is not set."""
    lr_scheduler: str = "linear"
    """Default schedule: the study uses linear decay for PEFT methods, constant for full fine-tuning."""
    warmup_ratio: float = 0.03
    """Default warm-up fraction of the optimizer steps (the study: 3% for PEFT, 0 for full)."""
    supports: Callable[[Any], str | None] = lambda model_config: None
    """Given a transformers ``PretrainedConfig``, ``None`` if supported, else a one-line reason."""
    count_note: str = ""
    """How the trainable count is to be read (e.g. whether a reparameterisation MLP is counted)."""
    size_knob: SizeKnob | None = None
    """The hyperparameter ``method.budget`` sets; None for methods of fixed size (IA3, BitFit, full, ...)."""
    formula: str = ""
    """Trainable parameters as a formula (for docs/methods.md)."""
    training_hooks: Callable[[nn.Module, int], TrainingHooks] | None = None
    """Given the model and the run's optimizer steps, the method's per-step hooks (most methods: None)."""
    anatomy: Anatomy | None = None
    """Placement, initialisation, activation, layer norms and source (docs/methods.md)."""
    revision: int = 0
    """Raised when what the method builds from the same options changes (its defaults, placement or
    initialisation): it enters the run's config hash, so runs made by an earlier version get a new run directory
    instead of being taken as finished or resumed. (1: placements, inits and layer norms of 2026-12-01; 2: the
    defaults of 2026-12-06, issue 26.)"""
    merge: str = "no"
    """How the trained weights fold into the base model (``peftbench export --merge``): ``"no"`` (the method adds
    modules or virtual tokens of its own: exported as an adapter only), ``"peft"`` (peft's ``merge_and_unload``),
    ``"in_place"`` (the trained tensors already sit in the base's own modules, as BitFit's biases: the model is saved
    as it is, where its architecture has a place for them) or ``"always"`` (full fine-tuning: the trained model is a
    base model, saved plain with or without ``--merge``)."""
    fp32_trainable: bool = True
    """Keep the trainable parameters in fp32 over a bf16/fp16 base (``build_model`` upcasts them). False only for
    full fine-tuning, which trains the base weights themselves: in a half-precision base it needs fp32 master
    weights from elsewhere (a float32 model with mixed precision, or DeepSpeed)."""


MERGE_KINDS = ("no", "peft", "in_place", "always")

_REGISTRY: dict[str, MethodSpec] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def register(spec: MethodSpec) -> MethodSpec:
    """Adds a method to the registry; rejects malformed and duplicate names."""
    if not _NAME.match(spec.name):
        raise ValueError(f"invalid method name {spec.name!r}: use lowercase letters, digits and '_'")
    if spec.merge not in MERGE_KINDS:
        raise ValueError(f"{spec.name}: merge must be one of {', '.join(MERGE_KINDS)}, got {spec.merge!r}")
    if spec.name in _REGISTRY:
        raise ValueError(f"method {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def apply_method(spec: MethodSpec, model: nn.Module, options: Any, model_name: str) -> nn.Module:
    """``spec.apply`` as every caller needs it (runs, budgets, memory plans): refused in one line where the method
    does not support the architecture or its code rejects the model, and the trainable weights upcast to fp32 where
    the spec says so (:func:`~peftbench.methods.core.precision.keep_trainable_fp32`)."""
    reason = spec.supports(model.config)
    if reason:
        raise PeftbenchError(f"method {spec.name!r} cannot be used with {model_name!r}: {reason}")
    try:
        model = spec.apply(model, options)
    except (ValueError, TypeError, NotImplementedError) as exc:  # e.g. peft refusing an architecture
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PeftbenchError(f"method {spec.name!r} cannot be applied to {model_name!r}: {first}") from None
    if spec.fp32_trainable:
        keep_trainable_fp32(model)
    return model


def get_method(name: str) -> MethodSpec:
    """Looks a method up by name, with a one-line error listing the known ones."""
    if name not in _REGISTRY:
        raise PeftbenchError(f"unknown method {name!r}; known methods: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def all_methods() -> list[MethodSpec]:
    """All registered methods, in registration order."""
    return list(_REGISTRY.values())


def build_method_config(name: str, values: dict[str, Any] | None = None) -> Any:
    """Builds a method's config dataclass from a plain dict, rejecting unknown keys in one line."""
    spec = get_method(name)
    values = dict(values or {})
    known = {f.name for f in fields(spec.config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PeftbenchError(
            f"method {name!r} has no option(s) {', '.join(unknown)}; its options are: {', '.join(sorted(known))}"
        )
    try:
        return spec.config_cls(**values)
    except (TypeError, ValueError) as exc:
        raise PeftbenchError(f"bad option for method {name!r}: {exc}") from None


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters that train (``requires_grad``), by name; tied parameters appear once."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def freeze_all(model: nn.Module) -> None:
    """Sets ``requires_grad=False`` on every parameter of ``model``."""
    for p in model.parameters():
        p.requires_grad_(False)


def is_layer_norm(module: nn.Module) -> bool:
    """True for the model's normalisation layers: ``nn.LayerNorm`` (GPT-2), T5's ``T5LayerNorm``, LLaMA's
    ``LlamaRMSNorm`` and the like (Qwen3's query/key norms inside attention included)."""
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def unfreeze_layer_norms(model: nn.Module) -> int:
    """Trains every parameter of the model's layer norms (gains, and biases where they have them); returns how
    many parameters that is. Houlsby et al. (Fig. 2) and Compacter train them next to their adapters."""
    count = 0
    for module in model.modules():
        if is_layer_norm(module):
            for p in module.parameters(recurse=False):
                p.requires_grad_(True)
                count += p.numel()
    return count
