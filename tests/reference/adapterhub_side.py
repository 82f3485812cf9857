"""The AdapterHub half of the reference tier: run with ``.venv-adapters/bin/python`` (``make reference-venv``:
``adapters`` 1.3.0 on transformers 4.57.6), never imported by the main venv's tests.

``python adapterhub_side.py --out DIR [CASE ...]`` (all cases when none is named) writes:

- ``DIR/base-<family>/``: the tiny base model (``save_pretrained``, safetensors) and ``io.safetensors`` with the
  inputs of every batch (``<batch>.<input name>``) and the base model's logits (``<batch>.logits``);
- ``DIR/<case>/adapter.safetensors``: every tensor of the adapter under its AdapterHub name, after each was set
  to seeded random values (no zero-initialised ``up``, ``lora_B`` or bias, no all-ones IA3 vector can hide a
  misplaced or mis-mapped tensor);
- ``DIR/<case>/logits.safetensors``: eval-mode logits ``<batch>.<variant>``. Variant ``main``: the adapter as
  configured. Variants that reproduce a peftbench convention (each pinned by the test): ``reads_ln``
  (parallel: the adapter fed LN(h)), ``positions_after_prefix`` (LLaMA prefix: tokens at positions L..L+T-1),
  ``{tied,untied}_{bias,nobias}`` (T5 prefix: peft's layer layout, T5's relative bias; with
  ``adapter_tied.safetensors``);
- ``DIR/<case>/meta.json``: the family, the AdapterHub config as resolved, and facts the test pins.

The peftbench half (``test_adapterhub.py``, transformers 5) loads the base with ``from_pretrained``, applies the
peftbench method, copies these tensors into it and compares logits. See docs/reference.md for where each
AdapterHub adapter sits.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import time
import warnings
import zlib
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import adapters
import torch
import transformers
from adapters import (
    CompacterConfig,
    CompacterPlusPlusConfig,
    DoubleSeqBnConfig,
    IA3Config,
    LoRAConfig,
    ParBnConfig,
    PrefixTuningConfig,
    SeqBnConfig,
)
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

warnings.filterwarnings("ignore")  # transformers 4.57's deprecation notices (past_key_value, tuple caches)
transformers.logging.set_verbosity_error()
logging.getLogger("adapters").setLevel(logging.ERROR)  # "There are adapters available but none are activated"

NAME = "ref"  # the adapter's name inside AdapterHub (part of every saved key)
VOCAB = 128
PREFIX_LENGTH = 5
PREFIX_HIDDEN = 24


# ------------------------------------------------------------------------------------------------------------------
# base models and inputs
# ------------------------------------------------------------------------------------------------------------------
def t5_base() -> T5ForConditionalGeneration:
    """T5 v1.1 (gated-gelu), d_model 32. lm_head is made equal to ``shared``: transformers 5 ties them for T5
    whatever the config says (adapters.md §11), so a checkpoint where they differ cannot mean the same model on
    both sides. ``tie_word_embeddings=False`` keeps v1.1's unscaled decoder output in 4.57 and in 5. Both are
    scaled by 0.1 (T5's init draws them from N(0, 1), which gives logits of about ±20 on d_model 32): logits of
    order 1, as the LLaMA's, keep fp32 rounding differences well below the tests' atol of 1e-5."""
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=VOCAB, d_model=32, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=8,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0,
        eos_token_id=1,
    )  # fmt: skip
    model = T5ForConditionalGeneration(config)
    with torch.no_grad():
        model.shared.weight.mul_(0.1)
        model.lm_head.weight.copy_(model.shared.weight)
    return model.eval()


def llama_base() -> LlamaForCausalLM:
    """LLaMA with grouped-query attention (4 heads, 2 key/value heads). Eager attention: AdapterHub's prefix tuning
    is wrong under SDPA in 4.57 (adapters.md §9); for the other methods eager and SDPA agree. lm_head is scaled by
    10 (initializer_range 0.02 gives logits of about ±0.3): logits of order 1, as the T5's, so that a difference
    inside the model is not shrunk fifty-fold on its way to the compared logits."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        attn_implementation="eager",
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)
    return model.eval()


def t5_inputs() -> dict[str, dict[str, torch.Tensor]]:
    """One batch; row 1's encoder input ends in two padding positions."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, VOCAB, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0
    ids[1, -2:] = 0
    dec = torch.randint(2, VOCAB, (2, 5), generator=g)
    return {"b0": {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec}}


def llama_inputs() -> dict[str, dict[str, torch.Tensor]]:
    """``b0``: no attention mask; ``b1``: row 1 left-padded by two (compare only where the mask is 1)."""
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(3, VOCAB, (2, 6), generator=g)
    ids1 = torch.randint(3, VOCAB, (2, 6), generator=g)
    mask1 = torch.ones_like(ids1)
    mask1[1, :2] = 0
    ids1[1, :2] = 0
    return {"b0": {"input_ids": ids}, "b1": {"input_ids": ids1, "attention_mask": mask1}}


FAMILIES = {"t5": (t5_base, t5_inputs), "llama": (llama_base, llama_inputs)}


# ------------------------------------------------------------------------------------------------------------------
# cases: AdapterHub config per case (the peftbench options that match it live in test_adapterhub.py)
# ------------------------------------------------------------------------------------------------------------------
def _cases() -> dict[str, tuple[str, object]]:
    compacter = {"reduction_factor": 8, "non_linearity": "gelu_new", "phm_rank": 2}  # m = 4 = phm_dim on d = 32
    prefix = {"prefix_length": PREFIX_LENGTH, "bottleneck_size": PREFIX_HIDDEN}
    cases = {}
    for family in ("t5", "llama"):
        cases[f"houlsby_{family}"] = (family, DoubleSeqBnConfig(reduction_factor=4, non_linearity="gelu_new"))
        cases[f"pfeiffer_{family}"] = (family, SeqBnConfig(reduction_factor=4))
        cases[f"parallel_{family}"] = (family, ParBnConfig())  # rf 2 (m = 16), scaling 4, ReLU
        cases[f"compacter_{family}"] = (family, CompacterConfig(**compacter))
        # Compacter++ reads the feed-forward output before the residual in peftbench (h + D(F + A(F))), so
        # original_ln_before=False (adapters.md §12); SeqBn's default reads x + h.
        cases[f"compacter_pp_{family}"] = (family, CompacterPlusPlusConfig(original_ln_before=False, **compacter))
        cases[f"lora_{family}"] = (family, LoRAConfig(r=4, alpha=8))
    cases["ia3_t5"] = ("t5", IA3Config())
    cases["ia3_llama"] = ("llama", IA3Config(intermediate_lora=False))  # k_proj, v_proj only (see meta)
    cases["prefix_t5"] = ("t5", PrefixTuningConfig(encoder_prefix=False, cross_prefix=False, **prefix))
    cases["prefix_llama"] = ("llama", PrefixTuningConfig(**prefix))
    # Li & Liang's placement (peftbench scope: all): encoder self-, decoder self- and cross-attention prefixes
    cases["prefixall_t5"] = ("t5", PrefixTuningConfig(**prefix))
    return cases


CASES = _cases()


def _is_adapter_key(key: str) -> bool:
    if ".prefix_tuning.pool." in key:  # aliases of the prefix tensors held by every attention layer
        return False
    return f".{NAME}." in key or key.startswith(f"{NAME}.") or f"shared_parameters.{NAME}." in key


def _randomise(model, case: str) -> None:
    """Sets every adapter parameter to seeded random values: N(0, 0.3²); LoRA's A and B N(0, 0.1²) (0.3 makes
    the update ten times the size of T5's query weights, and the logits chaotic); IA3 vectors 1 + N(0, 0.3²); the
    prefix embedding N(0, 1)."""
    g = torch.Generator().manual_seed(zlib.crc32(case.encode()))
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if not (_is_adapter_key(name) or ".prefix_tuning.pool." in name):
                continue
            noise = torch.randn(p.shape, generator=g)
            if case.startswith("ia3"):
                p.copy_(1.0 + 0.3 * noise)
            elif name.endswith("wte.weight"):
                p.copy_(noise)
            elif case.startswith("lora"):
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.3 * noise)


def _adapter_state(model) -> dict[str, torch.Tensor]:
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if _is_adapter_key(k)}
    if not state:
        raise SystemExit("no adapter tensors found")
    return state


@torch.no_grad()
def _logits(model, batches, **extra) -> dict[str, torch.Tensor]:
    return {b: model(**inputs, **extra.get(b, {})).logits.contiguous() for b, inputs in batches.items()}


# ------------------------------------------------------------------------------------------------------------------
# variants: additional AdapterHub forwards that pin a known difference (the test asserts which one peftbench equals)
# ------------------------------------------------------------------------------------------------------------------
def _parallel_reads_ln(model, family: str) -> dict[str, torch.Tensor]:
    """ParBn with its adapter fed the feed-forward block's layer-normed input LN(x) instead of x (peftbench and He
    et al.'s code read LN(x)). A forward pre-hook on each ParallelAdapter replaces only the adapter's input: its
    residual (h, then x) is added in ``post_forward`` from the layer's own tensors, which stay unchanged."""
    handles = []
    for block, ln in _ff_layer_norms(model, family):
        adapter = block.adapters[NAME]
        handles.append(adapter.register_forward_pre_hook(lambda m, a, kw, ln=ln: ((ln(a[0]), *a[1:]), kw),
                                                         with_kwargs=True))  # fmt: skip
    try:
        return _logits(model, FAMILIES[family][1]())
    finally:
        for h in handles:
            h.remove()


def _ff_layer_norms(model, family: str):
    """(the layer holding the feed-forward site's adapters, the layer norm in front of the feed-forward block)."""
    if family == "t5":
        blocks = [*model.encoder.block, *model.decoder.block]
        return [(b.layer[-1], b.layer[-1].layer_norm) for b in blocks]
    return [(layer.output_adapters, layer.post_attention_layernorm) for layer in model.model.layers]


def _t5_decoder_bias(model):
    return model.decoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight


def _prefix_t5_variants(model) -> tuple[dict[str, dict[str, dict[str, torch.Tensor]]], dict[str, torch.Tensor]]:
    """peft (which peftbench's ``prefix`` uses) gives T5 decoder layer i the prefix that AdapterHub's layout reads
    for layer 2i mod n_layers (its ``cat([pkv, pkv], dim=2)`` before splitting into per-layer groups of four): on
    2 layers both get layer 0's. ``tied``: layer 1's key/value rows of ``control_trans.2`` made equal to layer
    0's, so AdapterHub computes the same prefixes peft does. ``nobias``: the decoder's relative attention bias set
    to zero, because AdapterHub shifts real keys by the prefix length in the bias while peft counts the prefix as
    past positions (queries shifted instead): different biases for the same relative distance."""
    groups = model.base_model.prefix_tuning.prefix_tunings[NAME]["self_prefix"]
    last = groups.control_trans[2]
    width = last.out_features // (2 * model.config.num_decoder_layers)  # one layer's keys (or values)
    bias = _t5_decoder_bias(model)
    saved_bias = bias.detach().clone()
    inputs = t5_inputs()
    out = {"untied": {}, "tied": {}}
    with torch.no_grad():
        out["untied"]["bias"] = _logits(model, inputs)
        bias.zero_()
        out["untied"]["nobias"] = _logits(model, inputs)
        original = (last.weight.detach().clone(), last.bias.detach().clone())
        for p in (last.weight, last.bias):
            p[2 * width : 4 * width] = p[0 : 2 * width].clone()
        out["tied"]["nobias"] = _logits(model, inputs)
        bias.copy_(saved_bias)
        out["tied"]["bias"] = _logits(model, inputs)
        tied_state = _adapter_state(model)
        last.weight.copy_(original[0])
        last.bias.copy_(original[1])
    return out, tied_state


def _prefix_llama_positions() -> dict[str, dict[str, torch.Tensor]]:
    """peft keeps the prefix in the KV cache, so the real tokens get positions L..L+T-1 (RoPE rotates the queries
    by them; the prefix keys are never rotated); AdapterHub appends the prefix after RoPE and leaves the tokens at
    0..T-1. ``position_ids`` offset by L make AdapterHub rotate as peft does."""
    extra = {}
    for b, inputs in llama_inputs().items():
        batch, length = inputs["input_ids"].shape
        extra[b] = {"position_ids": (torch.arange(length) + PREFIX_LENGTH).expand(batch, -1)}
    return extra


# ------------------------------------------------------------------------------------------------------------------
def _save_bases(out: Path, families: set[str]) -> dict[str, torch.nn.Module]:
    bases = {}
    for family in sorted(families):
        make, inputs = FAMILIES[family]
        model = make()
        target = out / f"base-{family}"
        model.save_pretrained(target, safe_serialization=True)
        io = {}
        for b, batch in inputs().items():
            io.update({f"{b}.{k}": v.contiguous() for k, v in batch.items()})
        io.update({f"{b}.logits": v for b, v in _logits(model, inputs()).items()})
        save_file(io, str(target / "io.safetensors"))
        bases[family] = model
    return bases


def run_case(case: str, base, out: Path) -> None:
    family, config = CASES[case]
    target = out / case
    target.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(base)
    adapters.init(model)
    model.add_adapter(NAME, config=config)
    model.set_active_adapters(NAME)
    model.eval()
    _randomise(model, case)
    state = _adapter_state(model)
    inputs = FAMILIES[family][1]()
    logits = {f"{b}.main": v for b, v in _logits(model, inputs).items()}
    meta = {"family": family, "config": config.to_dict(), "adapter_name": NAME}
    if case.startswith("parallel_"):
        logits.update({f"{b}.reads_ln": v for b, v in _parallel_reads_ln(model, family).items()})
    elif case == "prefix_t5":
        variants, tied_state = _prefix_t5_variants(model)
        for tie, by_bias in variants.items():
            for bias, per_batch in by_bias.items():
                logits.update({f"{b}.{tie}_{bias}": v for b, v in per_batch.items()})
        save_file(tied_state, str(target / "adapter_tied.safetensors"))
    elif case == "prefixall_t5":
        # T5's relative position bias zeroed in the encoder and the decoder (AdapterHub shifts real keys by the
        # prefix length in it, peftbench counts the prefix as past tokens); cross-attention has no such bias
        with torch.no_grad():
            for stack in (model.encoder, model.decoder):
                stack.block[0].layer[0].SelfAttention.relative_attention_bias.weight.zero_()
            logits.update({f"{b}.nobias": v for b, v in _logits(model, inputs).items()})
    elif case == "prefix_llama":
        shifted = _logits(model, inputs, **_prefix_llama_positions())
        logits.update({f"{b}.positions_after_prefix": v for b, v in shifted.items()})
    elif case == "ia3_llama":
        # What IA3Config()'s default (intermediate_lora=True) adds on LLaMA: a vector on down_proj's *output*.
        probe = copy.deepcopy(base)
        adapters.init(probe)
        probe.add_adapter(NAME, config=IA3Config())
        ff = {k: list(v.shape) for k, v in probe.state_dict().items() if "mlp.down_proj.loras" in k}
        meta["default_ff_vectors"] = ff
    save_file(state, str(target / "adapter.safetensors"))
    save_file(logits, str(target / "logits.safetensors"))
    (target / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("cases", nargs="*", help=f"default: all ({', '.join(CASES)})")
    args = parser.parse_args(argv)
    cases = args.cases or list(CASES)
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}")
    torch.set_num_threads(1)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    bases = _save_bases(args.out, {CASES[c][0] for c in cases})
    for case in cases:
        run_case(case, bases[CASES[case][0]], args.out)
    versions = {"adapters": adapters.__version__, "transformers": transformers.__version__, "torch": torch.__version__}
    summary = {"versions": versions, "cases": cases, "seconds": round(time.perf_counter() - start, 2)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
