"""What a run starts from: the model with its method applied, and the data encoded for it."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from peftbench.config import ExperimentConfig
from peftbench.configure import method_config
from peftbench.data.cache import Lengths, PreparedData
from peftbench.data.pipeline import prepare_features
from peftbench.demodata import DEMO_DATA
from peftbench.demodata import data_dir as demo_data_dir
from peftbench.errors import PeftbenchError
from peftbench.io import cache_dir
from peftbench.methods import get_method
from peftbench.methods.core.activations import enable_gradient_checkpointing  # noqa: F401  (re-exported)
from peftbench.methods.core.budget import match_budget
from peftbench.methods.core.registry import apply_method as apply_spec
from peftbench.models import BASE_PARAMS_ATTR, count_parameters, is_encoder_decoder, load_model, load_tokenizer
from peftbench.trained import weights_hash
from peftbench.training.fsdp import gather_trainable
from peftbench.weights import apply_trainable

log = logging.getLogger("peftbench")


# --------------------------------------------------------------------------------------------------
# Model


BASE_SHA_ATTR = "peftbench_base_sha256"
"""Where ``build_model(..., hash_base=True)`` leaves the SHA-256 of the base weights (before the method)."""


def build_model(
    cfg: ExperimentConfig, apply_method: bool = True, *, hash_base: bool = False
) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """The base model with the configured method applied, and its tokenizer.

    With ``hash_base`` the SHA-256 of the base weights as loaded (:func:`peftbench.trained.weights_hash`) is
    left in the model's ``peftbench_base_sha256`` attribute: runs record it, re-evaluation and export check it.

    The model records the base model's parameter count (``models.base_parameters``), before the method added
    any. The method's trainable parameters are fp32 whatever ``model.dtype`` is (see ``methods.precision``); the
    frozen base keeps ``model.dtype``. Full fine-tuning is the exception: it trains the base weights as loaded
    (``check_master_weights`` refuses to train it in half precision without fp32 master weights).
    """
    tokenizer = load_tokenizer(cfg.model)
    model = load_model(cfg.model, vocab_size=len(tokenizer))
    base = count_parameters(model)[1]
    base_sha = weights_hash(model, cfg.model.dtype) if hash_base else None
    if apply_method:
        model = apply_spec(get_method(cfg.method_name), model, method_config(cfg), cfg.model.name)
    if base_sha is not None:  # on the outer module (a method may wrap the model)
        setattr(model, BASE_SHA_ATTR, base_sha)
    setattr(model, BASE_PARAMS_ATTR, base)  # the denominator of the trainable share (models.base_parameters)
    return model, tokenizer


def unsharded(cfg: ExperimentConfig, sharded: nn.Module, device: torch.device) -> nn.Module:
    """A model sharded by FSDP, made whole for evaluation (every rank must call): the trainable weights are
    gathered onto the main process and put into a freshly built model there; the other ranks build the same
    model and get rank 0's weights before the test evaluation (``chosen_weights.share_weights``), so that every rank
    can generate its share. The frozen base is rebuilt from ``model.name`` exactly as ``peftbench evaluate``
    does."""
    trainable = gather_trainable(sharded)  # the full tensors on the main process, {} on the others
    model, _ = build_model(cfg)
    if trainable:
        apply_trainable(model, trainable, "the gathered FSDP weights")
    return model.to(device)


NOT_SHARDABLE = {
    "adalora": "its orthogonality regulariser reads the LoRA matrices outside the blocks' forward, where FSDP keeps "
    "them sharded",
}
"""Methods that cannot train under FSDP, with the reason (every other method is tested sharded:
tests/training/test_fsdp.py)."""


def check_shardable(cfg: ExperimentConfig) -> None:
    """Refuses (one line) a method that cannot train with FSDP; use DDP (torchrun) for it."""
    reason = NOT_SHARDABLE.get(get_method(cfg.method_name).name)
    if reason:
        raise PeftbenchError(f"method {cfg.method_name!r} cannot train with FSDP: {reason}; launch it with DDP")


def check_master_weights(cfg: ExperimentConfig, deepspeed: bool) -> None:
    """Refuses (one line) to train a method without fp32 trainables, i.e. full fine-tuning, in a bf16/fp16 model:
    AdamW on half-precision weights loses most updates. DeepSpeed with mixed precision keeps fp32 master weights
    of its own, so a half-precision model is fine under it."""
    spec = get_method(cfg.method_name)
    if spec.fp32_trainable or cfg.model.dtype == "float32":
        return
    if deepspeed and cfg.train.mixed_precision != "no":
        return
    raise PeftbenchError(
        f"method {spec.name!r} trains the base weights and would update them in {cfg.model.dtype}, losing most "
        f"updates: use model.dtype: float32 with train.mixed_precision: bf16 (fp32 master weights), or DeepSpeed"
    )


def budget_record(cfg: ExperimentConfig, trainable: int) -> dict[str, Any] | None:
    """What ``method.budget`` asked for and chose (None without a budget); ``achieved`` is the built model's count."""
    budget = cfg.method.get("budget")
    if budget is None:
        return None
    knob = get_method(cfg.method_name).size_knob
    skip = {"name", "budget", knob.field if knob else ""}
    options = {k: v for k, v in cfg.method.items() if k not in skip}
    return {**match_budget(cfg.method_name, cfg.model, options, budget).as_dict(), "achieved": trainable}


# --------------------------------------------------------------------------------------------------
# Data


def prepare_data(
    cfg: ExperimentConfig, tokenizer: PreTrainedTokenizerBase, model: nn.Module, progress: bool = False
) -> PreparedData:
    """The configured SuperNI split, encoded and tokenised for this model (through the feature cache when
    ``data.cache`` is on; see :mod:`peftbench.data.cache`)."""
    d = cfg.data
    if d.data_dir == DEMO_DATA:
        d = dataclasses.replace(d, data_dir=str(demo_data_dir()))
    enc_dec = is_encoder_decoder(model)
    source_limit = d.max_source_length
    if not enc_dec:  # prompt and target share the context: leave room for the target
        positions = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
        if positions:
            source_limit = min(source_limit, int(positions) - d.max_target_length)
    # demonstrations must fit the prompt limit the model really has (decoder-only: capped above)
    lengths = Lengths(source_limit, d.max_target_length, enc_dec, demonstration_budget=source_limit)
    cache = feature_cache_dir() if d.cache else None
    return prepare_features(d, tokenizer, lengths, cache_dir=cache, log=log, progress=progress)


def feature_cache_dir() -> Path:
    """Where tokenised examples are cached: ``$PEFTBENCH_CACHE/features`` (default ~/.cache/peftbench/features)."""
    return cache_dir() / "features"
