"""``peftbench export``: standard peft adapters loaded without peftbench, merged plain models, peftbench adapters
through ``peftbench.load_trained``, and the base-model check every export carries.

Each run directory here holds what ``peftbench train`` leaves for export (``config.yaml`` and
``trainable.safetensors``); its trainable weights are moved away from their initial values (LoRA's B starts at 0,
IA3's vectors at 1), so an export that lost them would show. The reference logits are peftbench's own evaluation
model: ``build_model`` + ``load_trainable``, what ``peftbench evaluate`` scores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from peftbench.config import dump_config
from peftbench.configure import config_from_dict
from peftbench.errors import PeftbenchError
from peftbench.exporter import export_run
from peftbench.io import load_tensors, save_tensors
from peftbench.recipe.rundir import load_trainable, save_trainable
from peftbench.recipe.setup import build_model
from peftbench.trained import EXPORT_FILE, load_trained, read_manifest, weights_hash

PEFT_METHODS = ("lora", "dora", "adalora", "loha", "lokr", "vera", "ia3", "ia3_ff", "ln_tuning", "prefix", "prompt",
                "ptuning")  # fmt: skip
MERGEABLE = ("lora", "dora", "adalora", "loha", "lokr", "vera", "ia3", "ia3_ff", "ln_tuning", "bitfit", "full")
HANDWRITTEN = ("adapter_houlsby", "adapter_pfeiffer", "adapter_parallel", "compacter", "compacter_pp", "bitfit")
MODELS = ("tiny-t5", "tiny-llama")
# Merging adds the update to the weight once instead of computing W x + ΔW x: the same sums in another order, so
# fp32 logits agree to rounding (measured: at most 3.2e-5 on tiny-t5, whose logits reach ±72; 6e-7 on tiny-llama).
MERGE_RTOL, MERGE_ATOL = 1e-5, 1e-4

IDS = torch.tensor([[5, 6, 7, 8, 9, 10, 11], [12, 13, 14, 15, 0, 0, 0]])
MASK = (torch.arange(IDS.shape[1]) < torch.tensor([[7], [4]])).long()


def _inputs(enc_dec: bool) -> dict[str, torch.Tensor]:
    batch = {"input_ids": IDS, "attention_mask": MASK}
    if enc_dec:
        batch["decoder_input_ids"] = IDS[:, :4]
    return batch


def _make_run(root: Path, model_name: str, method: str) -> tuple[Path, torch.Tensor]:
    """A run directory with moved trainable weights, and the logits of peftbench's evaluation model on it."""
    cfg = config_from_dict({"model": {"name": model_name}, "method": {"name": method}, "seed": 3})
    model, _ = build_model(cfg)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    run_dir = root / f"{model_name}-{method}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    save_trainable(model, run_dir / "trainable.safetensors", cfg)
    evaluated, _ = build_model(cfg)
    load_trainable(evaluated, run_dir / "trainable.safetensors")
    evaluated.eval()
    with torch.no_grad():
        logits = evaluated(**_inputs(model_name == "tiny-t5")).logits
    return run_dir, logits


# The fresh process: no peftbench. A meta-path finder makes any import of peftbench fail (the venv has it installed,
# so leaving it off sys.path is not enough); the script then asserts that nothing imported it.
LOADER = r"""
import importlib.abc, json, sys

class NoPeftbench(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "peftbench" or name.startswith("peftbench."):
            raise ImportError("peftbench is blocked in this process")
        return None

sys.meta_path.insert(0, NoPeftbench())
import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

for job in json.loads(sys.argv[1]):
    auto = AutoModelForSeq2SeqLM if job["enc_dec"] else AutoModelForCausalLM
    if job["kind"] == "peft":
        base = auto.from_pretrained(job["out"] + "/base")
        model = PeftModel.from_pretrained(base, job["out"])
    else:
        model = auto.from_pretrained(job["out"])
    model.eval()
    with torch.no_grad():
        logits = model(**load_file(job["inputs"])).logits
    save_file({"logits": logits.contiguous()}, job["result"])
assert not any(m == "peftbench" or m.startswith("peftbench.") for m in sys.modules), "peftbench was imported"
print("ok")
"""


def _queue(jobs: list[dict], expected: dict, tmp_path, kind: str, out, model_name: str, method: str, logits) -> None:
    """Adds a job for ``_load_elsewhere``: load ``out`` as ``kind`` and compute logits on the model's fixed inputs."""
    inputs = tmp_path / f"{model_name}-inputs.safetensors"
    save_tensors(_inputs(model_name == "tiny-t5"), inputs)
    job = {"kind": kind, "out": str(out), "enc_dec": model_name == "tiny-t5", "inputs": str(inputs),
           "result": str(tmp_path / f"{model_name}-{method}.logits")}  # fmt: skip
    jobs.append(job)
    expected[job["result"]] = (method, logits)


def _load_elsewhere(jobs: list[dict], tmp: Path) -> None:
    """Runs LOADER in a new interpreter, outside the checkout and with no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", LOADER, json.dumps(jobs)], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


class _Runs(dict):
    """(model, method) -> (run directory, reference logits), made on first look-up."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, pair: tuple[str, str]) -> tuple[Path, torch.Tensor]:
        self[pair] = made = _make_run(self.root, *pair)
        return made


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> _Runs:
    return _Runs(tmp_path_factory.mktemp("export-runs"))


@pytest.mark.slow
@pytest.mark.xdist_group("export")
def test_peft_exports_load_with_peft_alone_and_give_the_same_logits(runs, tmp_path):
    """``PeftModel.from_pretrained(base, OUT)`` in a process where peftbench cannot be imported: bit-identical
    logits to peftbench's evaluation model, for every peft method on an encoder-decoder and a decoder-only model."""
    jobs, expected = [], {}
    for model_name in MODELS:
        for method in PEFT_METHODS:
            if (model_name, method) == ("tiny-t5", "prefix"):
                continue  # refused: peft's loader lays T5 prefixes out differently (test below)
            run_dir, logits = runs[(model_name, method)]
            out = tmp_path / f"{model_name}-{method}"
            result = export_run(run_dir, out)
            assert result.kind == "peft"
            assert {"adapter_config.json", "adapter_model.safetensors", EXPORT_FILE} <= {p.name for p in out.iterdir()}
            assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == model_name
            _queue(jobs, expected, tmp_path, "peft", out, model_name, method, logits)
    _load_elsewhere(jobs, tmp_path)
    for path, (method, logits) in expected.items():
        got = load_tensors(path)["logits"]
        if method == "ptuning":
            # peft stores the prompt its LSTM encoder produces, computed when saving from an input laid out otherwise
            # than in the forward pass; the LSTM kernels round that differently (measured: 1.2e-7 in the prompt,
            # 1.9e-5 in logits of ±24), so agreement is to rounding, as for merges
            assert torch.allclose(got, logits, rtol=MERGE_RTOL, atol=MERGE_ATOL), f"{path}: {method}"
            continue
        assert torch.equal(got, logits), f"{path}: {method} logits differ by {(got - logits).abs().max():.3g}"


@pytest.mark.slow
@pytest.mark.xdist_group("export")
def test_the_model_card_says_what_the_export_is_and_its_loading_code_runs(runs, tmp_path):
    """README.md of an export (peft would leave its empty template, ``base_model: ''``): the method, the base and
    the Python that loads it, which runs as written in a process without peftbench."""
    snippets = []
    for model_name, method, merge in (("tiny-llama", "lora", False), ("tiny-t5", "ia3", True)):
        out = tmp_path / f"{model_name}-{method}"
        export_run(runs[(model_name, method)][0], out, merge=merge)
        card = (out / "README.md").read_text()
        assert card.startswith("---\n") and "base_model: ''" not in card and f"# {method} on {model_name}" in card
        assert f"- method: `{method}`" in card and "weights SHA-256" in card
        assert ("shipped in `base/`" in card) != merge  # a preset's base ships with an adapter, not with a merge
        snippets.append(card.split("```python\n", 1)[1].split("```", 1)[0])
    out = tmp_path / "tiny-t5-adapter_houlsby"  # a peftbench adapter: its snippet loads it through peftbench
    export_run(runs[("tiny-t5", "adapter_houlsby")][0], out)
    card = (out / "README.md").read_text()
    assert "base_model:" not in card  # a preset is no Hub id: the field is left out, the base ships in base/
    scope: dict = {}
    exec(card.split("```python\n", 1)[1].split("```", 1)[0], scope)
    assert isinstance(scope["model"], torch.nn.Module) and not scope["model"].training
    script = LOADER.split("import torch", 1)[0] + "".join(f"{s}\nassert model is not None\n" for s in snippets)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    command = [sys.executable, "-c", script]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.xdist_group("export")
def test_merged_exports_are_plain_models_with_the_same_logits(runs, tmp_path):
    """``--merge``: a plain ``save_pretrained`` directory transformers loads alone (no peft, no peftbench), logits
    allclose to the evaluation model's (rtol 1e-5, atol 1e-4, fp32). BitFit on T5 and LLaMA is refused (next test):
    their RMS norms have no bias for the one BitFit adds."""
    jobs, expected = [], {}
    for model_name in MODELS:
        for method in MERGEABLE:
            if (model_name, method) in (("tiny-t5", "bitfit"), ("tiny-llama", "bitfit")):
                continue  # T5 and LLaMA have no place for BitFit's layer-norm biases (next test)
            run_dir, logits = runs[(model_name, method)]
            out = tmp_path / f"{model_name}-{method}"
            result = export_run(run_dir, out, merge=True)
            assert (
                result.kind == "model"
                and (out / "config.json").is_file()
                and not (out / "adapter_config.json").exists()
            )
            _queue(jobs, expected, tmp_path, "model", out, model_name, method, logits)
    _load_elsewhere(jobs, tmp_path)
    for path, (method, logits) in expected.items():
        got = load_tensors(path)["logits"]
        assert torch.allclose(got, logits, rtol=MERGE_RTOL, atol=MERGE_ATOL), (
            f"{path}: {method} merged logits differ by {(got - logits).abs().max():.3g}"
        )


@pytest.mark.xdist_group("export")
@pytest.mark.parametrize(
    ("model_name", "method", "reason"),
    [
        ("tiny-t5", "prompt", "virtual tokens"),
        ("tiny-llama", "prefix", "virtual tokens"),
        ("tiny-t5", "adapter_houlsby", "modules of its own"),
        ("tiny-t5", "compacter", "modules of its own"),
        ("tiny-t5", "bitfit", "T5ForConditionalGeneration has no place"),
        ("tiny-llama", "bitfit", "LlamaForCausalLM has no place"),
    ],
)
def test_merge_is_refused_where_the_update_does_not_fold(runs, tmp_path, cli, model_name, method, reason):
    run_dir, _ = runs[(model_name, method)]
    out = tmp_path / "out"
    done = cli("export", str(run_dir), str(out), "--merge")
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip()
    assert err.startswith("peftbench: error: ") and "\n" not in err and reason in err, err
    assert not out.exists() and not list(tmp_path.glob(".out.*")), "a refused export left files behind"


@pytest.mark.xdist_group("export")
def test_t5_prefix_export_for_peft_is_refused(runs, tmp_path, cli):
    """peft's own loader would give T5's decoder layers i and i + n/2 one prefix (its get_prompt layout), not the
    per-layer prefixes peftbench trained and evaluates: refused in one line instead of a silently other model."""
    run_dir, _ = runs[("tiny-t5", "prefix")]
    done = cli("export", str(run_dir), str(tmp_path / "out"))
    err = done.stderr.strip()
    assert done.returncode == 2 and "\n" not in err and "peft's loader gives decoder layers" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.xdist_group("export")
def test_handwritten_adapters_load_through_load_trained(runs, tmp_path):
    """Bottleneck / parallel adapters, Compacter and BitFit: a self-describing directory (options, tensors, the
    base's name and hash) that ``peftbench.load_trained`` rebuilds with the same logits, from the saved base or from
    the preset's name."""
    for model_name in MODELS:
        for method in HANDWRITTEN:
            run_dir, logits = runs[(model_name, method)]
            out = tmp_path / f"{model_name}-{method}"
            assert export_run(run_dir, out).kind == "peftbench"
            manifest = read_manifest(out)
            assert manifest["method"] == method and manifest["base"]["name"] == model_name
            assert manifest["method_options"] and "peftbench_adapter.safetensors" in {p.name for p in out.iterdir()}
            for base in (None, model_name):
                model = load_trained(base, out)
                with torch.no_grad():
                    got = model(**_inputs(model_name == "tiny-t5")).logits
                assert torch.equal(got, logits), f"{method} on {model_name} (base {base!r})"


@pytest.mark.xdist_group("export")
def test_every_export_records_its_base_and_refuses_another(runs, tmp_path, cli):
    run_dir, _ = runs[("tiny-llama", "lora")]
    out = tmp_path / "lora"
    done = cli("export", str(run_dir), str(out))
    assert done.returncode == 0, done.stderr
    assert f"wrote {out} (peft:" in done.stdout
    manifest = read_manifest(out)
    base, _ = build_model(config_from_dict({"model": {"name": "tiny-llama"}, "method": {"name": "lora"}}), False)
    assert manifest["base"] == {"name": "tiny-llama", "dtype": "float32", "sha256": weights_hash(base),
                                "saved_in": "base"}  # fmt: skip
    assert manifest["run"]["name"] == run_dir.name and manifest["versions"]["peft"]
    load_trained(base, out)  # the right base: accepted

    other = config_from_dict({"model": {"name": "tiny-llama", "init_seed": 1}, "method": {"name": "lora"}})
    wrong, _ = build_model(other, apply_method=False)
    with pytest.raises(PeftbenchError) as info:
        load_trained(wrong, out)
    message = str(info.value)
    assert "\n" not in message and "was trained on base 'tiny-llama'" in message, message
    for method in ("adapter_houlsby", "full"):  # a peftbench adapter and a plain model check their base too
        target = tmp_path / method
        export_run(runs[("tiny-llama", method)][0], target)
        with pytest.raises(PeftbenchError, match="was trained on base"):
            load_trained(wrong, target)


@pytest.mark.xdist_group("export")
def test_export_refuses_a_used_directory_and_a_run_without_weights(runs, tmp_path, cli):
    run_dir, _ = runs[("tiny-t5", "lora")]
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("mine")
    done = cli("export", str(run_dir), str(used))
    assert done.returncode == 2 and "already exists and is not empty" in done.stderr
    assert (used / "x").read_text() == "mine"
    empty = tmp_path / "empty-run"
    empty.mkdir()
    (empty / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    done = cli("export", str(empty), str(tmp_path / "o"))
    assert done.returncode == 2 and "has no trainable.safetensors" in done.stderr


@pytest.mark.xdist_group("export")
def test_a_base_changed_since_training_is_refused_by_export_and_evaluate(runs, tmp_path, cli):
    """base.json (written when a run starts) holds the SHA-256 of the weights it trained on: exporting or
    re-evaluating on other weights under the same model name is one line, exit 2, nothing written."""
    from peftbench.recipe.rundir import record_base
    from peftbench.recipe.runfiles import BASE_FILE

    source, _ = runs[("tiny-t5", "lora")]
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    cfg = config_from_dict({"model": {"name": "tiny-t5"}, "method": {"name": "lora"}, "seed": 3})
    trained_on, _ = build_model(config_from_dict({"model": {"name": "tiny-t5", "init_seed": 1}}), False)
    record_base(run_dir, cfg, weights_hash(trained_on))  # as if model.name's weights were replaced since
    for argv in (("export", str(run_dir), str(tmp_path / "out")), ("evaluate", str(run_dir))):
        done = cli(*argv)
        assert done.returncode == 2, done.stderr
        assert "was trained on base" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (run_dir / "metrics.json").exists()
    (run_dir / BASE_FILE).unlink()
    record_base(run_dir, cfg, weights_hash(build_model(cfg, False)[0]))  # the same weights: accepted
    assert cli("export", str(run_dir), str(tmp_path / "out")).returncode == 0


def test_the_registry_says_which_methods_merge():
    """Export asks each method's spec whether ``--merge`` folds it into the base (MethodSpec.merge); the specs agree
    with the methods this file checks merged logits for (and with peft for its methods: prompt learning does not
    merge)."""
    from peftbench.methods import builtin_methods

    assert {m.name for m in builtin_methods() if m.merge != "no"} == set(MERGEABLE)
    assert [m.name for m in builtin_methods() if m.merge == "always"] == ["full"]
