"""Exported trained models, read back: the manifest every export carries, the base model's fingerprint and
:func:`load_trained`, the public loader.

``peftbench export`` (:mod:`peftbench.exporter`) writes one of three kinds of directory, each with
``peftbench_export.json`` (the manifest: kind, method and its options, the base model's name, dtype and weights
hash, the run it came from, software versions) and the tokenizer's files:

- ``peft``: a standard peft adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``) that
  ``PeftModel.from_pretrained(base, OUT)`` loads without peftbench (LoRA family, IA3, LN tuning, prefix,
  prompt and P-tuning);
- ``model``: a plain ``save_pretrained`` model directory (``--merge``, and full fine-tuning);
- ``peftbench``: the method's trained tensors (``peftbench_adapter.safetensors``) and its options, for the
  methods no outside library implements (bottleneck and parallel adapters, Compacter; BitFit without
  ``--merge``), which :func:`load_trained` rebuilds through peftbench's method registry.

A tiny preset exists only inside peftbench, so its exports also hold the base itself in ``base/``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from peftbench.config import ModelConfig
from peftbench.errors import PeftbenchError

EXPORT_FILE = "peftbench_export.json"
ADAPTER_WEIGHTS = "peftbench_adapter.safetensors"
BASE_DIR = "base"
FORMAT = "peftbench-export"
FORMAT_VERSION = 1
KINDS = ("peft", "model", "peftbench")


def weights_hash(model: nn.Module, dtype: str = "float32") -> str:
    """SHA-256 of a base model's weights: every ``state_dict`` entry in name order (name, shape and bytes, cast to
    ``dtype`` first, so a float32 checkpoint loaded in bfloat16 matches a bfloat16 base)."""
    from peftbench.models import DTYPES  # transformers: imported where a model is at hand

    target = DTYPES[dtype]
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach()
        if t.is_floating_point():
            t = t.to(target)
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}\n".encode())
        digest.update(t.to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_manifest(out: str | Path) -> dict[str, Any]:
    """An export's ``peftbench_export.json``, checked; one-line errors."""
    path = Path(out) / EXPORT_FILE
    if not Path(out).is_dir():
        raise PeftbenchError(f"{out} is not a directory")
    if not path.is_file():
        raise PeftbenchError(f"{out} is not a peftbench export (no {EXPORT_FILE}; see `peftbench export --help`)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        raise PeftbenchError(f"{path}: not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or manifest.get("kind") not in KINDS:
        raise PeftbenchError(f"{path}: not a peftbench export manifest")
    if manifest.get("version", 0) > FORMAT_VERSION:
        raise PeftbenchError(f"{path}: export format {manifest['version']} is newer than this peftbench reads")
    return manifest


def refuse_other_base(where: str | Path, recorded: dict[str, Any], found: str, fix: str) -> None:
    """Refuses, in one line, base weights whose SHA-256 (``found``, :func:`weights_hash`) is not the one ``recorded``
    (name and sha256) when ``where`` (a run directory, an export) was trained."""
    if found != recorded["sha256"]:
        raise PeftbenchError(
            f"{where} was trained on base {recorded.get('name')!r} with other weights (sha256 "
            f"{recorded['sha256'][:12]}, now {found[:12]}): {fix}"
        )


def load_base(base: str | Path | nn.Module | None, out: str | Path, manifest: dict[str, Any]) -> nn.Module:
    """The base model to put an export on: the given model, a hub name / local path / tiny preset, or (``None``)
    the one the export names (its saved copy in ``base/`` for a tiny preset)."""
    if isinstance(base, nn.Module):
        return base
    record = dict(manifest["model"])
    if base is None:
        saved = Path(out) / BASE_DIR
        base = saved if saved.is_dir() else record["name"]
    record["name"] = str(base)
    record["tokenizer"] = str(Path(out)) if (Path(out) / "tokenizer_config.json").is_file() else None
    from peftbench.models import load_model, load_tokenizer

    cfg = ModelConfig(**record)
    return load_model(cfg, vocab_size=len(load_tokenizer(cfg)))


def load_trained(base: str | Path | nn.Module | None, out: str | Path, *, check: bool = True) -> nn.Module:
    """A trained model from a ``peftbench export`` directory ``out``, in eval mode.

    ``base`` is the base model (a loaded model, a hub name, a local path or a tiny preset; ``None``: the one the
    export names). Its weights must hash to the export's record, else a one-line ``PeftbenchError`` (``check=False``
    skips that). peft exports come back as a ``PeftModel``, merged and full fine-tuning exports as the plain model,
    peftbench adapters as the base with the method applied and its trained tensors loaded.
    """
    manifest = read_manifest(out)
    kind = manifest["kind"]
    if kind == "model" and base is None:
        return _load_plain(out, manifest)
    model = load_base(base, out, manifest)
    if check:
        base = manifest["base"]
        refuse_other_base(out, base, weights_hash(model, base["dtype"]), "load it with the base it was trained on")
    if kind == "model":
        return _load_plain(out, manifest)
    if kind == "peft":
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(out)).eval()
    return _load_peftbench_adapter(model, out, manifest).eval()


def _load_plain(out: str | Path, manifest: dict[str, Any]) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from peftbench.models import DTYPES

    config = AutoConfig.from_pretrained(str(out))
    auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
    return auto.from_pretrained(str(out), dtype=DTYPES[manifest["model"]["dtype"]]).eval()


def _load_peftbench_adapter(model: nn.Module, out: str | Path, manifest: dict[str, Any]) -> nn.Module:
    from peftbench.methods import build_method_config, get_method
    from peftbench.methods.core.precision import keep_trainable_fp32
    from peftbench.weights import apply_trainable, read_trainable

    spec = get_method(manifest["method"])
    model = spec.apply(model, build_method_config(spec.name, manifest["method_options"]))
    if spec.fp32_trainable:
        keep_trainable_fp32(model)
    apply_trainable(model, read_trainable(Path(out) / ADAPTER_WEIGHTS), str(out))
    return model
