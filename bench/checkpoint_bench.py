"""Checkpoints: size and save/load time of peftbench's checkpoints vs the full model's state dict.

    python bench/checkpoint_bench.py [--quick] [--device cuda]

For LoRA and a Houlsby adapter on the tiny T5 and on a ~100M-parameter random T5, after one optimizer
step: the method's weights file (`trainable.safetensors`) and a whole resumable checkpoint (weights, AdamW
state, scheduler, RNG, manifest) against `torch.save(model.state_dict())` of the full model. Goal: a
checkpoint is at most 3x the trainable bytes (weights + AdamW's two moments) + 1 MiB.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import torch
from _common import parser, report
from transformers import T5Config, T5ForConditionalGeneration, get_scheduler

from peftbench.configure import config_from_dict
from peftbench.methods import build_method_config, get_method
from peftbench.recipe.rundir import load_trainable, save_trainable
from peftbench.recipe.setup import build_model
from peftbench.training.checkpoint import capture_rng_state, latest_valid_checkpoint, load_checkpoint, save_checkpoint

MIB = 1 << 20


def t5_100m() -> T5ForConditionalGeneration:
    """A random T5 of about 100M parameters (d 768, 6+6 layers, 32k vocabulary)."""
    cfg = T5Config(vocab_size=32128, d_model=768, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=12,
                   d_kv=64, dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)  # fmt: skip
    return T5ForConditionalGeneration(cfg)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(label: str, make_model, method: str, device: str, work: Path) -> list[str]:
    torch.manual_seed(0)
    model = make_model().to(device)
    cfg = config_from_dict({"model": {"name": "tiny-t5"}, "method": {"name": method}})
    model = get_method(method).apply(model, build_method_config(method, {k: v for k, v in cfg.method.items()
                                                                            if k != "name"}))  # fmt: skip
    params = [p for p in model.parameters() if p.requires_grad]
    trainable_bytes = sum(p.numel() * p.element_size() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-3)
    sched = get_scheduler("linear", opt, num_warmup_steps=0, num_training_steps=10)
    ids = torch.randint(2, 100, (2, 16), device=device)
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    sched.step()

    full_path = work / f"{label}-{method}-full.pt"
    start = time.perf_counter()
    torch.save(model.state_dict(), full_path)
    full_save = time.perf_counter() - start
    start = time.perf_counter()
    torch.load(full_path, weights_only=True, map_location=device)
    full_load = time.perf_counter() - start

    weights = work / f"{label}-{method}.safetensors"
    save_trainable(model, weights, cfg)
    start = time.perf_counter()
    load_trainable(model, weights)
    w_load = time.perf_counter() - start

    run_dir = work / f"{label}-{method}-run"
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    start = time.perf_counter()
    save_checkpoint(run_dir, 1, trainable=trainable, optimizer=opt, scheduler=sched, trainer_state={"step": 1},
                    rng_states=[capture_rng_state()], config_hash="bench", seed=0, keep=1, versions={})  # fmt: skip
    c_save = time.perf_counter() - start
    start = time.perf_counter()
    ckpt = latest_valid_checkpoint(run_dir, "bench", 1)
    load_checkpoint(ckpt, 0)
    c_load = time.perf_counter() - start
    ckpt_size = _dir_size(ckpt.path)
    full_size = full_path.stat().st_size
    goal = 3 * trainable_bytes + MIB
    total = sum(p.numel() for p in model.parameters())
    name = f"checkpoint {label} ({total / 1e6:.1f}M params) {method}"
    met = "met" if ckpt_size <= goal else "MISSED"
    return [
        report(f"{name} weights file", weights.stat().st_size / MIB, "MiB", weights.stat().st_size / full_size,
               f"the full state dict, {full_size / MIB:.1f} MiB"),
        report(f"{name} resumable checkpoint", ckpt_size / MIB, "MiB", ckpt_size / goal,
               f"3 x trainable bytes + 1 MiB = {goal / MIB:.2f} MiB", goal=f"<= 1x, {met}"),
        report(f"{name} checkpoint save", c_save * 1000, "ms", c_save / full_save,
               f"torch.save of the full state dict, {full_save * 1000:.0f} ms"),
        report(f"{name} checkpoint + weights load", (c_load + w_load) * 1000, "ms", (c_load + w_load) / full_load,
               f"torch.load of the full state dict, {full_load * 1000:.0f} ms"),
    ]  # fmt: skip


def main() -> list[str]:
    args = parser(__doc__.splitlines()[0]).parse_args()
    work = Path(tempfile.mkdtemp(prefix="peftbench-ckpt-"))
    lines = []
    try:
        tiny = lambda: build_model(config_from_dict({"model": {"name": "tiny-t5"}}), apply_method=False)[0]  # noqa: E731
        models = [("tiny-t5", tiny)] + ([] if args.quick else [("t5-random-100M", t5_100m)])
        for label, make in models:
            for method in ("lora", "adapter_houlsby"):
                lines += measure(label, make, method, args.device, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return lines


if __name__ == "__main__":
    main()
