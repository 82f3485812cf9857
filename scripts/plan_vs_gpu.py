"""The memory plan against a real training step on the GPU: ``torch.cuda.max_memory_allocated`` of a steady-state
step (above the memory allocated before it, plus the weights, buffers and AdamW state live before it) for a few
shapes, one line each: ``plan/gpu <model> <method>: <ratio> (plan X MiB, gpu Y MiB)``. Run by scripts/gpu_check.sh."""

from __future__ import annotations

import sys

import torch

from peftbench.configure import config_from_dict
from peftbench.memory.plan import plan_memory, train_batch
from peftbench.models import is_encoder_decoder
from peftbench.recipe.setup import build_model

CASES = [
    ("tiny-t5", "full", {"max_source_length": 512, "max_target_length": 64}),
    ("tiny-t5", "lora", {"max_source_length": 512, "max_target_length": 64}),
    ("tiny-llama", "lora", {"max_source_length": 512, "max_target_length": 64}),
    ("google/t5-small-lm-adapt", "lora", {"max_source_length": 1024, "max_target_length": 128}),
]


def measure(cfg) -> int:
    device = torch.device("cuda")
    torch.manual_seed(0)
    model, _ = build_model(cfg)
    model.to(device).train()
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    batch = {k: v.to(device) for k, v in train_batch(cfg, is_encoder_decoder(base)).items()}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        for _ in range(min(cfg.train.gradient_accumulation_steps, 2)):
            model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - batch_bytes(batch)


def batch_bytes(batch) -> int:
    return sum(t.numel() * t.element_size() for t in batch.values())


def main() -> int:
    if not torch.cuda.is_available():
        print("plan_vs_gpu: no CUDA device", file=sys.stderr)
        return 3
    worst = 0.0
    for model, method, data in CASES:
        cfg = config_from_dict(
            {
                "model": {"name": model},
                "method": {"name": method},
                "data": data,
                "train": {"per_device_batch_size": 4, "gradient_accumulation_steps": 2},
                "launch": {"num_processes": 1},
            }
        )
        plan = plan_memory(cfg, world_size=1, device="cuda", evaluate=False).train_peak_bytes
        gpu = measure(cfg)
        ratio = plan / gpu
        worst = max(worst, abs(ratio - 1))
        print(f"plan/gpu {model} {method}: {ratio:.3f} (plan {plan / 2**20:.1f} MiB, gpu {gpu / 2**20:.1f} MiB)")
        torch.cuda.empty_cache()
    print(f"plan vs gpu worst deviation: {worst:.3f} ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
