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
from dataclasses import dataclass

import torch
from torch import nn

from peftbench.errors import PeftbenchError
from peftbench.methods import MethodSpec, freeze_all, register

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "tanh": nn.Tanh,
}

# model_type -> (suffix of the self-attention output projection, suffix of the feed-forward output one).
_T5 = (".SelfAttention.o", ".DenseReluDense.wo")
_LLAMA = (".self_attn.o_proj", ".mlp.down_proj")
_TARGETS: dict[str, tuple[str, str]] = {
    "t5": _T5,
    "mt5": _T5,
    "umt5": _T5,
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "qwen2": _LLAMA,
    "qwen3": _LLAMA,
    "gpt2": (".attn.c_proj", ".mlp.c_proj"),
}


@dataclass
class AdapterConfig:
    """Hyperparameters of bottleneck adapters."""

    size: int = 64
    """Bottleneck dimension ``m`` of every adapter (the study sweeps 8 to 512)."""
    non_linearity: str = "relu"
    """Activation between the down and up projections: relu, gelu, silu (= swish) or tanh."""
    init_std: float = 1e-2
    """Standard deviation of the normal initialisation of the down projection (the up one starts at 0)."""

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"adapter size must be a positive integer, got {self.size!r}")
        if self.non_linearity not in _ACTIVATIONS:
            raise ValueError(
                f"unknown adapter non_linearity {self.non_linearity!r}; use one of {', '.join(_ACTIVATIONS)}"
            )
        if (
            isinstance(self.init_std, bool)
            or not isinstance(self.init_std, (int, float))
            or not 0 < self.init_std < math.inf
        ):
            raise ValueError(f"adapter init_std must be a positive number, got {self.init_std!r}")


def adapter_parameter_count(d: int, m: int) -> int:
    """Parameters of one adapter on hidden size ``d`` with bottleneck ``m`` (Houlsby et al. 2019)."""
    return 2 * d * m + d + m


class BottleneckAdapter(nn.Module):
    """``h + up(act(down(h)))``; ``up`` is zero at init, so the adapter starts as the identity."""

    def __init__(
        self,
        d: int,
        m: int,
        non_linearity: str = "relu",
        init_std: float = 1e-2,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        device = device if device is not None else "cpu"
        # skip_init: no default (kaiming) init that would draw from the RNG only to be overwritten.
        self.down = nn.utils.skip_init(nn.Linear, d, m, dtype=dtype, device=device)
        self.act = _ACTIVATIONS[non_linearity]()
        self.up = nn.utils.skip_init(nn.Linear, m, d, dtype=dtype, device=device)
        with torch.no_grad():
            nn.init.normal_(self.down.weight, mean=0.0, std=init_std)
            nn.init.zeros_(self.down.bias)
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))


def _run_adapter(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    """Forward hook on an output projection: passes its output through the attached adapter."""
    return module.adapter(output)


def _output_dim(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    if hasattr(module, "nf"):  # transformers' Conv1D (GPT-2), weight stored as (in, out)
        return int(module.nf)
    raise PeftbenchError(f"cannot insert an adapter after a {type(module).__name__}: unknown output size")


def _supports(name: str):
    def supports(model_config) -> str | None:
        model_type = getattr(model_config, "model_type", None)
        if model_type in _TARGETS:
            return None
        return f"{name} supports {', '.join(_TARGETS)}; not {model_type}"

    return supports


def _insert(model: nn.Module, config: AdapterConfig, name: str, with_attention: bool) -> nn.Module:
    reason = _supports(name)(getattr(model, "config", None))
    if reason is not None:
        raise PeftbenchError(reason)
    attn_suffix, ffn_suffix = _TARGETS[model.config.model_type]
    suffixes = (attn_suffix, ffn_suffix) if with_attention else (ffn_suffix,)
    freeze_all(model)
    targets = [(n, mod) for n, mod in model.named_modules() if n.endswith(suffixes)]
    if not targets:
        raise PeftbenchError(f"{name}: found no module ending in {' or '.join(suffixes)} in the model")
    for module_name, module in targets:
        if hasattr(module, "adapter"):
            raise PeftbenchError(f"{name}: {module_name} already has an adapter (apply called twice?)")
        weight = module.weight
        module.adapter = BottleneckAdapter(
            _output_dim(module),
            config.size,
            config.non_linearity,
            config.init_std,
            dtype=weight.dtype,
            device=weight.device,
        )
        module.register_forward_hook(_run_adapter)
    return model


def apply_houlsby(model: nn.Module, config: AdapterConfig) -> nn.Module:
    """Inserts adapters after the self-attention and feed-forward outputs of every layer; trains only them."""
    return _insert(model, config, "adapter_houlsby", with_attention=True)


def apply_pfeiffer(model: nn.Module, config: AdapterConfig) -> nn.Module:
    """Inserts adapters after the feed-forward output of every layer; trains only them."""
    return _insert(model, config, "adapter_pfeiffer", with_attention=False)


_COUNT_NOTE = "adapters × (2·d·m + d + m): down and up projections with biases"

register(
    MethodSpec(
        name="adapter_houlsby",
        config_cls=AdapterConfig,
        apply=apply_houlsby,
        summary="bottleneck adapters after self-attention and feed-forward outputs",
        paper="Houlsby et al. 2019, Parameter-Efficient Transfer Learning for NLP (arXiv 1902.00751)",
        default_learning_rate=5e-4,
        supports=_supports("adapter_houlsby"),
        count_note=_COUNT_NOTE,
    )
)
register(
    MethodSpec(
        name="adapter_pfeiffer",
        config_cls=AdapterConfig,
        apply=apply_pfeiffer,
        summary="bottleneck adapters after feed-forward outputs",
        paper="Pfeiffer et al. 2021, AdapterFusion: Non-Destructive Task Composition (arXiv 2005.00247)",
        default_learning_rate=5e-4,
        supports=_supports("adapter_pfeiffer"),
        count_note=_COUNT_NOTE,
    )
)
