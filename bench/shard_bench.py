"""Sharded evaluation: `peftbench evaluate` on 2 processes (torchrun) vs 1, wall time, same predictions.

    python bench/shard_bench.py [--quick] [--device cuda] [--processes N]

A run of tiny-llama + LoRA on ../shared/data/superni-mini (1 training step: the weights do not matter here) is
evaluated on the whole test split (12 tasks x 100 = about 760 prompts, or 10 per task with --quick) by one
process with every core, by one process with one thread, then by N processes under torchrun (one thread each
on CPU). The wall time covers the
whole command (start-up, model, cached features, generation, scoring); the generation time alone is
``metrics.json["eval_time_s"]``. ``predictions.jsonl`` must be byte-identical (asserted).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _common import parser, report

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "superni-mini"


def _run(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(command, env={**os.environ, "HF_HUB_OFFLINE": "1", **env}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    return time.perf_counter() - start


def main() -> list[str]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=2)
    args = p.parse_args()
    if not (DATA / "tasks").is_dir():
        print(f"shard: skipped, SuperNI sample not found at {DATA}", file=sys.stderr)
        return []
    root = Path(tempfile.mkdtemp(prefix="shard-bench-"))
    cfg = {
        "model": {"name": "tiny-llama"}, "method": {"name": "lora"},
        "data": {"data_dir": str(DATA), "split": "mini", "max_train_instances_per_task": 1,
                 "max_eval_instances_per_task": 10 if args.quick else 100, "max_source_length": 1024,
                 "max_target_length": 16},
        "train": {"max_steps": 1, "per_device_batch_size": 4}, "eval": {"batch_size": 16},
        "output_dir": str(root / "runs"), "run_name": "one",
    }  # fmt: skip
    (root / "run.yaml").write_text(yaml.safe_dump(cfg))
    py = sys.executable
    _run([py, "-m", "peftbench", "train", str(root / "run.yaml"), "--no-progress"], {})  # also fills the cache
    one, many = root / "runs" / "one", root / "runs" / "many"
    shutil.copytree(one, many)
    threads = {"OMP_NUM_THREADS": "1"} if args.device == "cpu" else {}
    single = root / "runs" / "single"
    shutil.copytree(one, single)
    one_t = _run([py, "-m", "peftbench", "evaluate", str(one), "--no-progress"], {})
    single_t = _run([py, "-m", "peftbench", "evaluate", str(single), "--no-progress"], threads)
    many_t = _run([py, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.processes}",
                   "-m", "peftbench", "evaluate", str(many), "--no-progress"], threads)  # fmt: skip
    same = (one / "predictions.jsonl").read_bytes() == (many / "predictions.jsonl").read_bytes()
    assert same, "sharded predictions.jsonl differs from the 1-process one"
    n = len((one / "predictions.jsonl").read_text().splitlines())
    gen_one, gen_many, gen_single = (json.loads((d / "metrics.json").read_text())["eval_time_s"]
                                     for d in (one, many, single))  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)
    name = f"shard tiny-llama evaluate ({n} prompts) on {args.processes} processes"
    return [
        report(f"{name}, generation alone", gen_many, "s", gen_one / gen_many, f"1 process ({gen_one:.1f} s)"),
        report(
            name,
            many_t,
            "s wall",
            one_t / many_t,
            f"1 process ({one_t:.1f} s wall); identical predictions.jsonl",
            goal=">= 1.6x",
        ),
        report(
            f"{name}, one thread each",
            many_t,
            "s wall",
            single_t / many_t,
            f"1 process with one thread ({single_t:.1f} s wall; generation {gen_single:.1f} vs {gen_many:.1f} s)",
        ),
    ]


if __name__ == "__main__":
    main()
