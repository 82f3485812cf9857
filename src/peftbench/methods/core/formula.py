"""The trainable-parameter formulas of ``MethodSpec.formula``, evaluated from a model config's numbers.

A spec's ``formula`` (shown by ``peftbench methods`` and in docs/methods.md) is written in a small notation; this
module evaluates it with symbols computed from the Hugging Face config's *numbers* (layer counts, widths,
vocabulary, ties), never by walking a model's modules. ``peftbench check-method`` compares the result with the
trainable count of the built model (a spec's own ``count`` function, where it has one, comes first), and
tests/methods/test_method_formulas.py does so for every built-in, option set and architecture.

Notation: ``·`` multiplies, ``−`` subtracts, ``²``/``³`` are powers; Python's ``x if cond else y``, ``max``,
comparisons and string literals may appear. ``Σ_X[expr]`` sums ``expr`` over the linear layers of target set ``X``
(``qv``, ``all``, ``kv``, ``ff``), each binding ``d_in``, ``d_out`` and LoKr's near-square factors ``a·b = d_out``,
``c·e = d_in`` (``a <= b``, ``c <= e``). Symbols: ``d`` hidden size, ``V`` vocabulary, ``P`` base parameters, ``m``
adapter bottleneck, ``r`` rank (Compacter: ``phm_rank``), ``init_r``, ``n`` = ``phm_dim``, ``t`` =
``num_virtual_tokens``, ``h`` prefix/P-tuning hidden size, ``S``/``F`` self-attention / feed-forward blocks, ``A``
adapters chosen by ``placement``, ``Lp`` layers given a prefix, ``D`` key/value width of one attention layer, ``N``
all layer-norm parameters, ``Nb`` layer-norm biases; and every field of the method's config by its own name.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import fields
from typing import Any

from peftbench.errors import PeftbenchError


class FormulaError(PeftbenchError):
    """A formula outside the notation, or one naming a symbol this architecture does not define."""


_CHARS = {"·": "*", "×": "*", "−": "-", "²": "**2", "³": "**3"}
_SIGMA = re.compile(r"Σ_([A-Za-z]\w*)\[")
_LAYER_NAMES = ("d_in", "d_out", "a", "b", "c", "e")
_ALLOWED_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call, ast.Name, ast.Load,
    ast.Constant, ast.Lambda, ast.arguments, ast.arg, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Pow,
    ast.Mod, ast.USub, ast.UAdd, ast.Not, ast.And, ast.Or, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE,
)  # fmt: skip
_FUNCTIONS = {"max": max, "min": min}


def near_square(n: int) -> tuple[int, int]:
    """The factor pair of ``n`` closest to sqrt(n), smaller first (peft's LoKr ``factorization``)."""
    a = max(k for k in range(1, math.isqrt(n) + 1) if n % k == 0)
    return a, n // a


def _expand_sums(text: str) -> str:
    """Rewrites every ``Σ_X[expr]`` as ``_sum("X", lambda d_in, d_out, a, b, c, e: (expr))`` (nesting allowed)."""
    out, pos = [], 0
    while (match := _SIGMA.search(text, pos)) is not None:
        depth, end = 1, match.end()
        while depth:
            if end == len(text):
                raise ValueError(f"unbalanced [ in formula: {text!r}")
            depth += {"[": 1, "]": -1}.get(text[end], 0)
            end += 1
        inner = _expand_sums(text[match.end() : end - 1])
        out.append(text[pos : match.start()])
        out.append(f'_sum("{match.group(1)}", lambda {", ".join(_LAYER_NAMES)}: ({inner}))')
        pos = end
    out.append(text[pos:])
    return "".join(out)


def to_python(formula: str) -> str:
    """The formula as a Python expression."""
    text = formula
    for char, replacement in _CHARS.items():
        text = text.replace(char, replacement)
    return _expand_sums(text)


def evaluate(formula: str, symbols: dict[str, Any], targets: dict[str, list[tuple[int, int]]]) -> int | float:
    """Evaluates ``formula`` with ``symbols``; ``Σ_X`` ranges over ``targets[X]``, a list of (d_in, d_out)."""
    source = to_python(formula)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise FormulaError(f"formula {formula!r} is not in the notation (as Python: {source!r}): {exc}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise FormulaError(f"formula {formula!r}: {type(node).__name__} is not part of the notation")
        callee = getattr(node, "func", None)
        if isinstance(node, ast.Call) and not (isinstance(callee, ast.Name) and callee.id in (*_FUNCTIONS, "_sum")):
            raise FormulaError(f"formula {formula!r}: only max, min and Σ may be called")

    def _sum(name: str, term) -> int | float:
        if name not in targets:
            raise FormulaError(f"formula {formula!r}: unknown target set Σ_{name} (known: {', '.join(targets)})")
        total = 0
        for d_in, d_out in targets[name]:
            a, b = near_square(d_out)
            c, e = near_square(d_in)
            total += term(d_in, d_out, a, b, c, e)
        return total

    namespace = {"__builtins__": {}, **_FUNCTIONS, **symbols, "_sum": _sum}
    try:
        return eval(compile(tree, "<formula>", "eval"), namespace)
    except NameError as exc:
        raise FormulaError(f"formula {formula!r}: {exc} (symbols: {', '.join(sorted(symbols))})") from None


# ---------------------------------------------------------------------------------------------------------------
# Architecture symbols, from the config's numbers alone
# ---------------------------------------------------------------------------------------------------------------


def _t5(cfg: Any) -> dict[str, Any]:
    d, vocab, d_ff = cfg.d_model, cfg.vocab_size, cfg.d_ff
    enc = cfg.num_layers
    dec = cfg.num_decoder_layers if cfg.num_decoder_layers is not None else cfg.num_layers
    inner = cfg.num_heads * cfg.d_kv
    gated = cfg.feed_forward_proj.split("-")[0] == "gated"
    attention_blocks = enc + 2 * dec  # encoder self; decoder self and cross
    q = k = v = (d, inner)
    o = (inner, d)
    wi = [(d, d_ff)] * (2 if gated else 1)  # wi_0, wi_1 or wi
    wo = (d_ff, d)
    all_linear = [q, k, v, o] * attention_blocks + [*wi, wo] * (enc + dec)
    norms = d * ((2 * enc + 1) + (3 * dec + 1))  # one per sub-layer, plus the final one of each stack
    relative_bias = 2 * cfg.relative_attention_num_buckets * cfg.num_heads  # first layer of encoder and decoder
    embeddings = vocab * d * (1 if cfg.tie_word_embeddings else 2)  # shared (= both stacks' embed_tokens), lm_head
    return {
        "d": d,
        "V": vocab,
        "P": embeddings + sum(i * j for i, j in all_linear) + norms + relative_bias,
        "S": enc + dec,
        "F": enc + dec,
        "Lp": cfg.num_layers,
        "E": 1,  # encoder-decoder
        "D": inner,
        "N": norms,
        "Nb": 0,
        "targets": {
            "qv": [q, v] * attention_blocks,
            "all": all_linear,
            "kv": [k, v] * attention_blocks,
            "ff": [wo] * (enc + dec),
        },
    }


def _llama(cfg: Any) -> dict[str, Any]:
    d, vocab, layers = cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers
    heads = cfg.num_attention_heads
    kv_heads = cfg.num_key_value_heads or heads
    head_dim = getattr(cfg, "head_dim", None) or d // heads
    q, k, v, o = (d, heads * head_dim), (d, kv_heads * head_dim), (d, kv_heads * head_dim), (heads * head_dim, d)
    gate = up = (d, cfg.intermediate_size)
    down = (cfg.intermediate_size, d)
    all_linear = [q, k, v, o, gate, up, down] * layers
    biases = layers * (
        (q[1] + k[1] + v[1] + o[1]) * bool(cfg.attention_bias) + (gate[1] + up[1] + down[1]) * bool(cfg.mlp_bias)
    )
    norms = d * (2 * layers + 1)  # input and post-attention RMSNorm per layer, final norm (gains only)
    embeddings = vocab * d * (1 if cfg.tie_word_embeddings else 2)
    return {
        "d": d,
        "V": vocab,
        "P": embeddings + sum(i * j for i, j in all_linear) + biases + norms,
        "S": layers,
        "F": layers,
        "Lp": layers,
        "D": kv_heads * head_dim,
        "N": norms,
        "Nb": 0,
        "targets": {"qv": [q, v] * layers, "all": all_linear, "kv": [k, v] * layers, "ff": [down] * layers},
    }


def _gpt2(cfg: Any) -> dict[str, Any]:
    d, vocab, layers = cfg.n_embd, cfg.vocab_size, cfg.n_layer
    inner = cfg.n_inner if cfg.n_inner is not None else 4 * d
    c_attn, attn_proj, c_fc, mlp_proj = (d, 3 * d), (d, d), (d, inner), (inner, d)
    all_linear = [c_attn, attn_proj, c_fc, mlp_proj] * layers  # Conv1D, each with a bias
    norm_biases = d * (2 * layers + 1)  # ln_1, ln_2 per layer, ln_f
    embeddings = vocab * d * (1 if cfg.tie_word_embeddings else 2) + cfg.n_positions * d  # wte (+ lm_head), wpe
    return {
        "d": d,
        "V": vocab,
        "P": embeddings + sum(i * j + j for i, j in all_linear) + 2 * norm_biases,
        "S": layers,
        "F": layers,
        "Lp": layers,
        "D": d,
        "N": 2 * norm_biases,
        "Nb": norm_biases,
        "targets": {"qv": [c_attn] * layers, "all": all_linear, "kv": [c_attn] * layers, "ff": [mlp_proj] * layers},
    }


_ARCHITECTURES = {"t5": _t5, "llama": _llama, "gpt2": _gpt2}


def architecture_symbols(hf_config: Any) -> dict[str, Any]:
    """d, V, P, S, F, Lp, D, N, Nb and the target sets (lists of (d_in, d_out)), from the config's numbers only."""
    if hf_config.model_type not in _ARCHITECTURES:
        raise FormulaError(
            f"no formula symbols for model type {hf_config.model_type!r} (known: {', '.join(_ARCHITECTURES)})"
        )
    return _ARCHITECTURES[hf_config.model_type](hf_config)


# ---------------------------------------------------------------------------------------------------------------
# Method symbols
# ---------------------------------------------------------------------------------------------------------------

_DEFAULT_BOTTLENECK = {
    "adapter_houlsby": lambda d: 64,
    "adapter_parallel": lambda d: 64,
    "adapter_pfeiffer": lambda d: d // 16,
    "compacter": lambda d: d // 32,
    "compacter_pp": lambda d: d // 32,
}


def method_symbols(spec: Any, method_config: Any, arch: dict[str, Any]) -> dict[str, Any]:
    """The architecture's symbols, every config field by name (an architecture symbol of the same name wins), and
    the method's own letters (m, r, n, t, h, A)."""
    options = {f.name: getattr(method_config, f.name) for f in fields(method_config)}
    symbols = {**options, **{k: v for k, v in arch.items() if k != "targets"}}
    d = arch["d"]
    if "phm_rank" in options:
        symbols["r"] = options["phm_rank"]
    if "phm_dim" in options:
        symbols["n"] = options["phm_dim"]
    if "num_virtual_tokens" in options:
        symbols["t"] = options["num_virtual_tokens"]
    if "projection_hidden_size" in options:
        symbols["h"] = options["projection_hidden_size"]
    if "scope" in options:  # prefix groups: T5 with scope all prefixes encoder self-, decoder self- and cross-attention
        symbols["G"] = 3 if options["scope"] == "all" and arch.get("E") else 1
    elif "encoder_hidden_size" in options:
        symbols["h"] = options["encoder_hidden_size"] if options["encoder_hidden_size"] is not None else d
    if "size" in options or "reduction_factor" in options:
        size, factor = options.get("size"), options.get("reduction_factor")
        if size is not None:
            symbols["m"] = size
        elif factor is not None:
            symbols["m"] = d // factor
        else:
            symbols["m"] = _DEFAULT_BOTTLENECK[spec.name](d)
    if "placement" in options:
        symbols["A"] = {"both": arch["S"] + arch["F"], "attention": arch["S"], "feed_forward": arch["F"]}[
            options["placement"]
        ]
    return symbols


def formula_count(spec: Any, hf_config: Any, method_config: Any) -> int:
    """``spec.formula`` evaluated for ``method_config`` on the architecture of ``hf_config``; a ``FormulaError``
    when it cannot be (outside the notation, a symbol this method or architecture lacks, a ``None`` option)."""
    arch = architecture_symbols(hf_config)
    try:
        value = evaluate(spec.formula, method_symbols(spec, method_config, arch), arch["targets"])
    except FormulaError:
        raise
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise FormulaError(f"formula {spec.formula!r} cannot be evaluated: {type(exc).__name__}: {exc}") from None
    return int(value) if float(value).is_integer() else value  # type: ignore[return-value]
