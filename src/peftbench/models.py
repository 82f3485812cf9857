"""Loading base models and tokenizers: hub names and local paths, plus tiny random presets.

No model hub is reachable in tests and CI, so the presets build tiny randomly initialised T5 /
LLaMA-architecture / GPT-2 models from configs, with transformers' file-free byte-level tokenizer
(ByT5: one token per UTF-8 byte). Real use passes a hub name or local path to ``from_pretrained``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    ByT5Tokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5Config,
    T5ForConditionalGeneration,
)

from peftbench.config import ModelConfig
from peftbench.errors import PeftbenchError

_VOCAB = 384  # len(ByT5Tokenizer()): 3 special tokens + 256 bytes + 125 sentinel ids


def _tiny_t5(vocab_size: int) -> PreTrainedModel:
    cfg = T5Config(
        vocab_size=vocab_size,
        d_model=128,
        d_ff=256,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        d_kv=32,
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        feed_forward_proj="gated-gelu",  # T5 v1.1 / LM-adapted (the study's google/t5-xl-lm-adapt): wi_0, wi_1, wo
        tie_word_embeddings=False,
    )
    return T5ForConditionalGeneration(cfg)


def _tiny_llama(vocab_size: int) -> PreTrainedModel:
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg)


def _tiny_gpt2(vocab_size: int) -> PreTrainedModel:
    cfg = GPT2Config(
        vocab_size=vocab_size,
        n_embd=128,
        n_layer=3,
        n_head=4,
        n_positions=1024,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )
    return GPT2LMHeadModel(cfg)


TINY_PRESETS: dict[str, Callable[[int], PreTrainedModel]] = {
    "tiny-t5": _tiny_t5,
    "tiny-llama": _tiny_llama,
    "tiny-gpt2": _tiny_gpt2,
}
"""Built-in tiny random models (names usable as ``model.name``)."""

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""``model.dtype`` names -> torch dtypes."""


def is_encoder_decoder(model_or_config: nn.Module | PretrainedConfig) -> bool:
    """True for encoder-decoder (T5-style) models, False for decoder-only ones."""
    config = getattr(model_or_config, "config", model_or_config)
    return bool(getattr(config, "is_encoder_decoder", False))


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The tokenizer for ``cfg``; decoder-only tokenizers get a pad token (EOS) when they lack one."""
    name = cfg.tokenizer or cfg.name
    if cfg.tokenizer is None and name in TINY_PRESETS:
        tokenizer: PreTrainedTokenizerBase = ByT5Tokenizer()
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(name)
        except (OSError, ValueError) as exc:
            hint = "" if Path(name).exists() else f" (not a local path; presets: {', '.join(TINY_PRESETS)})"
            raise PeftbenchError(f"cannot load tokenizer {name!r}: {_first_line(exc)}{hint}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(cfg: ModelConfig, vocab_size: int = _VOCAB) -> PreTrainedModel:
    """The base model for ``cfg``: a tiny preset (seeded random init, ``vocab_size`` rows) or ``from_pretrained``."""
    dtype = DTYPES[cfg.dtype]
    if cfg.name in TINY_PRESETS:
        # A private RNG stream: the preset's weights depend on init_seed only, not on what ran before.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.init_seed)
            model = TINY_PRESETS[cfg.name](vocab_size)
        return keep_fp32_modules(model.to(dtype), dtype)
    _, auto = _auto_config(cfg.name)
    try:
        return auto.from_pretrained(cfg.name, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise PeftbenchError(f"cannot load model {cfg.name!r}: {_first_line(exc)}") from None


def keep_fp32_modules(model: PreTrainedModel, dtype: torch.dtype) -> PreTrainedModel:
    """Puts back in fp32 the weights ``from_pretrained`` keeps in fp32 at this dtype (T5's ``wo`` in fp16:
    ``_keep_in_fp32_modules``; ``_keep_in_fp32_modules_strict`` in fp16 and bf16), so that a tiny preset has the
    dtypes of a loaded checkpoint. Names match as substrings of parameter names, as transformers matches them."""
    keep = (
        set(getattr(model, "_keep_in_fp32_modules_strict", None) or ())
        if dtype in (torch.float16, torch.bfloat16)
        else set()
    )
    if dtype == torch.float16:
        keep |= set(getattr(model, "_keep_in_fp32_modules", None) or ())
    if keep:
        for name, p in model.named_parameters():
            if any(key in name for key in keep):
                p.data = p.data.float()
    return model


def shipped_model_config(name: str) -> Path | None:
    """The ``config.json`` peftbench ships for hub model ``name`` (``configs/models/<org>__<name>/``, package data;
    ``$PEFTBENCH_CONFIGS`` when set), or None: shapes of the study's models without the hub, no weights."""
    import os
    from importlib.resources import files

    if "/" not in name or Path(name).exists():
        return None
    root = Path(os.environ.get("PEFTBENCH_CONFIGS") or str(files("peftbench") / "configs"))
    path = root / "models" / name.replace("/", "__") / "config.json"
    return path if path.is_file() else None


_HUB_CONFIGS: dict[tuple[str, bool], PretrainedConfig] = {}
"""Hub names' configs already looked up in this process: offline without ``HF_HUB_OFFLINE=1`` each lookup waits
through huggingface_hub's retries (about 25 s), and a plan or a sweep asks for the same model many times."""


def _auto_config(name: str, shipped_fallback: bool = True) -> tuple[PretrainedConfig, type]:
    """A hub name's or local path's config and the Auto class that builds it (one-line errors); a hub name that
    cannot be fetched (offline) falls back to the shipped ``config.json`` (:func:`shipped_model_config`) unless
    ``shipped_fallback`` is off (a run needs the model itself, not only its shape). A hub name is looked up once
    per process (a copy is returned); a local path is read every time (it may change)."""
    key = (name, shipped_fallback)
    config = _HUB_CONFIGS.get(key)
    if config is None:
        config = _read_auto_config(name, shipped_fallback)
        if not Path(name).exists():
            _HUB_CONFIGS[key] = config
    config = copy.deepcopy(config)
    return config, (AutoModelForSeq2SeqLM if is_encoder_decoder(config) else AutoModelForCausalLM)


def _read_auto_config(name: str, shipped_fallback: bool) -> PretrainedConfig:
    try:
        return AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as exc:
        shipped = shipped_model_config(name) if shipped_fallback else None
        if shipped is None:
            hint = "" if Path(name).exists() else f" (not a local path; presets: {', '.join(TINY_PRESETS)})"
            raise PeftbenchError(f"cannot load model {name!r}: {_first_line(exc)}{hint}") from None
        from huggingface_hub import is_offline_mode

        hint = "" if is_offline_mode() else "; HF_HUB_OFFLINE=1 skips the hub lookup"
        logging.getLogger("peftbench").warning(
            "%s: %s; using the config.json peftbench ships for it (shapes only%s)",
            name,
            _first_line(exc).rstrip("."),
            hint,
        )
        return AutoConfig.from_pretrained(str(shipped.parent))


def check_model(cfg: ModelConfig) -> None:
    """Raises the one-line error loading ``cfg`` would give when its configuration cannot be read (a name that
    is neither a preset, a local path nor a reachable hub model). Reads ``config.json`` only, and not the shipped
    copy: a run loads the weights from where the config comes from."""
    if cfg.name not in TINY_PRESETS:
        _auto_config(cfg.name, shipped_fallback=False)


def model_skeleton(cfg: ModelConfig) -> PreTrainedModel:
    """The model's architecture with weights on the ``meta`` device, in ``cfg.dtype`` as :func:`load_model` loads it:
    shapes, counts and bytes, no memory, no download.

    Presets get the vocabulary of their tokenizer (as ``build_model`` does); hub names and local paths need
    only their ``config.json``.
    """
    dtype = DTYPES[cfg.dtype]
    if cfg.name in TINY_PRESETS:
        vocab = len(load_tokenizer(cfg))
        with torch.device("meta"):
            return keep_fp32_modules(TINY_PRESETS[cfg.name](vocab).to(dtype), dtype)
    config, auto = _auto_config(cfg.name)
    with torch.device("meta"):  # (accelerate's init_empty_weights would untie tied embeddings)
        model = keep_fp32_modules(auto.from_config(config, dtype=dtype), dtype)
        return _untie_t5_v1_1(model)


def _untie_t5_v1_1(model: PreTrainedModel) -> PreTrainedModel:
    """A T5 v1.1 / LM-adapt checkpoint has an ``lm_head`` of its own (its config.json says
    ``tie_word_embeddings: false``, which transformers 5 keeps as ``scale_decoder_outputs=False``), and
    ``from_pretrained`` loads it untied; a model built from the config alone ties it to the shared embedding. The
    skeleton gets its own ``lm_head`` so that counts and memory plans are the checkpoint's."""
    config = model.config
    head, shared = model.get_output_embeddings(), model.get_input_embeddings()
    if getattr(config, "scale_decoder_outputs", True) is False and head is not None and head.weight is shared.weight:
        head.weight = torch.nn.Parameter(torch.empty_like(shared.weight))
    return model


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000) -> PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer trained on ``texts`` (for tiny demo models; no files needed).

    Special tokens match the tiny presets: ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2; an EOS is appended
    to every encoded text, as T5's tokenizer does.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


BASE_PARAMS_ATTR = "peftbench_base_params"
"""Attribute ``build_model`` sets on a model with a method applied: the base model's parameter count."""


def base_parameters(model: nn.Module) -> int:
    """The base model's parameters (before a method added its own): the denominator of every trainable share
    peftbench reports, as in the study and ``peftbench methods``. Recorded by ``build_model``; a model without
    the record counts all its parameters."""
    recorded = getattr(model, BASE_PARAMS_ATTR, None)
    return int(recorded) if recorded is not None else count_parameters(model)[1]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; tied parameters are counted once."""
    trainable = total = 0
    for p in model.parameters():  # parameters() yields each tensor once, so ties count once
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
