"""The Python API (``import peftbench``), called as the README shows: run a config, evaluate it, score its
predictions, export and load the trained model, build a report."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import torch

import peftbench
from peftbench.recipe.rundir import load_trainable
from peftbench.recipe.setup import build_model
from tests.conftest import tiny_mini_config


def test_import_is_light_and_every_listed_name_is_there():
    """``import peftbench`` loads no torch (the functions come on first use); every name in ``__all__`` resolves and
    is documented."""
    code = "import sys, peftbench; assert 'torch' not in sys.modules, 'torch was imported'; print(peftbench.__all__)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert set(peftbench.__all__) >= {"run", "evaluate", "score", "export", "load_trained", "report", "preset"}
    for name in peftbench.__all__:
        value = getattr(peftbench, name)
        if callable(value):
            assert inspect.getdoc(value), f"peftbench.{name} has no docstring"
    with pytest.raises(AttributeError):
        peftbench.no_such_function  # noqa: B018


def test_no_submodule_shadows_an_api_function():
    """A subpackage ``peftbench/report/`` would set ``peftbench.report`` to the module when imported, and
    ``peftbench.report(...)`` would stop being the API function: no module of the package bears an API name."""
    import importlib
    import pkgutil

    modules = {m.name for m in pkgutil.iter_modules(peftbench.__path__)}
    assert not modules & set(peftbench.__all__)
    for name in modules - {"__main__"}:  # and importing every submodule leaves the API in place
        importlib.import_module(f"peftbench.{name}")
    for name in peftbench.__all__:
        assert callable(getattr(peftbench, name)) or name == "__version__", name


def test_configs_from_a_dict_a_preset_and_overrides(superni_mini, tmp_path):
    raw = tiny_mini_config(superni_mini, tmp_path)
    cfg = peftbench.load_config(raw, {"method.r": 4, "train.learning_rate": 1e-3})
    assert cfg.method["r"] == 4 and cfg.train.learning_rate == 1e-3
    assert peftbench.load_config(raw, ["method.r=16"]).method["r"] == 16
    assert peftbench.load_config(cfg) is cfg
    dev = peftbench.preset("ia3", mode="dev", overrides={"train.max_steps": 7})
    assert dev.method_name == "ia3" and dev.train.max_steps == 7 and dev.model.name == "tiny-t5"
    with pytest.raises(peftbench.PeftbenchError, match="does not exist"):
        peftbench.load_config(tmp_path / "nope.yaml")
    with pytest.raises(peftbench.PeftbenchError, match="mode must be"):
        peftbench.preset("lora", mode="huge")


def test_run_evaluate_score_export_load_and_report(superni_mini, tmp_path):
    raw = tiny_mini_config(superni_mini, tmp_path / "runs", run_name="api-lora")
    result = peftbench.run(raw, {"train.max_steps": 2})
    assert not result.skipped and result.metrics["status"] == "finished"
    overall = result.metrics["overall"]
    assert peftbench.run(raw, {"train.max_steps": 2}).skipped  # a finished run is not redone

    again = peftbench.evaluate(result.run_dir)
    assert again.metrics["overall"] == overall
    scored = peftbench.score(result.run_dir / "predictions.jsonl")
    assert scored["overall"] == overall
    records = [{"id": "1", "task": "t", "prediction": "Yes.", "references": ["yes"]}]
    assert peftbench.score(records)["overall"]["exact_match"] == 100.0

    out = tmp_path / "adapter"
    exported = peftbench.export(result.run_dir, out)
    assert exported.kind == "peft" and (out / "adapter_config.json").is_file()
    model = peftbench.load_trained(None, out)
    cfg = peftbench.load_config(result.run_dir / "config.yaml")
    evaluated, tokenizer = build_model(cfg)
    load_trainable(evaluated, result.run_dir / "trainable.safetensors")
    batch = tokenizer(["Definition: Copy the input.\n\nInput: red fox.\nOutput: "], return_tensors="pt")
    batch["decoder_input_ids"] = torch.zeros((1, 1), dtype=torch.long)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, evaluated.eval()(**batch).logits)

    files = peftbench.report(tmp_path / "runs", tmp_path / "report", intervals=False)
    assert files.markdown.is_file() and files.html is not None and files.html.is_file()
    assert "lora" in files.table


def test_a_yaml_file_loads_the_same_through_the_api_and_the_cli(tmp_path):
    """``peftbench.load_config`` reads a file as ``peftbench train`` does: ``mixed_precision: no`` is the string "no"
    (plain YAML would make it the boolean false, which the API refused while the CLI accepted it)."""
    import peftbench
    from peftbench.configure import load_config as cli_load_config

    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: tiny-t5\ntrain:\n  mixed_precision: no\n  max_steps: 3\nmethod:\n  name: lora\n")
    api = peftbench.load_config(path)
    assert api == cli_load_config(path) and api.train.mixed_precision == "no"
    assert peftbench.load_config(path, {"train.max_steps": 5}) == cli_load_config(path, ["train.max_steps=5"])
    assert peftbench.load_config is cli_load_config  # one loader, not two that agree today


def test_peftbench_train_print_config_is_what_the_api_loads(tmp_path):
    """The same YAML through the command line (``peftbench train FILE --print-config``, overrides as strings) and
    through ``peftbench.load_config`` (overrides as values): the same resolved config, printed and read back."""
    from tests.conftest import in_process

    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: tiny-t5\ntrain:\n  mixed_precision: no\nmethod:\n  name: lora\n")
    done = in_process("train", str(path), "--print-config", "train.max_steps=7", "method.r=4")
    assert done.returncode == 0, done.stderr
    printed = tmp_path / "printed.yaml"
    printed.write_text(done.stdout)
    api = peftbench.load_config(path, {"train.max_steps": 7, "method.r": 4})
    assert peftbench.load_config(printed) == api
    assert api.train.mixed_precision == "no" and api.train.max_steps == 7 and api.method["r"] == 4
