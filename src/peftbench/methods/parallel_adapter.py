"""Parallel adapter (He et al. 2022): a bottleneck beside a sub-layer, ``h' = h + F(x) + s · up(f(down(x)))``.

``x`` is the sub-layer's input (after its layer norm) and ``F`` the frozen sub-layer (by default the
feed-forward block, the unified-view paper's best placement, with scaling ``s = 4``). ``up`` starts at
zero, so training starts from the base model. Each adapter has ``2·d·m + d + m`` parameters. Written
here (as the sequential adapters) because no maintained library provides it for transformers >= 5.

The adapter is attached as a child ``parallel_adapter`` of the sub-layer module and runs in a forward
hook that adds its scaled output to the sub-layer's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from peftbench.methods import MethodSpec, register
from peftbench.methods.adapters import (
    SIZE_KNOB,
    BottleneckAdapter,
    bottleneck_size,
    check_common,
    hidden_size,
    placement_targets,
    supports_for,
)

# model_type -> (suffix of the self-attention block, suffix of the feed-forward block); both map d -> d.
SUBLAYERS: dict[str, tuple[str, str]] = {
    "t5": (".SelfAttention", ".DenseReluDense"),
    "mt5": (".SelfAttention", ".DenseReluDense"),
    "umt5": (".SelfAttention", ".DenseReluDense"),
    "llama": (".self_attn", ".mlp"),
    "mistral": (".self_attn", ".mlp"),
    "qwen2": (".self_attn", ".mlp"),
    "qwen3": (".self_attn", ".mlp"),
    "gpt2": (".attn", ".mlp"),
}


@dataclass
class ParallelAdapterConfig:
    """Hyperparameters of the parallel adapter."""

    size: int = 64
    """Bottleneck dimension ``m`` (the paper: 512 beside the feed-forward block of large models)."""
    reduction_factor: int | None = None
    """When set, the bottleneck is hidden_size // reduction_factor instead of ``size``."""
    placement: str = "feed_forward"
    """Beside which sub-layers: attention, feed_forward or both."""
    scaling: float = 4.0
    """Factor ``s`` on the adapter's output (the paper's scaled parallel adapter uses 4)."""
    non_linearity: str = "relu"
    """Activation between the down and up projections: relu, gelu, silu (= swish) or tanh."""
    init_std: float = 1e-2
    """Standard deviation of the normal initialisation of the down projection (the up one starts at 0)."""

    def __post_init__(self) -> None:
        check_common(self.size, self.reduction_factor, self.non_linearity, self.placement)
        for name in ("scaling", "init_std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"parallel adapter {name} must be a positive number, got {value!r}")


def _add_parallel(module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
    """Forward hook on a sub-layer: adds the scaled adapter branch computed from the sub-layer's input."""
    x = args[0] if args else kwargs["hidden_states"]
    adapter = module.parallel_adapter
    out = output[0] if isinstance(output, tuple) else output
    branch = (adapter.scaling * adapter(x)).to(out.dtype)  # the adapter computes in its own (fp32) dtype
    if isinstance(output, tuple):
        return (out + branch, *output[1:])
    return out + branch


class ParallelAdapter(BottleneckAdapter):
    """The branch ``up(act(down(x)))`` with the scaling factor the hook applies."""

    def __init__(self, d: int, m: int, config: ParallelAdapterConfig, weight: torch.Tensor) -> None:
        super().__init__(d, m, config.non_linearity, config.init_std, weight.dtype, weight.device, residual=False)
        self.scaling = float(config.scaling)


def apply(model: nn.Module, config: ParallelAdapterConfig) -> nn.Module:
    """Attaches parallel adapters beside the configured sub-layers of every layer; trains only them."""
    targets = placement_targets(model, "adapter_parallel", config.placement, SUBLAYERS, "parallel_adapter")
    d = hidden_size(model)
    m = bottleneck_size(config.size, config.reduction_factor, d, 64)
    for _, module in targets:
        weight = next(module.parameters())
        module.parallel_adapter = ParallelAdapter(d, m, config, weight)
        module.register_forward_hook(_add_parallel, with_kwargs=True)
    return model


register(
    MethodSpec(
        name="adapter_parallel",
        config_cls=ParallelAdapterConfig,
        apply=apply,
        summary="scaled bottleneck adapter in parallel to the feed-forward block",
        paper="He et al. 2022, Towards a Unified View of Parameter-Efficient Transfer Learning (arXiv 2110.04366)",
        default_learning_rate=5e-4,
        supports=supports_for("adapter_parallel", SUBLAYERS),
        count_note="adapters × (2·d·m + d + m): down and up projections with biases",
        size_knob=SIZE_KNOB,
        formula="adapters · (2·d·m + d + m); 1 per layer beside the feed-forward block",
    )
)
