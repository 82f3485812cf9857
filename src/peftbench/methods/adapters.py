"""Bottleneck adapters: ``h' = h + W_up f(W_down h + b_down) + b_up``, inserted after sub-layer outputs.

``W_down`` maps the hidden size ``d`` to a bottleneck ``m``, ``W_up`` maps back and starts at zero, so the
adapted model computes exactly the base model at the start; each adapter has ``2·d·m + d + m``
parameters. Houlsby placement puts one after the self-attention and one after the feed-forward output
projection of every layer (T5 cross-attention gets none); Pfeiffer placement only after the feed-forward.
Written here because the ``adapters`` library pins an older transformers and peft has no such method.

Each adapter is attached as a child ``adapter`` of the output projection it follows (so its parameter
names read ``...o_proj.adapter.down.weight``) and runs in a forward hook on that projection; the base
modules, their parameter names and their weights are left as they were.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from peftbench.errors import PeftbenchError
from peftbench.methods import MethodSpec, SizeKnob, freeze_all, register
from peftbench.methods.precision import trainable_dtype

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "tanh": nn.Tanh,
}
PLACEMENTS = ("attention", "feed_forward", "both")

# model_type -> (suffix of the self-attention output projection, suffix of the feed-forward output one).
_T5 = (".SelfAttention.o", ".DenseReluDense.wo")
_LLAMA = (".self_attn.o_proj", ".mlp.down_proj")
OUTPUT_PROJECTIONS: dict[str, tuple[str, str]] = {
    "t5": _T5,
    "mt5": _T5,
    "umt5": _T5,
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gpt2": (".attn.c_proj", ".mlp.c_proj"),
}


def check_common(size: int | None, reduction_factor: int | None, non_linearity: str, placement: str) -> None:
    """Validates the options every adapter flavour shares (raises ValueError)."""
    for name, value in (("size", size), ("reduction_factor", reduction_factor)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"adapter {name} must be a positive integer, got {value!r}")
    if non_linearity not in ACTIVATIONS:
        raise ValueError(f"unknown adapter non_linearity {non_linearity!r}; use one of {', '.join(ACTIVATIONS)}")
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown adapter placement {placement!r}; use one of {', '.join(PLACEMENTS)}")


def bottleneck_size(size: int | None, reduction_factor: int | None, d: int, default: int) -> int:
    """The bottleneck ``m``: ``d // reduction_factor`` when that is set, else ``size``, else ``default``."""
    if reduction_factor is not None:
        if reduction_factor > d:
            raise PeftbenchError(f"adapter reduction_factor {reduction_factor} exceeds the hidden size {d}")
        return d // reduction_factor
    return size if size is not None else default


@dataclass
class AdapterConfig:
    """Hyperparameters of bottleneck adapters."""

    size: int = 64
    """Bottleneck dimension ``m`` of every adapter (the study sweeps 8 to 512)."""
    reduction_factor: int | None = None
    """When set, the bottleneck is hidden_size // reduction_factor instead of ``size``."""
    placement: str = "both"
    """After which sub-layers: attention, feed_forward or both (Houlsby: both; Pfeiffer: feed_forward)."""
    non_linearity: str = "relu"
    """Activation between the down and up projections: relu, gelu, silu (= swish) or tanh."""
    init_std: float = 1e-2
    """Standard deviation of the normal initialisation of the down projection (the up one starts at 0)."""

    def __post_init__(self) -> None:
        check_common(self.size, self.reduction_factor, self.non_linearity, self.placement)
        if (
            isinstance(self.init_std, bool)
            or not isinstance(self.init_std, (int, float))
            or not 0 < self.init_std < math.inf
        ):
            raise ValueError(f"adapter init_std must be a positive number, got {self.init_std!r}")


@dataclass
class PfeifferConfig(AdapterConfig):
    """Hyperparameters of Pfeiffer adapters (bottleneck adapters after the feed-forward block only)."""

    placement: str = "feed_forward"
    """After which sub-layers: attention, feed_forward or both."""


def adapter_parameter_count(d: int, m: int) -> int:
    """Parameters of one adapter on hidden size ``d`` with bottleneck ``m`` (Houlsby et al. 2019)."""
    return 2 * d * m + d + m


class BottleneckAdapter(nn.Module):
    """``h + up(act(down(h)))``; ``up`` is zero at init, so the adapter starts as the identity.

    With ``residual=False`` it returns only the branch, ``up(act(down(h)))`` (for parallel adapters), in the
    adapter's own dtype. Its weights are fp32 next to a half-precision base (``dtype`` is the base's): the
    adapter computes in fp32 and returns ``h + branch`` in ``h``'s dtype.
    """

    def __init__(
        self,
        d: int,
        m: int,
        non_linearity: str = "relu",
        init_std: float = 1e-2,
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
        with torch.no_grad():
            nn.init.normal_(self.down.weight, mean=0.0, std=init_std)
            nn.init.zeros_(self.down.bias)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = h.to(self.down.weight.dtype)
        branch = self.up(self.act(self.down(x)))
        return (x + branch).to(h.dtype) if self.residual else branch


def _run_adapter(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    """Forward hook on an output projection: passes its output through the attached adapter."""
    return module.adapter(output)


def output_dim(module: nn.Module) -> int:
    """The output width of a linear-like module (nn.Linear or transformers' Conv1D)."""
    if isinstance(module, nn.Linear):
        return module.out_features
    if hasattr(module, "nf"):  # transformers' Conv1D (GPT-2), weight stored as (in, out)
        return int(module.nf)
    raise PeftbenchError(f"cannot insert an adapter after a {type(module).__name__}: unknown output size")


def supports_for(name: str, table: dict) -> Callable:
    """A ``MethodSpec.supports`` for methods written here: the model types ``table`` knows."""

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


def placement_targets(
    model: nn.Module, name: str, placement: str, table: dict[str, tuple[str, str]], attr: str
) -> list[tuple[str, nn.Module]]:
    """Freezes ``model`` and returns the modules ``placement`` selects from ``table`` (model_type -> (attention
    suffix, feed-forward suffix)); one-line errors for an unknown architecture, no match, or a second apply."""
    reason = supports_for(name, table)(getattr(model, "config", None))
    if reason is not None:
        raise PeftbenchError(reason)
    attn_suffix, ffn_suffix = table[model.config.model_type]
    suffixes = {"attention": (attn_suffix,), "feed_forward": (ffn_suffix,), "both": (attn_suffix, ffn_suffix)}[
        placement
    ]
    freeze_all(model)
    targets = [(n, mod) for n, mod in model.named_modules() if n.endswith(suffixes)]
    if not targets:
        raise PeftbenchError(f"{name}: found no module ending in {' or '.join(suffixes)} in the model")
    for module_name, module in targets:
        if hasattr(module, attr):
            raise PeftbenchError(f"{name}: {module_name} already has an adapter (apply called twice?)")
    return targets


def insert_after_outputs(
    model: nn.Module, name: str, placement: str, make: Callable[[int, torch.Tensor], nn.Module]
) -> nn.Module:
    """Freezes ``model`` and attaches ``make(width, weight)`` as ``adapter`` after the chosen output projections."""
    for _, module in placement_targets(model, name, placement, OUTPUT_PROJECTIONS, "adapter"):
        module.adapter = make(output_dim(module), module.weight)
        module.register_forward_hook(_run_adapter)
    return model


def _apply(name: str) -> Callable[[nn.Module, AdapterConfig], nn.Module]:
    def apply(model: nn.Module, config: AdapterConfig) -> nn.Module:
        m = bottleneck_size(config.size, config.reduction_factor, hidden_size(model), 64)

        def make(d: int, weight: torch.Tensor) -> nn.Module:
            return BottleneckAdapter(d, m, config.non_linearity, config.init_std, weight.dtype, weight.device)

        return insert_after_outputs(model, name, config.placement, make)

    apply.__doc__ = f"Inserts {name} bottleneck adapters after the configured sub-layer outputs; trains only them."
    return apply


apply_houlsby = _apply("adapter_houlsby")
apply_pfeiffer = _apply("adapter_pfeiffer")

_COUNT_NOTE = "adapters × (2·d·m + d + m): down and up projections with biases"
SIZE_KNOB = SizeKnob("size", conflicts=("reduction_factor",))

register(
    MethodSpec(
        name="adapter_houlsby",
        config_cls=AdapterConfig,
        apply=apply_houlsby,
        summary="bottleneck adapters after self-attention and feed-forward outputs",
        paper="Houlsby et al. 2019, Parameter-Efficient Transfer Learning for NLP (arXiv 1902.00751)",
        default_learning_rate=5e-4,
        supports=supports_for("adapter_houlsby", OUTPUT_PROJECTIONS),
        count_note=_COUNT_NOTE,
        size_knob=SIZE_KNOB,
        formula="adapters · (2·d·m + d + m); 2 per layer (self-attention, feed-forward)",
    )
)
register(
    MethodSpec(
        name="adapter_pfeiffer",
        config_cls=PfeifferConfig,
        apply=apply_pfeiffer,
        summary="bottleneck adapters after feed-forward outputs",
        paper="Pfeiffer et al. 2021, AdapterFusion: Non-Destructive Task Composition (arXiv 2005.00247)",
        default_learning_rate=5e-4,
        supports=supports_for("adapter_pfeiffer", OUTPUT_PROJECTIONS),
        count_note=_COUNT_NOTE,
        size_knob=SIZE_KNOB,
        formula="adapters · (2·d·m + d + m); 1 per layer (feed-forward)",
    )
)
