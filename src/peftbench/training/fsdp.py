"""Fully sharded training (FSDP2: ``torch.distributed.fsdp.fully_shard``) and its distributed checkpoints.

peftbench shards the model itself rather than through accelerate's FSDP plugin: accelerate's plugin does
not run on CPU (a ``cpu=True`` accelerator stays plain multi-CPU), and one code path for CPU and GPU is what
the CPU tests prove. ``accelerate launch --config_file configs/accelerate/fsdp.yaml`` (or any launcher that
sets ``ACCELERATE_USE_FSDP=true``) selects it: :meth:`Sharding.from_env` reads accelerate's FSDP variables and
removes ``ACCELERATE_USE_FSDP``, so accelerate only sets up the process group, the device and the data.

Every transformer block (the model's ``_no_split_modules``) is one FSDP unit and the root holds the rest
(embeddings, final norms, a method's prompt encoder), frozen and trainable parameters alike: a PEFT method
shards the frozen base too, and only the parameters with ``requires_grad`` reach the optimizer and the
checkpoints. Checkpoints are ``torch.distributed.checkpoint`` directories (each rank writes its own file);
the final and best-validation weights are gathered, unsharded, on rank 0.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, OffloadPolicy, fully_shard

from peftbench.errors import PeftbenchError
from peftbench.methods import trainable_parameters

FSDP_ENV = "ACCELERATE_USE_FSDP"
"""Set to ``true`` by ``accelerate launch`` with an FSDP config: the switch peftbench reads."""


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Sharding:
    """How the model is sharded (from accelerate's FSDP config variables)."""

    reshard_after_forward: bool = True
    """Free each block's gathered weights after its forward (ZeRO-3-like; False: keep them for backward)."""
    offload_params: bool = False
    """Keep sharded parameters, gradients and optimizer state in CPU memory (``fsdp_offload_params``)."""

    @classmethod
    def from_env(cls) -> Sharding | None:
        """The sharding accelerate's launcher asked for, or None. Removes ``ACCELERATE_USE_FSDP`` from this
        process's environment, so that accelerate does not wrap the model a second time."""
        if not _flag(FSDP_ENV, False):
            return None
        os.environ.pop(FSDP_ENV)
        strategy = os.environ.get("FSDP_SHARDING_STRATEGY", "")  # FSDP1 configs name it; FSDP2 ones use a flag
        reshard = _flag("FSDP_RESHARD_AFTER_FORWARD", strategy.upper() not in ("SHARD_GRAD_OP", "2"))
        return cls(reshard_after_forward=reshard, offload_params=_flag("FSDP_OFFLOAD_PARAMS", False))


def _block_classes(model: nn.Module) -> set[str]:
    """Class names of the model's transformer blocks (transformers' ``_no_split_modules``)."""
    for module in model.modules():
        names = getattr(module, "_no_split_modules", None)
        if names:
            return set(names)
    return set()


def shard_model(model: nn.Module, sharding: Sharding, mixed_precision: str, device: torch.device) -> nn.Module:
    """Shards ``model`` in place over all processes (each block, then the root) and returns it.

    ``mixed_precision`` is ``train.mixed_precision``: with ``bf16`` the gathered weights compute in bfloat16
    and gradients are reduced in fp32, while the sharded (master) weights and AdamW state stay in the model's
    dtype. fp16 would need a sharded gradient scaler and is refused.
    """
    if mixed_precision == "fp16":
        raise PeftbenchError("train.mixed_precision=fp16 is not supported with FSDP: use bf16 (or no)")
    world = dist.get_world_size() if dist.is_initialized() else 1
    mesh = init_device_mesh(device.type, (world,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    options = {
        "mesh": mesh,
        "reshard_after_forward": sharding.reshard_after_forward,
        "mp_policy": policy if mixed_precision == "bf16" else MixedPrecisionPolicy(),
        "offload_policy": CPUOffloadPolicy() if sharding.offload_params else OffloadPolicy(),
    }
    blocks = _block_classes(model)
    for module in list(model.modules()):
        if module is not model and type(module).__name__ in blocks:
            fully_shard(module, **options)
    fully_shard(model, **options)
    return model


@contextlib.contextmanager
def gathered_root(model: nn.Module) -> Iterator[None]:
    """Keeps the root unit's weights (embeddings, final norms, prompt encoders) gathered for the block, so that
    code calling sub-modules directly (``generate`` runs the encoder on its own) sees whole tensors; the blocks
    gather theirs in their own forward. Every rank must run the same forwards inside (the blocks all-gather)."""
    if not isinstance(model, FSDPModule):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


_SAVE_OPTIONS = StateDictOptions(ignore_frozen_params=True)


def _optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the torch one


def _state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, dict]:
    """The trainable weights (tied ones once, as ``trainable_parameters`` names them) and the optimizer state,
    sharded, as ``torch.distributed.checkpoint`` saves and loads them."""
    model_state, optim_state = get_state_dict(model, _optimizer(optimizer), options=_SAVE_OPTIONS)
    names = set(trainable_parameters(model))
    return {"model": {k: v for k, v in model_state.items() if k in names}, "optim": optim_state}


def save_shards(model: nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Writes the trainable weights and the optimizer state with ``torch.distributed.checkpoint`` (collective:
    each rank writes its shard, ``__<rank>_0.distcp``; rank 0 adds ``.metadata``). Frozen weights are not
    saved: the run rebuilds them from the base model."""
    dcp.save(_state(model, optimizer), checkpoint_id=str(directory))


def load_shards(model: nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Loads what :func:`save_shards` wrote into the sharded ``model`` and its optimizer (collective); a one-line
    error when the checkpoint lacks a tensor of this run's method."""
    state = _state(model, optimizer)
    metadata = dcp.FileSystemReader(str(directory)).read_metadata()
    saved = {key.removeprefix("model.") for key in metadata.state_dict_metadata if key.startswith("model.")}
    if saved != set(state["model"]):
        raise PeftbenchError(f"{directory}: its weights do not match the run's method")
    dcp.load(state, checkpoint_id=str(directory))
    # dcp.load has filled every trainable tensor (a missing one is an error above); frozen ones are not in it
    set_state_dict(
        model,
        _optimizer(optimizer),
        model_state_dict=state["model"],
        optim_state_dict=state["optim"],
        options=StateDictOptions(ignore_frozen_params=True, strict=False),
    )


def gather_trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable weights as whole CPU tensors on rank 0 (``{}`` on the others), named as
    :func:`~peftbench.methods.trainable_parameters` names them (tied weights once). Collective."""
    names = set(trainable_parameters(model))
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    state = get_model_state_dict(model, options=options)
    return {name: tensor for name, tensor in state.items() if name in names}
