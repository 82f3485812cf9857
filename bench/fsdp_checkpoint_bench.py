"""Sharded (FSDP) checkpoints: each rank's file against (model + optimizer bytes) / world size.

    python bench/fsdp_checkpoint_bench.py [--quick] [--device cuda] [--nproc 2]

Starts itself under torchrun with ``--nproc`` processes (gloo on CPU). For full fine-tuning and LoRA on the tiny
T5 and on a ~100M-parameter random T5 (``--quick``: tiny T5 only), sharded with FSDP2 as ``peftbench train``
shards it, after one AdamW step: the size of every rank's ``__<rank>_0.distcp`` written by
``peftbench.training.fsdp.save_shards`` against the ideal share, (trainable weights + AdamW's moments) /
world size, and the time of the save. Goal: every rank's file within 1.1x its share + 256 KiB (DCP adds about
half a KiB per tensor entry: LoRA's many small tensors, their moments and step counters, on the tiny model).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from _common import parser, report
from checkpoint_bench import t5_100m

from peftbench.configure import config_from_dict
from peftbench.methods import build_method_config, get_method
from peftbench.recipe.setup import build_model
from peftbench.training.fsdp import Sharding, save_shards, shard_model

MIB = 1 << 20


def _model(name: str, method: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "tiny-t5":
        model, _ = build_model(config_from_dict({"model": {"name": "tiny-t5"}, "method": {"name": method}}))
        return model
    spec = get_method(method)
    return spec.apply(t5_100m(), build_method_config(method, {}))


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)  # a DTensor's numel is the whole tensor's


def _measure(name: str, method: str, device: torch.device, root: Path) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    model = shard_model(_model(name, method), Sharding(), "no", device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(5, 100, (2, 16), device=device)
    model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids[:, :8].clone()).loss.backward()
    optimizer.step()
    moments = [s[k] for s in optimizer.state.values() for k in ("exp_avg", "exp_avg_sq")]
    share = (_bytes(params) + _bytes(moments)) / world
    directory = root / f"{name}-{method}"
    dist.barrier()
    start = time.perf_counter()
    save_shards(model, optimizer, directory)
    dist.barrier()
    elapsed = time.perf_counter() - start
    sizes = [0] * world
    dist.all_gather_object(sizes, (directory / f"__{rank}_0.distcp").stat().st_size)
    if rank == 0:
        metadata = (directory / ".metadata").stat().st_size
        for r, size in enumerate(sizes):
            report(f"{name} {method} rank {r}/{world} checkpoint file", size / MIB, "MiB", size / share,
                   "(trainable + AdamW bytes) / world size", goal="<= 1.1x + 256 KiB")  # fmt: skip
            assert size <= 1.1 * share + 256 * 1024, f"rank {r}: {size} bytes, share {share:.0f}"
        report(f"{name} {method} .metadata", metadata / MIB, "MiB")
        report(f"{name} {method} sharded save", elapsed, "s")


def _worker(args) -> int:
    device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if args.device == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            shared = [tmp]
            dist.broadcast_object_list(shared, src=0)
            for name in ("tiny-t5",) if args.quick else ("tiny-t5", "t5-100m"):
                for method in ("full", "lora"):
                    _measure(name, method, device, Path(shared[0]))
            dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--nproc", type=int, default=2, help="processes (ranks) to shard over")
    args = p.parse_args()
    if "LOCAL_RANK" in os.environ:
        return _worker(args)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               __file__, *sys.argv[1:]]  # fmt: skip
    return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main())
