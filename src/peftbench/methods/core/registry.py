"""The method registry: what peftbench knows about a method (``MethodSpec``), registration and lookup, and the
helpers methods share to mark what trains. Method modules import from here; ``peftbench.methods`` imports them
all (registration order = table order) and re-exports this module's names."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from importlib.metadata import entry_points
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
    count: Callable[[Any, Any], int] | None = None
    """Optional: the trainable parameters as a function of the model's ``PretrainedConfig`` and the method's
    config (``formula`` as code); ``peftbench check-method`` compares it with the built model's count."""


MERGE_KINDS = ("no", "peft", "in_place", "always")

_REGISTRY: dict[str, MethodSpec] = {}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

PLUGIN_GROUP = "peftbench.methods"
"""Entry-point group of methods from installed packages (value: a module that registers its method on import, a
``MethodSpec``, or a callable returning one)."""
DISABLE_PLUGINS_ENV = "PEFTBENCH_DISABLE_PLUGIN_AUTOLOAD"
"""Set (to anything but 0) to ignore installed plugins' entry points, as pytest's ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``
(``method.module`` still loads): peftbench's own test suite sets it, so that it tests peftbench, not what else is
installed."""
BUILT_IN = "built-in"
_ORIGINS: dict[str, str] = {}
_SOURCE: list[str] = []  # where the method being registered comes from, while a plugin loads
_PLUGINS: dict[str, Any] = {"loaded": False, "error": None}


def register(spec: MethodSpec) -> MethodSpec:
    """Adds a method to the registry; rejects malformed and duplicate names. While a plugin (an entry point or a
    ``method.module``) loads, what is wrong is a one-line ``PeftbenchError`` naming where the method came from."""
    if _SOURCE:
        return _register_plugin(spec, _SOURCE[-1])
    if not _NAME.match(spec.name):
        raise ValueError(f"invalid method name {spec.name!r}: use lowercase letters, digits and '_'")
    if spec.merge not in MERGE_KINDS:
        raise ValueError(f"{spec.name}: merge must be one of {', '.join(MERGE_KINDS)}, got {spec.merge!r}")
    if spec.name in _REGISTRY:
        raise ValueError(f"method {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    # built-in: registered by peftbench's own method modules (not judged by where apply lives: a plugin may reuse one)
    module = sys._getframe(1).f_globals.get("__name__", "?")
    _ORIGINS[spec.name] = BUILT_IN if module.startswith("peftbench.methods.") else f"module {module}"
    return spec


def spec_problem(spec: Any) -> str | None:
    """What makes ``spec`` unusable as a method (None if nothing): the checks a plugin's spec passes on load."""
    if not isinstance(spec, MethodSpec):
        return f"expected a peftbench MethodSpec, got {type(spec).__name__}"
    if not isinstance(spec.name, str) or not _NAME.match(spec.name):
        return f"invalid method name {spec.name!r}: use lowercase letters, digits and '_'"
    if spec.merge not in MERGE_KINDS:
        return f"merge must be one of {', '.join(MERGE_KINDS)}, got {spec.merge!r}"
    if not (isinstance(spec.config_cls, type) and dataclasses.is_dataclass(spec.config_cls)):
        return f"config_cls must be a dataclass, got {spec.config_cls!r}"
    for attr in ("apply", "supports"):
        if not callable(getattr(spec, attr)):
            return f"{attr} must be callable"
    if spec.count is not None and not callable(spec.count):
        return "count must be callable or None"
    if not isinstance(spec.default_learning_rate, int | float) or not spec.default_learning_rate > 0:
        return f"default_learning_rate must be a positive number, got {spec.default_learning_rate!r}"
    try:
        spec.config_cls()
    except Exception as exc:
        return f"its config {spec.config_cls.__name__}() fails with its defaults: {type(exc).__name__}: {exc}"
    names = {f.name for f in fields(spec.config_cls)}
    if spec.size_knob is not None and spec.size_knob.field not in names:
        return f"size_knob field {spec.size_knob.field!r} is not a field of {spec.config_cls.__name__}"
    if "module" in names:
        return "its config may not have a field named 'module' (method.module names the module to import)"
    return None


def _register_plugin(spec: Any, source: str) -> MethodSpec:
    problem = spec_problem(spec)
    if problem:
        raise PeftbenchError(f"{source}: malformed method: {problem}")
    known = _REGISTRY.get(spec.name)
    if known is spec:
        return spec  # the same object again (e.g. a module's entry point and its SPEC)
    if known is not None:
        origin = _ORIGINS.get(spec.name, BUILT_IN)
        what = "the built-in method" if origin == BUILT_IN else f"the method from {origin}"
        raise PeftbenchError(f"{source}: method {spec.name!r} collides with {what} {spec.name!r}; rename it")
    _REGISTRY[spec.name] = spec
    _ORIGINS[spec.name] = source
    return spec


@contextlib.contextmanager
def _loading(source: str) -> Iterator[None]:
    _SOURCE.append(source)
    try:
        yield
    finally:
        _SOURCE.pop()


def method_origin(name: str) -> str:
    """Where a registered method came from: ``built-in``, ``package P (entry point E = V)`` or ``module M``."""
    get_method(name)
    return _ORIGINS.get(name, BUILT_IN)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def load_method_module(module: str) -> None:
    """Imports ``module`` (``method.module``: a file not yet packaged) so that the methods it registers are
    known; a one-line ``PeftbenchError`` when it cannot be imported or registers a malformed method."""
    if not isinstance(module, str) or not re.match(r"^[A-Za-z_][\w.]*$", module):
        raise PeftbenchError(f"method.module must be a dotted module name, got {module!r}")
    if module in sys.modules:
        return
    source = f"module {module}"
    with _loading(source):
        try:
            importlib.import_module(module)
        except PeftbenchError:
            sys.modules.pop(module, None)
            raise
        except Exception as exc:
            sys.modules.pop(module, None)
            raise PeftbenchError(f"method.module {module!r} failed to import: {_first_line(exc)}") from None


def load_plugins() -> None:
    """Registers the methods of installed packages (entry points of :data:`PLUGIN_GROUP`), once; a plugin that
    fails to load or gives a malformed method is a one-line ``PeftbenchError`` naming its package."""
    if _PLUGINS["error"]:
        raise PeftbenchError(_PLUGINS["error"])
    if _PLUGINS["loaded"]:
        return
    _PLUGINS["loaded"] = True
    if os.environ.get(DISABLE_PLUGINS_ENV, "").strip() not in ("", "0"):
        return
    for entry in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        package = f"package {entry.dist.name}" if entry.dist is not None else "an unnamed package"
        source = f"{package} (entry point {entry.name} = {entry.value})"
        try:
            with _loading(source):
                try:
                    before, imported = set(_REGISTRY), entry.module in sys.modules
                    loaded = entry.load()
                    if isinstance(loaded, type(sys)):  # a module: registers its method(s) on import
                        if set(_REGISTRY) == before and not imported:
                            raise PeftbenchError(f"{source}: module {loaded.__name__} registered no method")
                        continue
                    spec = loaded if isinstance(loaded, MethodSpec) else loaded() if callable(loaded) else loaded
                except PeftbenchError:
                    raise
                except Exception as exc:
                    raise PeftbenchError(f"{source} failed to load: {_first_line(exc)}") from None
                register(spec)
        except PeftbenchError as exc:
            _PLUGINS["error"] = str(exc)
            raise


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
    """Looks a method up by name, with a one-line error listing the known ones (installed plugins included)."""
    if name not in _REGISTRY:
        load_plugins()
    if name not in _REGISTRY:
        raise PeftbenchError(f"unknown method {name!r}; known methods: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def all_methods() -> list[MethodSpec]:
    """All registered methods, in registration order (installed plugins after the built-ins)."""
    load_plugins()
    return list(_REGISTRY.values())


def builtin_methods() -> list[MethodSpec]:
    """peftbench's own methods, in registration order: what docs/methods.md and the presets describe, whatever
    plugins are installed."""
    return [spec for name, spec in _REGISTRY.items() if _ORIGINS.get(name, BUILT_IN) == BUILT_IN]


def build_method_config(name: str, values: dict[str, Any] | None = None) -> Any:
    """Builds a method's config dataclass from a plain dict, rejecting unknown keys in one line."""
    values = dict(values or {})
    if values.get("module"):  # method.module: the file that registers the method, imported first
        load_method_module(values["module"])
    values.pop("module", None)
    spec = get_method(name)
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
