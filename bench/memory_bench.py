"""What measuring a run's own peak memory costs: the CPU tensor-bytes tracker on training steps.

    python bench/memory_bench.py [--quick]

Tiny random T5 on the SuperNI prompts of ../shared/data/superni-mini (LoRA and full fine-tuning, batch 8), in one
process:

- per step: the same batch's forward / backward / optimizer step, alternately with and without the tracker's
  dispatch mode (:class:`peftbench.memory.measure.PeakTracker`), the median of each; the ratio is what one
  tracked step costs;
- per run: `fit` as the runs call it (the tracker watches the batches :class:`~peftbench.memory.measure.StepSample`
  picks) against `fit` with no batch tracked, interleaved in alternating order, best of each; goal <= 1.03x.
  Beside it, what the per-step ratio and the share of batches tracked predict: the per-run ratio is a few
  percent of noise on a shared machine, the prediction is not.

Times are CPU seconds of this process (``time.process_time``) with one torch thread: on a shared machine wall time
swings by more than the effect measured. On CUDA the tracker only reads the allocator's counters, so this measures
the CPU path.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch
from _common import parser, report

from peftbench.configure import config_from_dict
from peftbench.memory.measure import PeakTracker, StepSample, tensor_roots
from peftbench.recipe.setup import build_model, prepare_data
from peftbench.training.trainer import Schedule, epoch_loader, fit

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "superni-mini"
clock = time.process_time


def _config(method: str, quick: bool):
    return config_from_dict({
        "model": {"name": "tiny-t5"}, "method": {"name": method}, "seed": 0,
        "data": {"data_dir": str(DATA), "split": "mini", "max_train_instances_per_task": 4 if quick else 12,
                 "max_eval_instances_per_task": 1, "max_source_length": 512, "max_target_length": 64},
        "train": {"num_epochs": 1, "per_device_batch_size": 8, "learning_rate": 1e-3, "logging_steps": 10,
                  "save_steps": 0, "eval_steps": 0},
    })  # fmt: skip


def _fresh(cfg):
    torch.manual_seed(0)
    model, _ = build_model(cfg)
    return model


def per_step(cfg, features, repeat: int) -> tuple[float, float, float]:
    """Median seconds of a tracked and an untracked step on the same (longest) batch, and the tracked peak (MB)."""
    model = _fresh(cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    batches = list(epoch_loader(features, cfg.train, cfg.seed, 0, 0, True))
    batch = max(batches, key=lambda b: sum(v.numel() for v in b.values()))
    tracker = PeakTracker("cpu", tensor_roots(model, optimizer=opt)).start()

    def step() -> None:
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # optimizer state made, caches warm
    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(2 * repeat):
        tracked = i % 2 == 0
        start = clock()
        if tracked:
            with tracker.window():
                step()
        else:
            step()
        times[tracked].append(clock() - start)
    peak = tracker.close().peak_mb
    return statistics.median(times[True]), statistics.median(times[False]), peak


def per_run(cfg, features, repeat: int) -> tuple[float, float, int, int]:
    """Best seconds of `fit` with the tracker as runs use it and with no batch tracked; batches tracked, total."""
    from accelerate import Accelerator

    counted: list[int] = []
    sample_call = StepSample.__call__

    def counting(self, batch):
        picked = sample_call(self, batch)
        counted.append(int(picked))
        return picked

    def run(tracked: bool) -> float:
        model = _fresh(cfg)
        patch = mock.patch.object(StepSample, "__call__", counting if tracked else lambda self, batch: False)
        with patch:
            start = clock()
            fit(model, features, cfg.train, Schedule.of(cfg.train), Accelerator(cpu=True), seed=cfg.seed,
                pad_id=0, encoder_decoder=True, progress=False)  # fmt: skip
            return clock() - start

    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(repeat):
        for tracked in (False, True) if i % 2 == 0 else (True, False):  # alternating: no order bias
            if tracked:
                counted.clear()
            times[tracked].append(run(tracked))
    return min(times[True]), min(times[False]), sum(counted), len(counted)


def main() -> list[str]:
    args = parser(__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    if not (DATA / "tasks").is_dir():
        print(f"memory: skipped, SuperNI sample not found at {DATA}", file=sys.stderr)
        return []
    lines = []
    for method in ("lora", "full"):
        cfg = _config(method, args.quick)
        model, tokenizer = build_model(cfg)
        features = prepare_data(cfg, tokenizer, model).train
        with_t, without, peak = per_step(cfg, features, 3 if args.quick else 10)
        lines.append(report(f"memory tracker, one {method} step (longest batch, peak {peak:.1f} MB)", with_t * 1e3,
                            "ms", with_t / without, f"the untracked step ({without * 1e3:.1f} ms)"))  # fmt: skip
        step_ratio = with_t / without
        with_t, without, picked, total = per_run(cfg, features, 1 if args.quick else 4)
        expected = 1 + (step_ratio - 1) * picked / total
        lines.append(report(f"memory tracker, fit {method} ({picked} of {total} batches tracked)", with_t, "s",
                            with_t / without, f"fit untracked ({without:.2f} s); from the step ratio "
                            f"{expected:.3f}x expected", goal="<= 1.03x"))  # fmt: skip
    return lines


if __name__ == "__main__":
    main()
