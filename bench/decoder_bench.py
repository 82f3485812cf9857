"""Decoder-only against T5 test evaluation on the same few examples (issue 17, item 6).

A first trial evaluated 24 superni-mini test examples (12 tasks x 2) and found the decoder-only models ~10x slower
than T5. The cause was not the architecture: the shared-prefix path (decoder-only only) batched each task on its
own, so 12 batches of 2 decoded step by step instead of 3 batches of 8. Tasks with fewer than half a batch of
examples are now batched across tasks. This prints, per model, the evaluation time and forward calls now and with
the old per-task batching (``min_task_examples=2``), the ratio old/now, and decoder-only/T5 ratios.

    .venv/bin/python bench/decoder_bench.py [--quick]
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import parser, report

SUPERNI_MINI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "superni-mini"


def measure(name: str, per_task_minimum: int | None, device: str) -> tuple[float, int]:
    from peftbench.configure import config_from_dict
    from peftbench.data import collate
    from peftbench.evaluation import generate
    from peftbench.models import is_encoder_decoder
    from peftbench.recipe.setup import build_model, prepare_data

    cfg = config_from_dict({
        "model": {"name": name}, "method": {"name": "lora"},
        "data": {"data_dir": str(SUPERNI_MINI), "split": "mini", "max_eval_instances_per_task": 2,
                 "max_source_length": 256, "max_target_length": 32, "cache": False},
    })  # fmt: skip
    model, tokenizer = build_model(cfg)
    features = prepare_data(cfg, tokenizer, model).test[:24]
    model.eval().to(device)
    calls = [0]
    hook = model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    inner = getattr(model, "get_base_model", lambda: model)()
    inner_hook = inner.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    original = generate.generation_batches
    generate.generation_batches = functools.partial(collate.generation_batches, min_task_examples=per_task_minimum)
    try:
        start = time.perf_counter()
        generate.generate_predictions(
            model,
            tokenizer,
            features,
            None,
            batch_size=8,
            max_new_tokens=32,
            encoder_decoder=is_encoder_decoder(model),
            device=device,
            progress=False,
        )
        seconds = time.perf_counter() - start
    finally:
        generate.generation_batches = original
        hook.remove()
        inner_hook.remove()
    return seconds, calls[0]


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    if not (SUPERNI_MINI / "tasks").is_dir():
        print(f"decoder_eval: skipped, no superni-mini at {SUPERNI_MINI}")
        return
    torch.set_num_threads(1)
    names = ["tiny-t5", "tiny-llama"] if args.quick else ["tiny-t5", "tiny-llama", "tiny-gpt2"]
    now = {}
    for name in names:
        seconds, calls = measure(name, None, args.device)
        old, old_calls = measure(name, 2, args.device)
        now[name] = seconds
        report(f"decoder_eval_{name}_s", seconds, f"s ({calls} forward calls; per-task batching {old:.3g} s, "
               f"{old_calls} calls)", old / seconds, "per-task batching")  # fmt: skip
    for name in names[1:]:
        report(f"decoder_eval_{name}_vs_t5", now[name] / now["tiny-t5"], "x the T5 time", goal="near 1: not 10")


if __name__ == "__main__":
    main()
