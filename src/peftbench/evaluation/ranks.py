"""Evaluation batches split across the processes of a ``torchrun`` / ``accelerate launch`` job.

Every rank forms the same length-sorted batches (:func:`~peftbench.data.collate.generation_batches`). The
batches still to generate are dealt out in *rounds* of one batch per rank, taken in the single-process order;
within a round the batch with the most tokens goes to the rank with the least work so far
(:func:`assign_rounds`). After each round the ranks exchange their records (``all_gather_object``), so rank 0
appends them to ``predictions.jsonl`` in the single-process order, and every rank learns whether any rank was
asked to stop, so all stop after the same round and none is left waiting in a collective.

Works with any ``torch.distributed`` backend (gloo on CPU, NCCL on GPUs) once the process group exists
(accelerate creates it). Models whose parameters are sharded across ranks (DeepSpeed ZeRO-3, FSDP) need every
rank in every forward pass; uneven per-rank generation would hang there, so they are refused
(:func:`check_shardable`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.distributed as dist
from torch import nn

from peftbench.errors import PeftbenchError


def process_group() -> tuple[int, int]:
    """(rank, world size) of the current process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def assign_rounds(costs: Sequence[int], world: int) -> list[list[int | None]]:
    """Rounds of batch positions, one slot per rank (None: that rank idles in that round).

    Batches are taken in order, ``world`` at a time; within a round the costliest goes to the rank with the
    least total cost so far (ties: the lower rank). Deterministic, so every rank computes the same rounds.
    """
    loads = [0] * world
    rounds: list[list[int | None]] = []
    for start in range(0, len(costs), world):
        group = sorted(range(start, min(start + world, len(costs))), key=lambda k: (-costs[k], k))
        ranks = sorted(range(world), key=lambda r: (loads[r], r))
        slots: list[int | None] = [None] * world
        for k, r in zip(group, ranks, strict=False):
            slots[r] = k
            loads[r] += costs[k]
        rounds.append(slots)
    return rounds


def all_gather(obj: Any, world: int) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, world: int) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_shardable(model: nn.Module) -> None:
    """A one-line error for a model whose parameters are partitioned across ranks (ZeRO-3, FSDP)."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    fsdp = (FSDPModule, FullyShardedDataParallel)
    if any(hasattr(p, "ds_id") for p in model.parameters()) or any(isinstance(m, fsdp) for m in model.modules()):
        raise PeftbenchError(
            "evaluation with DeepSpeed ZeRO-3 or FSDP (parameters sharded across ranks) is not supported: train "
            "with DDP or ZeRO-2 (configs/accelerate/ddp.yaml, deepspeed_zero2.yaml), or evaluate the saved "
            "weights with `peftbench evaluate` on one process"
        )
