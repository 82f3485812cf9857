"""``peftbench export RUN_DIR OUT [--merge]``: a run's trained weights in formats other tools load.

Which format a method gets (the manifest and the kinds are described in :mod:`peftbench.trained`):

- peft methods (LoRA family, IA3, LN tuning, prefix / prompt / P-tuning): a standard peft adapter directory;
- ``--merge`` (methods whose update folds into the base weights, as their spec's ``merge`` says: the LoRA family,
  IA3, LN tuning, BitFit, and full fine-tuning, which is always exported this way): a plain ``save_pretrained`` model;
- the hand-written methods (bottleneck and parallel adapters, Compacter; BitFit without ``--merge``): the
  method's tensors and options, loaded by :func:`peftbench.load_trained`.

The export is built in a temporary sibling directory and renamed into place, so ``OUT`` is either complete or
absent. The weights exported are the run's ``trainable.safetensors``: those its test split was scored with.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from peftbench.config import ExperimentConfig
from peftbench.configure import method_config
from peftbench.errors import PeftbenchError
from peftbench.io import atomic_write_json, atomic_write_text, temporary_dir
from peftbench.methods import all_methods, get_method
from peftbench.models import TINY_PRESETS
from peftbench.recipe.rundir import check_base, check_weights, config_hash, load_trainable, read_run_config
from peftbench.recipe.runfiles import WEIGHTS_FILE, finished_metrics
from peftbench.recipe.scoring import versions
from peftbench.recipe.setup import build_model
from peftbench.trained import ADAPTER_WEIGHTS, BASE_DIR, EXPORT_FILE, FORMAT, FORMAT_VERSION, weights_hash
from peftbench.weights import write_trainable


def mergeable() -> str:
    """The methods ``--merge`` works for, as the registry says (:attr:`MethodSpec.merge`)."""
    names = ", ".join(m.name for m in all_methods() if m.merge != "no")
    bitfit = "BitFit where the architecture has a place for its biases: GPT-2; LLaMA with layer_norm_biases: false"
    return f"{names} ({bitfit})"


@dataclass
class ExportResult:
    """What ``export_run`` wrote."""

    out: Path
    kind: str
    """``peft``, ``model`` or ``peftbench`` (see :mod:`peftbench.trained`)."""
    manifest: dict[str, Any]


def export_run(run_dir: str | Path, out: str | Path, *, merge: bool = False) -> ExportResult:
    """Exports the trained weights of ``run_dir`` to the new directory ``out`` (see the module docstring)."""
    run_dir, out = Path(run_dir), Path(out)
    cfg = read_run_config(run_dir)
    metrics = finished_metrics(run_dir) or {}
    if metrics.get("method") == "untrained":
        raise PeftbenchError(f"{run_dir} is an untrained baseline: there are no trained weights to export")
    if not (run_dir / WEIGHTS_FILE).is_file():
        raise PeftbenchError(f"{run_dir} has no {WEIGHTS_FILE}: the run has not finished training")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PeftbenchError(f"{out} already exists and is not empty; choose a new directory")

    base, tokenizer = build_model(cfg, apply_method=False)
    sha256 = weights_hash(base, cfg.model.dtype)
    check_base(run_dir, sha256)  # the weights were trained on the base recorded in base.json, not another
    base_record = {"name": cfg.model.name, "dtype": cfg.model.dtype, "sha256": sha256, "saved_in": None}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_dir(out.parent, prefix=f".{out.name}.")
    try:
        if cfg.model.name in TINY_PRESETS and not (merge or get_method(cfg.method_name).merge == "always"):
            base.save_pretrained(tmp / BASE_DIR)  # a preset exists only in peftbench: ship its weights
            tokenizer.save_pretrained(tmp / BASE_DIR)
            base_record["saved_in"] = BASE_DIR
        del base
        model, _ = build_model(cfg)
        check_weights(run_dir)
        load_trainable(model, run_dir / WEIGHTS_FILE, cfg)
        model.eval()
        kind = _write(model, cfg, tmp, merge)
        tokenizer.save_pretrained(tmp)
        manifest = _manifest(cfg, run_dir, kind, merge, base_record, metrics)
        atomic_write_json(tmp / EXPORT_FILE, manifest)
        card = model_card(manifest, bool(getattr(model.config, "is_encoder_decoder", False)), str(out))
        atomic_write_text(tmp / "README.md", card)  # peft's save_pretrained leaves an empty template there
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out, kind, manifest)


def _write(model: nn.Module, cfg: ExperimentConfig, tmp: Path, merge: bool) -> str:
    """Writes the weights in the method's format; returns the kind."""
    from peft import PeftModel

    name = cfg.method_name
    spec = get_method(name)
    if merge and spec.merge == "no":
        prompts = isinstance(model, PeftModel) and model.peft_config["default"].is_prompt_learning
        added = "virtual tokens to the input" if prompts else "modules of its own to the model"
        raise PeftbenchError(
            f"{name} adds {added}, which do not fold into the base weights: export without --merge (--merge works "
            f"for {mergeable()})"
        )
    if spec.merge == "always" or (merge and spec.merge == "in_place"):
        return _save_plain(model, name, tmp)
    if isinstance(model, PeftModel):
        config = model.peft_config["default"]
        if merge:  # spec.merge == "peft"
            return _save_plain(model.merge_and_unload(), name, tmp)
        if config.peft_type.value == "PREFIX_TUNING" and getattr(model.config, "is_encoder_decoder", False):
            raise PeftbenchError(
                "prefix tuning on an encoder-decoder model cannot be exported for peft: peft's loader gives decoder "
                "layers i and i + n/2 the same prefix (peftbench builds one per layer, methods/prefix.py), so peft "
                "would compute another model; load the run with peftbench.load_trained"
            )
        config.base_model_name_or_path = cfg.model.name
        with warnings.catch_warnings():  # a preset's name is no path: peft would warn it cannot check the vocabulary
            warnings.filterwarnings("ignore", message="Could not find a config file")
            model.save_pretrained(str(tmp))
        return "peft"
    write_trainable(model, tmp / ADAPTER_WEIGHTS, metadata={"method": name, "config_hash": config_hash(cfg)})
    return "peftbench"


def _save_plain(model: nn.Module, method: str, tmp: Path) -> str:
    """Saves a plain transformers model, after checking that its architecture has a place for every weight (BitFit's
    added biases: LLaMA-style configs have switches for them, T5 has none)."""
    config = model.config
    names = {n for n, _ in model.named_parameters()}
    for flag, part in (("attention_bias", "self_attn."), ("mlp_bias", "mlp.")):
        if hasattr(config, flag) and any(part in n and n.endswith(".bias") for n in names):
            setattr(config, flag, True)
    with torch.device("meta"):
        skeleton = type(model)(config)
    dropped = sorted(set(model.state_dict()) - set(skeleton.state_dict()))
    if dropped:
        raise PeftbenchError(
            f"{type(model).__name__} has no place for {len(dropped)} of {method}'s trained tensor(s) (e.g. "
            f"{dropped[0]}), so a plain model cannot hold them: export without --merge and load with "
            "peftbench.load_trained"
        )
    model.save_pretrained(str(tmp))
    return "model"


_LOADING = {
    "peft": (
        "from peft import PeftModel\nfrom transformers import {auto}\n\n"
        'base = {auto}.from_pretrained("{base}")\nmodel = PeftModel.from_pretrained(base, "{out}")'
    ),
    "model": 'from transformers import {auto}\n\nmodel = {auto}.from_pretrained("{out}")',
    "peftbench": 'import peftbench\n\nmodel = peftbench.load_trained(None, "{out}")  # None: the base it names',
}


def model_card(manifest: dict[str, Any], encoder_decoder: bool, out: str = "OUT") -> str:
    """The export's README.md: what it is (method, base model, how it scored on held-out tasks) and how to load it."""
    base, run, kind = manifest["base"], manifest["run"], manifest["kind"]
    name = base["name"] if base["saved_in"] is None else f"{out}/{base['saved_in']}"
    auto = "AutoModelForSeq2SeqLM" if encoder_decoder else "AutoModelForCausalLM"
    options = ", ".join(f"{k}={v}" for k, v in manifest["method_options"].items())
    hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", base["name"]) and not Path(base["name"]).exists()
    front = [f"base_model: {base['name']}"] if hub_id else []  # the Hub's field takes a repo id, not a path
    library = {"peft": ["library_name: peft"], "model": ["library_name: transformers"]}.get(kind, [])
    tags = f"tags: [peftbench, {manifest['method']}, super-natural-instructions]"
    lines = ["---", *front, *library, tags, "---", "", f"# {manifest['method']} on {base['name']}", ""]
    lines += [
        f"Exported by peftbench from the run `{run['name']}` (config hash {run['config_hash']}): "
        f"{'a plain model with the update merged' if manifest['merged'] else f'a {kind} adapter'}.",
        "",
        f"- method: `{manifest['method']}` ({options or 'no options'})",
        f"- base model: `{base['name']}`, {base['dtype']}, weights SHA-256 `{base['sha256'][:16]}…`"
        + (f" (shipped in `{base['saved_in']}/`)" if base["saved_in"] else ""),
    ]
    overall = run.get("overall") or {}
    if overall:
        lines.append(
            f"- held-out SuperNI test tasks: ROUGE-L {overall.get('rougeL', float('nan')):.2f}, exact match "
            f"{overall.get('exact_match', float('nan')):.2f} over {overall.get('num_examples', '?')} examples"
        )
    lines += ["", "Load it:", "", "```python", _LOADING[kind].format(auto=auto, base=name, out=out), "```", ""]
    return "\n".join(lines)


def _manifest(
    cfg: ExperimentConfig, run_dir: Path, kind: str, merge: bool, base: dict[str, Any], metrics: dict[str, Any]
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kind": kind,
        "merged": merge or get_method(cfg.method_name).merge == "always",
        "method": cfg.method_name,
        "method_options": dataclasses.asdict(method_config(cfg)),
        "model": dataclasses.asdict(cfg.model),
        "base": base,
        "run": {
            "name": run_dir.name,
            "config_hash": config_hash(cfg),
            "weights": metrics.get("weights"),
            "overall": metrics.get("overall"),
        },
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "versions": versions(),
    }
