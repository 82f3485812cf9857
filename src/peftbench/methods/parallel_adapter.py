"""Parallel adapter (He et al. 2022): a bottleneck beside a sub-layer, ``h' = h + D(F(x)) + s · up(f(down(x)))``.

``x`` is the sub-layer's input (``LN(h)`` in these pre-LN models, as the FFN input in the paper's BART code),
``F`` the frozen sub-layer (by default the feed-forward block, the unified-view paper's best placement) and
``D`` its dropout, which the adapter's branch bypasses (the paper's ``modeling_bart.py`` adds the branch after
``dropout(fc2(...))``). As in the paper's recipe (``ffn_adapter_init_option="lora"``, scalar 4, ReLU): ``down``
Kaiming-uniform, ``up`` zero (so training starts from the base model), biases zero, scaling ``s = 4``. Each
adapter has ``2·d·m + d + m`` parameters. adapter-hub's ``ParBnConfig`` reads ``h`` rather than ``LN(h)``.
Written here (as the sequential adapters) because no maintained library provides it for transformers >= 5.

The adapter is attached as a child ``parallel_adapter`` of the sub-layer module and runs in a forward
hook that adds its scaled output to the sub-layer's (T5: to the ``T5LayerFF`` block's, after its dropout, reading
``layer_norm(h)`` again, since T5's dropout sits outside the feed-forward module).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from peftbench.methods.core.bottleneck import (
    SIZE_KNOB,
    T5_TYPES,
    BottleneckAdapter,
    bottleneck_size,
    by_family,
    check_common,
    check_init,
    hidden_size,
    modules_ending,
    modules_of_class,
    placement_sites,
    select_sites,
    site_weight,
    supports_for,
)
from peftbench.methods.core.registry import Anatomy, MethodSpec, register

# model_type -> (self-attention sub-layer, feed-forward sub-layer): modules whose input is x and whose output is
# D(F(x)). T5's sub-layers end in their own dropout only as the T5Layer* blocks, whose input is h (not LN(h)).
SUBLAYERS = by_family(
    t5=(modules_of_class("LayerSelfAttention"), modules_of_class("LayerFF")),
    llama=(modules_ending(".self_attn"), modules_ending(".mlp")),
    gpt2=(modules_ending(".attn"), modules_ending(".mlp")),
)
_READS_RESIDUAL = T5_TYPES  # hooked on the block: x = block.layer_norm(h)


@dataclass
class ParallelAdapterConfig:
    """Hyperparameters of the parallel adapter."""

    size: int | None = None
    """Bottleneck dimension ``m`` (the paper: 512 beside the feed-forward block of large models); None =
    hidden_size // reduction_factor if that is set, else 64."""
    reduction_factor: int | None = None
    """Bottleneck as hidden_size // reduction_factor (set this or ``size``, not both)."""
    placement: str = "feed_forward"
    """Beside which sub-layers: attention, feed_forward or both."""
    scaling: float = 4.0
    """Factor ``s`` on the adapter's output (the paper's scaled parallel adapter uses 4)."""
    non_linearity: str = "relu"
    """Activation between the down and up projections: relu, gelu, gelu_new, silu (= swish) or tanh."""
    init: str = "lora"
    """Initialisation: lora (Kaiming-uniform down, zero up; the paper's), bert or houlsby."""
    init_std: float | None = None
    """Standard deviation for the bert and houlsby schemes; None = theirs."""

    def __post_init__(self) -> None:
        check_common(self.size, self.reduction_factor, self.non_linearity, self.placement)
        check_init(self.init, self.init_std)
        value = self.scaling
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise ValueError(f"parallel adapter scaling must be a positive number, got {value!r}")


def _add_parallel(module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
    """Forward hook on a sub-layer: adds the scaled adapter branch computed from the sub-layer's input."""
    x = args[0] if args else kwargs["hidden_states"]
    adapter = module.parallel_adapter
    if adapter.reads_residual:
        x = module.layer_norm(x)
    out = output[0] if isinstance(output, tuple) else output
    branch = (adapter.scaling * adapter(x)).to(out.dtype)  # the adapter computes in its own (fp32) dtype
    if isinstance(output, tuple):
        return (out + branch, *output[1:])
    return out + branch


class ParallelAdapter(BottleneckAdapter):
    """The branch ``up(act(down(x)))`` with the scaling factor the hook applies."""

    def __init__(self, d: int, m: int, config: ParallelAdapterConfig, weight: torch.Tensor, reads_residual: bool):
        super().__init__(
            d, m, config.non_linearity, config.init, config.init_std, weight.dtype, weight.device, residual=False
        )
        self.scaling = float(config.scaling)
        self.reads_residual = reads_residual


def apply(model: nn.Module, config: ParallelAdapterConfig) -> nn.Module:
    """Attaches parallel adapters beside the configured sub-layers of every layer; trains only them."""
    sites = placement_sites(model, "adapter_parallel", config.placement, SUBLAYERS)
    d = hidden_size(model)
    m = bottleneck_size(config.size, config.reduction_factor, d, default=64)
    reads_residual = model.config.model_type in _READS_RESIDUAL
    for name, module in select_sites(model, "adapter_parallel", sites, "parallel_adapter"):
        weight = site_weight(model, name, module)  # the device of the sub-layer it sits beside
        module.parallel_adapter = ParallelAdapter(d, m, config, weight, reads_residual)
        module.register_forward_hook(_add_parallel, with_kwargs=True)
    return model


register(
    MethodSpec(
        name="adapter_parallel",
        revision=1,
        config_cls=ParallelAdapterConfig,
        apply=apply,
        summary="scaled bottleneck adapter beside the feed-forward block, reading its input LN(h)",
        paper="He et al. 2022, Towards a Unified View of Parameter-Efficient Transfer Learning (arXiv 2110.04366)",
        default_learning_rate=5e-4,
        supports=supports_for("adapter_parallel", SUBLAYERS),
        count_note="adapters × (2·d·m + d + m): down and up projections with biases",
        size_knob=SIZE_KNOB,
        formula="A·(2·d·m + d + m)",
        anatomy=Anatomy(
            placement=(
                "beside every feed-forward sub-layer, reading its input x = LN(h), added after its dropout: h + "
                "D(F(x)) + s·B(x), s = 4"
            ),
            init="down Kaiming-uniform (a = √5), up = 0, biases 0: starts at the base model",
            activation="ReLU",
            layer_norms="frozen",
            source=(
                "He et al. 2022 §3, Table 4; jxhe/unify-parameter-efficient-tuning (ffn_adapter_init_option=lora, "
                "scalar 4). adapter-hub's ParBnConfig reads h instead of LN(h)"
            ),
        ),
    )
)
