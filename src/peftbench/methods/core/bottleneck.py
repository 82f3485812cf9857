"""What the bottleneck-adapter methods share (Houlsby, Pfeiffer, parallel adapters, Compacter): their options'
checks, the bottleneck module, where an adapter goes in each architecture, and its insertion as a forward hook.

An adapter is ``A(x) = x + W_up f(W_down x + b_down) + b_up`` with ``W_down`` mapping the hidden size ``d``
to a bottleneck ``m`` and ``W_up`` back; each has ``2·d·m + d + m`` parameters (``BottleneckAdapter``).

Each adapter is a child ``adapter`` of the module whose output it reads and runs in a forward hook on that
module (``insert_adapters``); the base modules and their weights are left as they were. Each adapter lives on
the device of the layer it follows (``site_weight``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from peftbench.errors import PeftbenchError
from peftbench.methods.core.precision import trainable_dtype
from peftbench.methods.core.registry import SizeKnob, freeze_all


def _gelu_tanh() -> nn.Module:
    return nn.GELU(approximate="tanh")


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "gelu_new": _gelu_tanh,  # the tanh approximation (transformers' "gelu_new"; Compacter's code uses it)
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "tanh": nn.Tanh,
}
PLACEMENTS = ("attention", "feed_forward", "both")
INITS = {
    "houlsby": "both projections ~ normal(0, std) truncated at ±2·std (std 1e-2), biases 0 (Houlsby et al.)",
    "bert": "both projections ~ normal(0, std) (std 0.02), biases 0 (adapter-hub's default; the study's code)",
    "lora": "down ~ Kaiming-uniform (a = √5), up = 0, biases 0: starts as the identity (He et al.'s recipe)",
}
_DEFAULT_STD = {"houlsby": 1e-2, "bert": 0.02}


def check_common(size: int | None, reduction_factor: int | None, non_linearity: str, placement: str | None) -> None:
    """Validates the options every adapter flavour shares (raises ValueError)."""
    for name, value in (("size", size), ("reduction_factor", reduction_factor)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"adapter {name} must be a positive integer, got {value!r}")
    if size is not None and reduction_factor is not None:
        raise ValueError("set the adapter's size or its reduction_factor, not both")
    if non_linearity not in ACTIVATIONS:
        raise ValueError(f"unknown adapter non_linearity {non_linearity!r}; use one of {', '.join(ACTIVATIONS)}")
    if placement is not None and placement not in PLACEMENTS:
        raise ValueError(f"unknown adapter placement {placement!r}; use one of {', '.join(PLACEMENTS)}")


def check_init(init: str, init_std: float | None) -> None:
    """Validates an initialisation scheme and its standard deviation (raises ValueError)."""
    if init not in INITS:
        raise ValueError(f"unknown adapter init {init!r}; use one of {', '.join(INITS)}")
    if init_std is not None and (
        isinstance(init_std, bool) or not isinstance(init_std, (int, float)) or not 0 < init_std < math.inf
    ):
        raise ValueError(f"adapter init_std must be a positive number, got {init_std!r}")


def bottleneck_size(
    size: int | None,
    reduction_factor: int | None,
    d: int,
    default: int | None = None,
    default_reduction: int | None = None,
) -> int:
    """The bottleneck ``m``: ``size``, else ``d // reduction_factor``, else the flavour's default (a size, or a
    reduction factor)."""
    if size is not None:
        return size
    factor = reduction_factor if reduction_factor is not None else default_reduction
    if factor is None:
        assert default is not None
        return default
    if factor > d:
        raise PeftbenchError(f"adapter reduction_factor {factor} exceeds the hidden size {d}")
    return d // factor


def adapter_parameter_count(d: int, m: int) -> int:
    """Parameters of one adapter on hidden size ``d`` with bottleneck ``m`` (Houlsby et al. 2019)."""
    return 2 * d * m + d + m


def init_projections(down: nn.Linear, up: nn.Linear, init: str, init_std: float | None) -> None:
    """Initialises a bottleneck's down and up projections in place by the scheme ``init`` (see ``INITS``)."""
    with torch.no_grad():
        if init == "lora":
            nn.init.kaiming_uniform_(down.weight, a=math.sqrt(5))
            nn.init.zeros_(up.weight)
        else:
            std = init_std if init_std is not None else _DEFAULT_STD[init]
            for layer in (down, up):
                if init == "houlsby":
                    nn.init.trunc_normal_(layer.weight, mean=0.0, std=std, a=-2 * std, b=2 * std)
                else:
                    nn.init.normal_(layer.weight, mean=0.0, std=std)
        nn.init.zeros_(down.bias)
        nn.init.zeros_(up.bias)


class BottleneckAdapter(nn.Module):
    """``x + up(act(down(x)))``; with ``residual=False`` only the branch ``up(act(down(x)))`` (parallel adapters).

    Its weights are fp32 next to a half-precision base (``dtype`` is the base's): it computes in fp32 and returns
    ``x + branch`` in ``x``'s dtype, the branch alone in its own.
    """

    def __init__(
        self,
        d: int,
        m: int,
        non_linearity: str = "gelu",
        init: str = "houlsby",
        init_std: float | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        residual: bool = True,
    ) -> None:
        super().__init__()
        device = device if device is not None else "cpu"
        dtype = trainable_dtype(dtype) if dtype is not None else None
        self.residual = residual
        # skip_init: no default (kaiming) init that would draw from the RNG only to be overwritten.
        self.down = nn.utils.skip_init(nn.Linear, d, m, dtype=dtype, device=device)
        self.act = ACTIVATIONS[non_linearity]()
        self.up = nn.utils.skip_init(nn.Linear, m, d, dtype=dtype, device=device)
        init_projections(self.down, self.up, init, init_std)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = h.to(self.down.weight.dtype)
        branch = self.up(self.act(self.down(x)))
        return (x + branch).to(h.dtype) if self.residual else branch


def _run_adapter(module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> torch.Tensor | tuple:
    """Forward hook: passes the module's output (the first element of a tuple) through its ``adapter``."""
    if isinstance(output, tuple):
        return (module.adapter(output[0]), *output[1:])
    return module.adapter(output)


def output_dim(module: nn.Module) -> int:
    """The output width of a linear-like module (nn.Linear or transformers' Conv1D)."""
    if isinstance(module, nn.Linear):
        return module.out_features
    if hasattr(module, "nf"):  # transformers' Conv1D (GPT-2), weight stored as (in, out)
        return int(module.nf)
    raise PeftbenchError(f"cannot insert an adapter after a {type(module).__name__}: unknown output size")


T = TypeVar("T")

# Where an adapter reads, per architecture: functions from a model to its (name, module) sites, in layer order.
Sites = Callable[[nn.Module], list[tuple[str, nn.Module]]]


def children_of(class_suffix: str, child: str) -> Sites:
    """The ``child`` of every module whose class name ends in ``class_suffix``."""

    def sites(model: nn.Module) -> list[tuple[str, nn.Module]]:
        return [
            (f"{name}.{child}", getattr(module, child))
            for name, module in model.named_modules()
            if type(module).__name__.endswith(class_suffix)
        ]

    return sites


def modules_of_class(class_suffix: str) -> Sites:
    """Every module whose class name ends in ``class_suffix``."""

    def sites(model: nn.Module) -> list[tuple[str, nn.Module]]:
        return [(n, m) for n, m in model.named_modules() if type(m).__name__.endswith(class_suffix)]

    return sites


def modules_ending(suffix: str) -> Sites:
    """Every module whose name ends in ``suffix``."""

    def sites(model: nn.Module) -> list[tuple[str, nn.Module]]:
        return [(n, m) for n, m in model.named_modules() if n.endswith(suffix)]

    return sites


T5_TYPES = ("t5", "mt5", "umt5")
LLAMA_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def by_family(t5: T, llama: T, gpt2: T) -> dict[str, T]:
    """A per-model_type table from one entry per architecture family (T5, LLaMA-like, GPT-2)."""
    return {**dict.fromkeys(T5_TYPES, t5), **dict.fromkeys(LLAMA_TYPES, llama), "gpt2": gpt2}


def supports_for(name: str, table: dict) -> Callable:
    """A ``MethodSpec.supports`` for the adapter methods: the model types ``table`` knows."""

    def supports(model_config) -> str | None:
        model_type = getattr(model_config, "model_type", None)
        if model_type in table:
            return None
        return f"{name} supports {', '.join(table)}; not {model_type}"

    return supports


def hidden_size(model: nn.Module) -> int:
    """The model's hidden width (d_model / hidden_size / n_embd)."""
    config = model.config
    for key in ("d_model", "hidden_size", "n_embd"):
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    raise PeftbenchError(f"cannot find the hidden size of a {config.model_type} model")


def select_sites(model: nn.Module, name: str, sites: list[Sites], attr: str) -> list[tuple[str, nn.Module]]:
    """Freezes ``model`` and returns the modules ``sites`` select; one-line errors for no match or a second
    apply (a module that already has ``attr``)."""
    freeze_all(model)
    targets = [site for find in sites for site in find(model)]
    if not targets:
        raise PeftbenchError(f"{name}: found no place for an adapter in this {model.config.model_type} model")
    for module_name, module in targets:
        if hasattr(module, attr):
            raise PeftbenchError(f"{name}: {module_name} already has an adapter (apply called twice?)")
    return targets


def placement_sites(model: nn.Module, name: str, placement: str, table: dict[str, tuple[Sites, Sites]]) -> list[Sites]:
    """The site finders of ``placement`` for this model's architecture (one-line error for an unknown one)."""
    reason = supports_for(name, table)(getattr(model, "config", None))
    if reason is not None:
        raise PeftbenchError(reason)
    attention, feed_forward = table[model.config.model_type]
    return {"attention": [attention], "feed_forward": [feed_forward], "both": [attention, feed_forward]}[placement]


def insert_adapters(
    model: nn.Module, name: str, sites: list[Sites], make: Callable[[torch.Tensor], nn.Module]
) -> nn.Module:
    """Freezes ``model`` and attaches ``make(weight)`` as ``adapter`` to every site (``weight``: see ``site_weight``),
    run on the site's output."""
    for site_name, module in select_sites(model, name, sites, "adapter"):
        module.adapter = make(site_weight(model, site_name, module))
        module.register_forward_hook(_run_adapter)
    return model


def site_weight(model: nn.Module, name: str, module: nn.Module) -> torch.Tensor:
    """A base weight beside a site, whose device (and, through ``trainable_dtype``, dtype) the adapter takes: the
    site's own first parameter, else its parent's (dropout modules have none). Per site, so that a model split
    across devices gets each adapter on its layer's device."""
    param = next(module.parameters(), None)
    if param is None:
        param = next(model.get_submodule(name.rpartition(".")[0]).parameters())
    return param


# The size knob of the adapters whose bottleneck is ``size`` (or ``reduction_factor``).
SIZE_KNOB = SizeKnob("size", conflicts=("reduction_factor",))
