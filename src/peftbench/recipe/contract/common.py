"""What the contract's checks share: the tiny models, the config they are built from, a training batch."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from peftbench.config import ExperimentConfig
from peftbench.configure import config_from_dict
from peftbench.data.collate import training_batch
from peftbench.data.tokenize import Features, tokenize_example
from peftbench.models import is_encoder_decoder
from peftbench.recipe.setup import build_model

MODELS = ("tiny-t5", "tiny-llama")
DOC = "docs/own-method.md"


class Skip(Exception):
    """A check that does not apply to this method or machine; the message says why."""


PAIRS = [
    ("Definition: Copy the input.\n\nNow complete the following example -\nInput: red fox.\nOutput: ", "red fox"),
    ("Definition: Answer yes or no.\n\nNow complete the following example -\nInput: a cat.\nOutput: ", "yes"),
    ("Definition: Add the numbers.\n\nNow complete the following example -\nInput: 2 and 3.\nOutput: ", "5"),
]


def contract_config(model: str, method: str, *, dtype: str = "float32", **method_options: Any) -> ExperimentConfig:
    """The config the checks build models from (``method_options`` may hold ``module``)."""
    raw = {"model": {"name": model, "dtype": dtype}, "method": {"name": method, **method_options}, "seed": 7}
    return config_from_dict(raw)


def build(cfg: ExperimentConfig, **kwargs: Any) -> tuple[nn.Module, Any]:
    """``build_model`` from a fixed seed (the same method weights every time)."""
    torch.manual_seed(0)
    return build_model(cfg, **kwargs)


def given_options(cfg: ExperimentConfig) -> dict[str, Any]:
    """The method's options as given (``module`` included), without its name."""
    return {k: v for k, v in cfg.method.items() if k != "name"}


def train_batch(model: nn.Module, tokenizer) -> dict[str, torch.Tensor]:
    """A training batch of three short SuperNI-style examples."""
    enc_dec = is_encoder_decoder(model)
    feats = [
        Features(str(i), "t", "c", *tokenize_example(tokenizer, s, t, 128, 16, enc_dec), (t,))
        for i, (s, t) in enumerate(PAIRS)
    ]
    return training_batch(feats, tokenizer.pad_token_id, enc_dec)
