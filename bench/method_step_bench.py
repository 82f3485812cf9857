"""Training step time of each method on a T5-small shape, as ratios to full fine-tuning measured in the same run.

    python bench/method_step_bench.py [--quick] [--device cuda] [--methods lora,prefix,...]

The model is google/t5-small-lm-adapt's architecture (its shipped config.json, randomly initialised: the hub is not
needed), fp32, one batch of 8 prompts of 256 tokens with 32-token targets, each method built as its ``full`` preset
builds it (``method.*`` options) and trained with AdamW. Each method's time is the fastest of several steps after a
warm-up step (AdamW's state exists then): the cost half of "which method, and what does it cost" beside
``peftbench methods --cost`` (memory). CPU ratios depend on the CPU's kernels; say which CPU beside a figure.
"""

from __future__ import annotations

import torch
from _common import best_time, parser, report, sync
from transformers import AutoConfig, T5ForConditionalGeneration

from peftbench.configure import method_config
from peftbench.launch.presets import preset_config
from peftbench.methods import apply_method, get_method
from peftbench.models import shipped_model_config

MODEL = "google/t5-small-lm-adapt"
METHODS = ("full", "lora", "adapter_houlsby", "adapter_pfeiffer", "compacter", "prefix", "prompt", "ia3", "bitfit")


def step_time(method: str, device: str, batch: int, source: int, target: int, repeat: int) -> float:
    """Seconds of one forward + backward + AdamW step of ``method`` (fastest of ``repeat``)."""
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(str(shipped_model_config(MODEL).parent))
    model = T5ForConditionalGeneration(config)
    cfg = preset_config(method, "full", [f"model.name={MODEL}"])
    model = apply_method(get_method(method), model, method_config(cfg), MODEL).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(2, config.vocab_size, (batch, source), device=device)
    labels = torch.randint(2, config.vocab_size, (batch, target), device=device)

    def step() -> None:
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)

    step()  # warm-up: AdamW's state is created here
    seconds, _ = best_time(step, repeat=repeat)
    return seconds


def main() -> list[str]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods (full is the baseline)")
    args = p.parse_args()
    batch, source, target, repeat = (2, 64, 8, 2) if args.quick else (8, 256, 32, 3)
    methods = ["full", *[m for m in args.methods.split(",") if m and m != "full"]]
    times = {m: step_time(m, args.device, batch, source, target, repeat) for m in methods}
    lines = []
    for method in methods:
        shape = f"{batch}x{source}+{target}"
        lines.append(report(f"step {method} ({MODEL}, {shape})", times[method], "s", times["full"] / times[method],
                            "full fine-tuning's step"))  # fmt: skip
    return lines


if __name__ == "__main__":
    main()
