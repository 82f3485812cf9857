"""Trainable weights in fp32 over a half-precision (bf16 / fp16) frozen base.

AdamW on bf16 weights loses most small updates (a bf16 weight near 1 moves only in steps of 2⁻⁷), so every
trainable parameter is kept in fp32, and so is the optimizer state built from it, while the frozen base keeps
the configured dtype. Methods whose modules are new (adapters, Compacter) create their weights in
``trainable_dtype(...)`` and cast activations at their borders; peft upcasts its own adapter weights.
What is left, parameters trained *inside* base modules (BitFit's biases, LN tuning's copies of the norms),
is handled by ``keep_trainable_fp32``: such a parameter is stored in fp32 and the module computes with a
differentiable cast of it to its former dtype, so the forward is what it was (same values, same output
dtype for the next module) and the gradient reaches the fp32 weight. That is what mixed precision with fp32
master weights does; base modules such as ``nn.Linear`` (one dtype for input, weight and bias), T5's
``T5LayerNorm`` and LLaMA's ``LlamaRMSNorm`` (whose output takes the weight's dtype, which the next bf16
linear layer would refuse) cannot take an fp32 weight themselves.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator

import torch
from torch import nn

HALF = (torch.float16, torch.bfloat16)


def trainable_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a trainable parameter is kept in next to base weights of ``dtype``: fp32 for half precision."""
    return torch.float32 if dtype in HALF else dtype


def keep_trainable_fp32(model: nn.Module) -> list[str]:
    """Upcasts every half-precision trainable parameter of ``model`` to fp32, in place; returns their names.

    The module that owns such a parameter then computes with it cast back to its former dtype (see the
    module docstring). Parameter names, and so saved weights, are unchanged.
    """
    upcast: list[str] = []
    for module_name, module in model.named_modules():
        former = {
            name: p.dtype for name, p in module.named_parameters(recurse=False) if p.requires_grad and p.dtype in HALF
        }
        if not former:
            continue
        for name in former:
            p = module._parameters[name]
            module._parameters[name] = nn.Parameter(p.detach().float(), requires_grad=True)
            upcast.append(f"{module_name}.{name}" if module_name else name)
        _compute_in(module, former)
    return upcast


def _compute_in(module: nn.Module, dtypes: dict[str, torch.dtype]) -> None:
    """Makes ``module`` run its forward with the named parameters cast to ``dtypes`` (differentiably)."""
    # Bound methods, not closures, so that copy.deepcopy(model) gives a copy that computes with its own weights.
    module._peftbench_forward = module.forward  # the class forward, or an instance override already there
    module._peftbench_compute_dtypes = dtypes
    module.forward = types.MethodType(_cast_forward, module)


def _cast_forward(module: nn.Module, *args, **kwargs):
    with _parameters_cast(module, module._peftbench_compute_dtypes):
        return module._peftbench_forward(*args, **kwargs)


@contextlib.contextmanager
def _parameters_cast(module: nn.Module, dtypes: dict[str, torch.dtype]) -> Iterator[None]:
    """For the block, ``module.<name>`` is the parameter cast to ``dtypes[name]`` (what torch.func's
    reparametrisation does): the cast is part of the graph, so gradients flow to the fp32 parameter."""
    params = module._parameters
    saved = {name: params[name] for name in dtypes}
    try:
        for name, dtype in dtypes.items():
            params[name] = saved[name].to(dtype)  # type: ignore[assignment]
        yield
    finally:
        params.update(saved)
