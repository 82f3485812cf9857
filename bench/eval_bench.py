"""Evaluation throughput: peftbench's generation vs Tk-Instruct-style generation, on the same model.

    python bench/eval_bench.py [--quick] [--device cuda] [--mode random|trained|both]

Both greedy-decode the same prompts with the same model and batch size; peftbench forms batches from
length-sorted prompts (decoder-only: per task, with the task's shared prompt prefix encoded once and its
KV cache reused), Tk-Instruct takes them in file order, padded to the longest of each batch. The
prompts are the real SuperNI test prompts of ../shared/data/superni-mini (definition + input, up to 1024
tokens), encoded for a tiny random T5 (encoder-decoder) and a tiny random LLaMA (decoder-only, KV cache).
Predictions must be identical (asserted).

``--mode trained`` (bench/_eval_trained.py) measures the same on trained models, whose answers end early:
the demo's pre-trained tiny base (T5 and LLaMA) with a LoRA adapter instruction-tuned by the bench.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from _common import best_time, parser, report, sync
from _tk_instruct import tk_instruct_style

from peftbench.configure import config_from_dict
from peftbench.data.collate import generation_batches
from peftbench.evaluation.generate import generate_predictions, prefix_cache_supported
from peftbench.recipe.setup import build_model, prepare_data

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "superni-mini"


def measure(model_name: str, device: str, quick: bool) -> str:
    cfg = config_from_dict({
        "model": {"name": model_name}, "method": {"name": "full"},
        "data": {"data_dir": str(DATA), "split": "mini", "max_eval_instances_per_task": 10 if quick else 100,
                 "max_train_instances_per_task": 1, "max_source_length": 1024, "max_target_length": 16},
    })  # fmt: skip
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg, apply_method=False)
    model.to(device).eval()
    features = prepare_data(cfg, tokenizer, model).test
    enc_dec = bool(model.config.is_encoder_decoder)
    kwargs = {"batch_size": 16, "max_new_tokens": 16}

    def ours():
        records = generate_predictions(model, tokenizer, features, None, encoder_decoder=enc_dec, device=device,
                                       progress=False, **kwargs)  # fmt: skip
        sync(device)
        return {r["id"]: r["prediction"] for r in records}

    def theirs():
        texts = tk_instruct_style(model, tokenizer, features, kwargs["batch_size"], kwargs["max_new_tokens"], enc_dec,
                                  device)  # fmt: skip
        sync(device)
        return {f.id: t for f, t in zip(features, texts, strict=True)}

    repeat = 1 if quick else 2
    base_t, base = best_time(theirs, repeat)
    ours_t, mine = best_time(ours, repeat)
    # The profile that explains the ratio: how much of the time is the prompt pass (1 new token) alone.
    kwargs["max_new_tokens"] = 1
    base_prefill, _ = best_time(theirs, repeat)
    ours_prefill, _ = best_time(ours, repeat)
    kwargs["max_new_tokens"] = 16
    differ = sum(mine[k] != base[k] for k in base)
    assert differ == 0, f"{differ} of {len(base)} predictions differ between the two batchings"
    n = len(features)
    lengths = [len(f.prompt_ids) for f in features]
    bs = kwargs["batch_size"]
    file_order = sum(max(lengths[i : i + bs]) * len(lengths[i : i + bs]) for i in range(0, n, bs))
    # Prompt tokens the model computes: padded batches; a shared prefix once per task, then padded rests.
    plan = generation_batches(features, bs, True, kwargs["max_new_tokens"],
                              share_prefix=prefix_cache_supported(model, enc_dec, 1))  # fmt: skip
    prefixes = {(features[b.indices[0]].task, b.prefix) for b in plan if b.prefix}
    computed = sum(p for _, p in prefixes) + sum(max(lengths[i] - b.prefix for i in b.indices) * len(b.indices)
                                                 for b in plan)  # fmt: skip
    report(f"eval {model_name} prompt tokens computed", computed, "tokens", file_order / computed,
           f"file-order batches ({file_order:,}; {sum(lengths):,} real), fewer")  # fmt: skip
    report(f"eval {model_name} prompt pass alone (1 new token)", ours_prefill, "s", base_prefill / ours_prefill,
           f"file-order batches ({base_prefill:.2f} s); it is {100 * ours_prefill / ours_t:.0f}% of the 16-token "
           f"time ({100 * base_prefill / base_t:.0f}% for file order)")  # fmt: skip
    return report(f"eval {model_name} ({n} prompts, {min(lengths)}-{max(lengths)} tokens)", n / ours_t,
                  "examples/s", base_t / ours_t, f"Tk-Instruct-style file-order batches ({n / base_t:.1f}/s); "
                  "identical predictions", goal=">= 3x")  # fmt: skip


def main() -> list[str]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("random", "trained", "both"), default="both",
                   help="random tiny models on SuperNI prompts, trained ones on the demo tasks, or both")  # fmt: skip
    p.add_argument("--models", default="tiny-t5,tiny-llama", help="comma-separated tiny presets")
    p.add_argument("--steps", type=int, default=600, help="LoRA instruction-tuning steps of --mode trained")
    args = p.parse_args()
    models = args.models.split(",")
    lines = []
    if args.mode in ("random", "both"):
        if not (DATA / "tasks").is_dir():
            print(f"eval: skipped, SuperNI sample not found at {DATA}", file=sys.stderr)
        else:
            lines += [measure(name, args.device, args.quick) for name in models]
    if args.mode in ("trained", "both"):
        from _eval_trained import measure_trained  # builds (once) and caches a trained model

        lines += [line for name in models for line in measure_trained(name, args.device, args.quick, args.steps)]
    return lines


if __name__ == "__main__":
    main()
