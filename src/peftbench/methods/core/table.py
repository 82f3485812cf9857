"""The text behind ``peftbench methods``: the registry, sizes on a model, budget plans, and docs/methods.md.

Sizes are counted on the model's architecture with weights on the ``meta`` device (no download of weights,
no memory), by applying each method exactly as a run does.
"""

from __future__ import annotations

from dataclasses import MISSING, fields

from peftbench.config import ModelConfig
from peftbench.errors import PeftbenchError
from peftbench.methods import MethodSpec, all_methods, builtin_methods, method_origin
from peftbench.methods.core.budget import MethodCounter, match_budget, parse_budget

FAMILIES = {"T5": "tiny-t5", "LLaMA": "tiny-llama", "GPT-2": "tiny-gpt2"}
"""Architecture families checked for docs/methods.md, each through its tiny preset."""


def _default(f) -> object:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else "?"


def _options(spec: MethodSpec) -> str:
    return ", ".join(f"{f.name}={_default(f)}" for f in fields(spec.config_cls)) or "-"


def method_size(spec: MethodSpec, model_name: str, options: dict | None = None) -> tuple[int, int] | str:
    """(trainable, base model's) parameters of ``spec`` on a model, or the reason it cannot be used there."""
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
        from peftbench.models import model_skeleton

        model_skeleton(ModelConfig(name=model_name))  # a model that cannot be loaded: one line, up front
    lines = [
        "(trainable-parameter formulas: d hidden size, m adapter bottleneck, r rank, t virtual tokens, A adapters,",
        " N layer-norm parameters, Σ_X[...] a sum over linear layers; every symbol is defined in docs/methods.md)",
        "",
    ]
    for spec in all_methods():
        lines.append(f"{spec.name}: {spec.summary}")
        lines.append(f"    options: {_options(spec)}")
        knob = f"size knob: {spec.size_knob.field}" if spec.size_knob else "fixed size"
        lines.append(f"    {knob}; trainable: {spec.formula}")
        lines.append(
            f"    defaults: lr {spec.default_learning_rate:g}, {spec.lr_scheduler} schedule, "
            f"warmup {spec.warmup_ratio:g}"
        )
        lines.append(f"    paper: {spec.paper}")
        if method_origin(spec.name) != "built-in":
            lines.append(f"    from: {method_origin(spec.name)}")
        if model_name:
            size = method_size(spec, model_name)
            if isinstance(size, str):
                lines.append(f"    on {model_name}: not supported ({size})")
            else:
                trainable, total = size
                share = f"{100 * trainable / total:.4f}% of the base model's {total:,}"
                lines.append(f"    on {model_name}: {trainable:,} trainable ({share})")
        if spec.count_note:
            lines.append(f"    counting: {spec.count_note}")
    return "\n".join(lines)


def budget_table(model_name: str, budget: str) -> str:
    """For every method, the size ``method.budget=BUDGET`` would choose on the model and what it achieves."""
    from peftbench.models import model_skeleton

    parse_budget(_budget_value(budget))
    model = ModelConfig(name=model_name)
    base_total = sum(p.numel() for p in model_skeleton(model).parameters())
    target = parse_budget(_budget_value(budget)).target(base_total)
    rows = [("method", "size", "trainable", "% of base", "vs budget")]
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


FORMULA_LEGEND = [
    "- d hidden size, V vocabulary size, P parameters of the base model;",
    "- m adapter bottleneck (`size`, else d // `reduction_factor`, else the method's default: Houlsby and parallel 64,",
    "  Pfeiffer d // 16, Compacter d // 32); r rank (LoRA family `r`, Compacter `phm_rank`), `init_r` AdaLoRA's,",
    "  n Compacter's `phm_dim`;",
    "- t virtual tokens (`num_virtual_tokens`), h hidden width of the prefix projection or prompt encoder",
    "  (`projection_hidden_size`, `encoder_hidden_size`, None = d);",
    "- S self-attention blocks (T5: encoder and decoder; decoder-only: one per layer), F feed-forward blocks,",
    "  A adapters (`placement`: S + F for both, S for attention, F for feed_forward);",
    "- Lp layers whose self-attention gets a prefix (T5: `num_layers`), G prefix groups (3 for T5 with `scope` all:",
    "  encoder self-, decoder self- and cross-attention, each its own; else 1), D key/value width of one layer",
    "  (key/value heads × head dimension: smaller than d under grouped-query attention);",
    "- N layer-norm parameters (gains and biases), Nb layer-norm biases (GPT-2's; T5's and LLaMA's norms have none);",
    "- Σ_X[…] sums over the linear layers of X, each mapping d_in → d_out: qv the default LoRA targets (T5: q, v of",
    "  every attention block; LLaMA: q_proj, v_proj; GPT-2: the fused c_attn), all every linear layer but the output",
    "  head, kv IA3's key/value targets (GPT-2: c_attn), ff the feed-forward output projections (T5: wo; LLaMA:",
    "  down_proj; GPT-2: mlp.c_proj); for LoKr a·b = d_out and c·e = d_in, each factored near-square with a ≤ b;",
    "- any option of the method by its name (`train_layer_norms`, `projection`, `encoder`, `lm_head_bias`).",
]

STUDY_VARIANTS = [
    "The study (hepengfe/parameter_efficient_instruction_tuning) runs five of its modes on T5: LoRA, prompt tuning,",
    "prefix tuning, BitFit and its own bottleneck adapter (its Houlsby, Compacter and parallel modes are dead code",
    "there). Where its code and the papers differ:",
    "",
    "- **adapter**: Houlsby placement with size 32, SiLU, BERT initialisation and frozen layer norms:",
    "  `method.name=adapter_houlsby method.size=32 method.non_linearity=silu method.init=bert "
    "method.train_layer_norms=false`",
    "  (its code applies SiLU twice, a bug not reproduced).",
    "- **BitFit**: linear biases only (T5's norms have no `bias` attribute for its code to find) and a",
    "  zero-initialised, trained bias on the output head: `method.layer_norm_biases=false method.lm_head_bias=true`.",
    "- **prompt tuning**: random initialisation, peftbench's default (Lester et al.'s best, vocabulary-sampled, is",
    "  `method.init=sample_vocab`). Its T5 training also prepends a second soft",
    "  prompt to the decoder's input, which its generation leaves out; not reproduced (one prompt, for the encoder,",
    "  in training and generation).",
    "- **prefix tuning**: the same placement as here (T5's decoder self-attention), lengths 8 and projection widths",
    "  none / 1024 / 512 / 256 (`method.projection=false`, or `method.projection_hidden_size=1024`; peftbench's",
    "  default is Li & Liang's reparameterisation, width 512).",
    "- **LoRA**: the same (r = α on q, v), with dropout 0.1 on its input (the preset's).",
    "- **Training protocol** (all methods, in the `full` presets): fp32, AdamW weight decay 0.01 for the PEFT",
    '  methods and 0 for full fine-tuning; `metrics.json["protocol"]` records where a run differs from it.',
    "",
    "Not implemented: Lester et al.'s initialisation from the 5,000 most common tokens",
    "(needs token frequencies; `sample_vocab` samples the whole vocabulary, as peft does), PHM-Adapter, AdapterDrop",
    "and Adapter-LowRank.",
]

REMAINING = [
    "Where a method still differs from its paper or from the reference implementation, on purpose or because the",
    "library it builds on cannot do otherwise. The reference tier (`tests/reference/`, `make test-reference`, part of",
    "`make test`) builds the same tiny T5 and LLaMA in AdapterHub's `adapters` (its own virtual environment,",
    "transformers 4.57), copies identical method weights into both and compares logits (fp32, 1e-5); where",
    "peftbench differs on purpose, the test pins the difference.",
    "",
    "- **`adapter_parallel` reads LN(h), AdapterHub's `ParBnConfig` reads h.** peftbench follows He et al.'s code",
    "  (jxhe/unify-parameter-efficient-tuning: the branch reads the sub-layer's normalised input). The reference",
    "  test asserts that the logits differ from `ParBnConfig`'s and equal them when AdapterHub's adapter is fed",
    "  LN(h) instead.",
    "- **`adapter_houlsby` and `compacter` activations and initialisation follow the papers**, not AdapterHub's",
    "  defaults (SiLU and N(0, 0.02) for `DoubleSeqBnConfig`; exact GELU and, because of a bug in `init_W`, Xavier-",
    "  normal instead of the documented Glorot-uniform fast weights for `CompacterConfig`). The reference test sets",
    "  AdapterHub's activation to peftbench's (tanh GELU) and copies the weights, so initialisation does not enter.",
    "- **`adapter_pfeiffer` is AdapterFusion's (and AdapterHub's `SeqBnConfig`) adapter after the feed-forward",
    '  block.** The Compacter paper\'s "Pfeiffer-Adapter" baseline puts it after the self-attention block',
    "  (rabeehk/compacter `configs/pfeiffer_adapters.json`: on the self-attention output, before its dropout and",
    "  the residual, tanh GELU, layer norms trained); the counts are equal, so a count cannot tell them apart. That",
    "  baseline is `method.name=adapter_houlsby method.placement=attention method.reduction_factor=32` (peftbench's",
    "  adapter sits after the dropout: the same in evaluation); both rows are in the published-count test.",
    "- **`prefix` on T5 prefixes the decoder's self-attention by default** (peft; the study's effective placement);",
    "  `method.scope=all` is Li & Liang's placement, the encoder's self-attention and the cross-attention too, three",
    "  prefix groups and three times the parameters (their XSum figure, 2%, counts all three). Against AdapterHub's",
    "  `PrefixTuningConfig` (all three) it is equal with T5's relative position bias zeroed: AdapterHub shifts the",
    "  real keys by the prefix length in that bias, peftbench (as peft in the decoder) counts the prefix as past",
    "  tokens, so relative positions between real tokens stay as pre-training left them.",
    "- **`lora`, `dora`, `ia3` on GPT-2 adapt the fused `c_attn`**, so q, k and v together (peft cannot target part",
    "  of a fused projection). LoRA's GPT-2 code (microsoft/LoRA, `enable_lora=[True, False, True]`) adapts q and v",
    "  with a rank-r update each: the same count (4·r·d per layer: 393,216 at r = 4 on GPT-2 medium), but",
    "  peftbench's one update of rank r is shared by q, k and v. IA3 on GPT-2 rescales q too (d more per layer).",
    "  On T5 and LLaMA the targets are separate projections and follow the papers (LoRA: q, v; IA3: k, v and the",
    "  feed-forward activation). DoRA's paper adapts q, k, v, up and down on LLaMA; peftbench's default is LoRA's",
    "  q, v (`method.target_modules` sets others).",
    "- **`ia3` on LLaMA rescales the input of `down_proj`** (the paper's l_ff ⊙ γ(W₁x), peft); AdapterHub's",
    "  `IA3Config` rescales its output, a different function (d_model instead of d_ff entries). The study's IA3",
    "  (adapter-transformers) was given its `DROPOUT_RATE`; peft's IA3 has no dropout, recorded in",
    '  `metrics.json["protocol"]`.',
    "- **`adalora`'s published counts depend on the ranks it learns** (Table 1's 1.27M / 0.32M are counted after",
    "  pruning); peftbench counts the init_r ranks it trains and stores (pruned ranks are zeroed, not removed).",
]

PUBLISHED = [
    "| paper, table | model | method (peftbench options) | published | peftbench |",
    "|---|---|---|---|---|",
    "| Compacter (arXiv 2106.04647), Table 1 | T5-base | Adapter (`adapter_houlsby`, `reduction_factor=32`) "
    "| 0.832% | 0.8322% |",
    "| Compacter, Table 1 | T5-base | Pfeiffer-Adapter (`adapter_pfeiffer`, `reduction_factor=32`, "
    "`train_layer_norms=true`) | 0.427% | 0.4268% |",
    "| Compacter, Table 1 | T5-base | Compacter (`compacter`) | 0.073% | 0.0726% |",
    "| Compacter, Table 1 | T5-base | Compacter++ (`compacter_pp`) | 0.047% | 0.0470% |",
    "| Compacter, Table 1 | T5-base | BitFit (`bitfit`, `lm_head_bias=true`: linear and norm biases) "
    "| 0.126% | 0.1267% |",
    "| Compacter, Table 1 | T5-base | Prompt Tuning (`prompt`, 100 tokens) | 0.034% | 0.0345% |",
    "| LoRA (arXiv 2106.09685), Table 4 | GPT-3 175B shapes | LoRA on W_q, W_v, r = 1 | 4.7M | 4,718,592 |",
    "| LoRA, Table 4 | GPT-3 175B shapes | LoRA on W_q, W_v, r = 8 | 37.7M | 37,748,736 |",
    "| T-Few (arXiv 2205.05638), §3.3, §1 | T0 (T5 v1.1 XXL) | (IA)³ (`ia3`) | L(d_k+d_v+d_ff) + L(2d_k+2d_v+d_ff), "
    "≈0.01%, 10,000× fewer | 1,081,344 |",
    "| BitFit (arXiv 2106.10199), Table 1 | BERT-large | BitFit (`bitfit`: every bias, the norms' included) "
    "| 0.08% | 272,384 (0.0813%) |",
    "| Prefix-Tuning (arXiv 2101.00190), §1 | GPT-2 medium | prefix, 5 tokens (`projection=false`: the prefix "
    "kept) | 250K | 245,760 |",
    "| Prefix-Tuning, Table 2 + Table 5 | BART-large shapes (as T5) | prefix, 100 tokens, `scope=all`, "
    "`projection=false` | 2% | 7,372,800 (1.81%) |",
]


def _figures(trainable: int, total: int, target: int) -> tuple[str, str, str]:
    return f"{trainable:,}", f"{100 * trainable / total:.4f}%", f"{100 * (trainable - target) / target:+.1f}%"


def methods_markdown() -> str:
    """docs/methods.md, generated from the registry's built-in methods (``peftbench methods --markdown``)."""
    families = list(FAMILIES)
    lines = [
        "# Methods",
        "",
        "<!-- Generated by `peftbench methods --markdown > docs/methods.md`; "
        "tests/methods/test_methods_table.py fails when this file and the registry disagree. -->",
        "",
        "Every method peftbench can train, from its registry (`src/peftbench/methods/`). *Size knob* is the option",
        "`method.budget` sets. *Architectures* are checked by applying the method to the tiny presets",
        f"({', '.join(f'{k}: `{v}`' for k, v in FAMILIES.items())}; T5 with the gated feed-forward of T5 v1.1 /",
        "LM-adapted, LLaMA with grouped-query attention).",
        "",
        "The *trainable parameters* column is a formula that `peftbench.methods.core.formula` evaluates",
        "(as `peftbench check-method` does on the tiny models) and `tests/methods/test_method_formulas.py`",
        "compares, for the default and other options, on gated and ReLU T5, LLaMA, GPT-2 and T5-base, with the",
        "count of the model the method builds; the symbols come from the model's configuration alone:",
        "",
        *FORMULA_LEGEND,
        "",
        "| method | where it acts | size knob | trainable parameters | " + " | ".join(families) + " | paper |",
        "|---|---|---|---|" + "---|" * len(families) + "---|",
    ]
    for spec in builtin_methods():
        support = []
        for preset in FAMILIES.values():
            size = method_size(spec, preset)
            support.append("✗" if isinstance(size, str) else "✓")
        knob = f"`{spec.size_knob.field}`" if spec.size_knob else "—"
        cells = [f"`{spec.name}`", spec.summary, knob, spec.formula.replace("|", "\\|"), *support, spec.paper]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## How each method is built",
        "",
        "What each method reads and where its output goes, how it starts, its activation, whether the model's",
        "layer norms train with it (checked against the model by `tests/methods/test_methods_table.py`), and the",
        "paper and code it follows. Where the study's code differs from the paper, peftbench follows the paper by",
        "default and the study's variant is an option (see below). In the placement formulas h is a sub-layer's input",
        "(the residual stream), LN its layer norm, F the frozen sub-layer, D its dropout, A(x) = x + B(x) a sequential",
        "adapter and B(x) = W_up f(W_down x + b_down) + b_up its branch. How the adapters are pinned: hooks on the",
        "real blocks in `tests/methods/test_adapters.py`.",
        "",
        "| method | placement | initialisation | activation | layer norms | source |",
        "|---|---|---|---|---|---|",
    ]
    for spec in builtin_methods():
        a = spec.anatomy
        assert a is not None, spec.name
        cells = [f"`{spec.name}`", a.placement, a.init, a.activation, a.layer_norms, a.source]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines += [
        "",
        "## The study's variants",
        "",
        *STUDY_VARIANTS,
        "",
        "## Published parameter counts",
        "",
        "`tests/methods/test_published_counts.py` rebuilds these figures from the model configuration alone (meta",
        "device):",
        "",
        *PUBLISHED,
        "",
        "## Remaining differences",
        "",
        *REMAINING,
        "",
        "## Options",
        "",
        "Set any option as `method.OPTION=VALUE` (CLI) or under `method:` in a config; "
        "`peftbench methods` lists them with their defaults.",
        "",
    ]
    for spec in builtin_methods():
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
