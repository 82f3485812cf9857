"""The text behind ``peftbench methods``: the registry, sizes on a model, budget plans, and docs/methods.md.

Sizes are counted on the model's architecture with weights on the ``meta`` device (no download of weights,
no memory), by applying each method exactly as a run does.
"""

from __future__ import annotations

from dataclasses import MISSING, fields

from peftbench.config import ModelConfig
from peftbench.errors import PeftbenchError
from peftbench.methods import MethodSpec, all_methods
from peftbench.methods.budget import MethodCounter, match_budget, parse_budget
from peftbench.models import model_skeleton

FAMILIES = {"T5": "tiny-t5", "LLaMA": "tiny-llama", "GPT-2": "tiny-gpt2"}
"""Architecture families checked for docs/methods.md, each through its tiny preset."""


def _default(f) -> object:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else "?"


def _options(spec: MethodSpec) -> str:
    return ", ".join(f"{f.name}={_default(f)}" for f in fields(spec.config_cls)) or "-"


def method_size(spec: MethodSpec, model_name: str, options: dict | None = None) -> tuple[int, int] | str:
    """(trainable, total) parameters of ``spec`` on a model, or the reason it cannot be used there."""
    try:
        counter = MethodCounter(spec, ModelConfig(name=model_name))
        return counter.count(options or {}), counter.base_total
    except PeftbenchError as exc:
        if "cannot load model" in str(exc):
            raise  # the model itself is the problem: one line for the whole listing
        return str(exc).split(": ", 1)[-1]


def methods_table(model_name: str | None = None, budget: str | None = None) -> str:
    """A plain-text listing of the registry (with trainable counts when ``model_name`` is given)."""
    if budget is not None:
        if not model_name:
            raise PeftbenchError("--budget needs --model (the budget is matched on a model)")
        return budget_table(model_name, budget)
    if model_name:
        model_skeleton(ModelConfig(name=model_name))  # a model that cannot be loaded: one line, up front
    lines = []
    for spec in all_methods():
        lines.append(f"{spec.name}: {spec.summary}")
        lines.append(f"    options: {_options(spec)}")
        knob = f"size knob: {spec.size_knob.field}" if spec.size_knob else "fixed size"
        lines.append(f"    {knob}; trainable: {spec.formula}")
        lines.append(f"    defaults: lr {spec.default_learning_rate:g}, {spec.lr_scheduler} schedule, "
                     f"warmup {spec.warmup_ratio:g}")  # fmt: skip
        lines.append(f"    paper: {spec.paper}")
        if model_name:
            size = method_size(spec, model_name)
            if isinstance(size, str):
                lines.append(f"    on {model_name}: not supported ({size})")
            else:
                trainable, total = size
                lines.append(
                    f"    on {model_name}: {trainable:,} trainable of {total:,} ({100 * trainable / total:.4f}%)"
                )
        if spec.count_note:
            lines.append(f"    counting: {spec.count_note}")
    return "\n".join(lines)


def budget_table(model_name: str, budget: str) -> str:
    """For every method, the size ``method.budget=BUDGET`` would choose on the model and what it achieves."""
    parse_budget(_budget_value(budget))
    model = ModelConfig(name=model_name)
    base_total = sum(p.numel() for p in model_skeleton(model).parameters())
    target = parse_budget(_budget_value(budget)).target(base_total)
    rows = [("method", "size", "trainable", "% of model", "vs budget")]
    notes = []
    for spec in all_methods():
        if spec.size_knob is None:
            size = method_size(spec, model_name)
            if isinstance(size, str):
                notes.append(f"{spec.name}: not supported ({size})")
                continue
            rows.append((spec.name, "(fixed)", *_figures(size[0], base_total, target)))
            continue
        try:
            match = match_budget(spec.name, model, {}, _budget_value(budget))
        except PeftbenchError as exc:
            notes.append(f"{spec.name}: not supported ({str(exc).split(': ', 1)[-1]})")
            continue
        rows.append((spec.name, f"{match.knob}={match.value}", *_figures(match.trainable, base_total, target)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    head = f"budget {budget} of {model_name} ({base_total:,} parameters) = {target:,} trainable parameters"
    lines = [head, ""]
    for row in rows:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells))
    lines += ["", *notes] if notes else []
    lines.append("")
    lines.append(f"use it: peftbench train CONFIG method.name=METHOD method.budget={budget}")
    return "\n".join(lines).rstrip()


def _budget_value(text: str) -> object:
    """A budget as typed on the command line: digits are a count, anything else a string ('0.1%', '1.5M')."""
    return int(text) if text.strip().isdigit() else text


def _figures(trainable: int, total: int, target: int) -> tuple[str, str, str]:
    return f"{trainable:,}", f"{100 * trainable / total:.4f}%", f"{100 * (trainable - target) / target:+.1f}%"


def methods_markdown() -> str:
    """docs/methods.md, generated from the registry (``peftbench methods --markdown``)."""
    families = list(FAMILIES)
    lines = [
        "# Methods",
        "",
        "<!-- Generated by `peftbench methods --markdown > docs/methods.md`; "
        "tests/test_methods_docs.py fails when this file and the registry disagree. -->",
        "",
        "Every method peftbench can train, from its registry (`src/peftbench/methods/`). *Where it acts* and the",
        "*trainable parameters* formula use d = hidden size, m = adapter bottleneck, r = rank, L = layers,",
        "n = PHM dimension. *Size knob* is the option `method.budget` sets. *Architectures* are checked by",
        f"applying the method to the tiny presets ({', '.join(f'{k}: `{v}`' for k, v in FAMILIES.items())}).",
        "",
        "| method | where it acts | size knob | trainable parameters | " + " | ".join(families) + " | paper |",
        "|---|---|---|---|" + "---|" * len(families) + "---|",
    ]
    for spec in all_methods():
        support = []
        for preset in FAMILIES.values():
            size = method_size(spec, preset)
            support.append("✗" if isinstance(size, str) else "✓")
        knob = f"`{spec.size_knob.field}`" if spec.size_knob else "—"
        cells = [f"`{spec.name}`", spec.summary, knob, spec.formula.replace("|", "\\|"), *support, spec.paper]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Options",
        "",
        "Set any option as `method.OPTION=VALUE` (CLI) or under `method:` in a config; "
        "`peftbench methods` lists them with their defaults.",
        "",
    ]
    for spec in all_methods():
        lines.append(f"- `{spec.name}`: {_options(spec)}")
    lines += [
        "",
        "## Budget matching",
        "",
        "`method.budget=0.1%` (a share of the base model's parameters) or `method.budget=120000` (also `200k`,",
        "`1.5M`) sets the size knob to the allowed value whose trainable count is closest to the budget; the run",
        "records the chosen value in `config.yaml` and the budget, target and achieved count under `budget` in",
        "`metrics.json`. `peftbench methods --model NAME --budget 0.1%` prints the plan for every method without",
        "loading any weights. Methods of fixed size (IA3, BitFit, LN tuning, full) refuse a budget.",
        "",
    ]
    return "\n".join(lines)
