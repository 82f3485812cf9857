"""Run under ``torchrun --nproc_per_node 2`` (gloo): every method on tiny T5 (and tiny LLaMA), sharded with FSDP2.

For each method: build and shard the model, train 2 AdamW steps, save a sharded checkpoint, train 2 more (the
reference); then a freshly built, sharded model loads the checkpoint and trains the same 2 steps, which must
give the same losses bit for bit; the gathered weights must be named exactly as the unsharded model's
trainable parameters. Prints one JSON line on rank 0: ``{"model/method": "ok" or the first line of the error}``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from peftbench.configure import config_from_dict
from peftbench.methods import builtin_methods, trainable_parameters
from peftbench.recipe.setup import build_model
from peftbench.training.fsdp import Sharding, gather_trainable, load_shards, save_shards, shard_model


def _batches(encoder_decoder: bool) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(4):
        ids = torch.randint(5, 100, (4, 12), generator=g)
        labels = torch.randint(5, 100, (4, 6), generator=g) if encoder_decoder else ids.clone()
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


def _check(model_name: str, method: str, directory: Path) -> str:
    cfg = config_from_dict({"model": {"name": model_name}, "method": {"name": method}})

    def build():
        torch.manual_seed(0)
        model, _ = build_model(cfg)
        names = set(trainable_parameters(model))
        model = shard_model(model, Sharding(), "no", torch.device("cpu"))
        params = [p for p in model.parameters() if p.requires_grad]
        return model, torch.optim.AdamW(params, lr=1e-2), names

    def step(model, optimizer, batch) -> float:
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss.item()

    encoder_decoder = model_name == "tiny-t5"
    batches = _batches(encoder_decoder)
    model, optimizer, names = build()
    model.train()
    for batch in batches[:2]:
        step(model, optimizer, batch)
    save_shards(model, optimizer, directory)
    reference = [step(model, optimizer, b) for b in batches[2:]]
    gathered = gather_trainable(model)
    if dist.get_rank() == 0 and set(gathered) != names:
        return f"gathered {len(gathered)} tensors, the method trains {len(names)}"
    model, optimizer, _ = build()
    model.train()
    load_shards(model, optimizer, directory)
    resumed = [step(model, optimizer, b) for b in batches[2:]]
    return "ok" if resumed == reference else f"resumed losses {resumed} != {reference}"


def main() -> None:
    dist.init_process_group("gloo")
    models = sys.argv[1].split(",")
    methods = sys.argv[2].split(",") if len(sys.argv) > 2 else [m.name for m in builtin_methods()]
    results = {}
    for model_name in models:
        for method in methods:
            with tempfile.TemporaryDirectory() as tmp:
                shared = [tmp]
                dist.broadcast_object_list(shared, src=0)
                try:
                    results[f"{model_name}/{method}"] = _check(model_name, method, Path(shared[0]) / "ckpt")
                except Exception as exc:  # reported, not raised: the test names every failing method
                    results[f"{model_name}/{method}"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
                dist.barrier()
    if dist.get_rank() == 0:
        print("RESULTS " + json.dumps(results), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
