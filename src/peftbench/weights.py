"""A method's trainable weights on disk: the one writer and the one reader (safetensors, never pickles).

A run directory's ``trainable.safetensors`` and ``last.safetensors``, every checkpoint's weights and the
best-validation weights are all written by :func:`write_trainable` and read by :func:`read_trainable`;
:func:`apply_trainable` puts what was read into a freshly built model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from peftbench.errors import PeftbenchError
from peftbench.io import load_tensors, save_tensors
from peftbench.methods import trainable_parameters


def write_trainable(
    weights: nn.Module | Mapping[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> int:
    """Writes a model's trainable parameters (those with ``requires_grad``), or the given tensors, atomically
    as safetensors with optional string ``metadata``; returns how many tensors."""
    tensors = trainable_parameters(weights) if isinstance(weights, nn.Module) else weights
    save_tensors(dict(tensors), path, metadata=metadata)
    return len(tensors)


def read_trainable(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors :func:`write_trainable` wrote; a one-line ``PeftbenchError`` when they cannot be read."""
    try:
        return load_tensors(path)
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise PeftbenchError(f"{path}: cannot read weights ({exc})") from None


def apply_trainable(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Loads a method's weights into the model; every trainable tensor must be there and nothing else."""
    expected = trainable_parameters(model)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise PeftbenchError(
            f"{source} does not match the run's method: {len(missing)} missing tensor(s) "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}"
        )
    for name, parameter in expected.items():
        if tuple(state[name].shape) != tuple(parameter.shape):
            raise PeftbenchError(
                f"{source}: {name} has shape {tuple(state[name].shape)}, the run's method gives "
                f"{tuple(parameter.shape)} (was the config changed after training?)"
            )
    model.load_state_dict(state, strict=False)
