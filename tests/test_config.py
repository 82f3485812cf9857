"""The config schema: YAML + dotted overrides, types, defaults filled in, one-line errors."""

from __future__ import annotations

import pytest
import yaml

from peftbench.config import dump_config
from peftbench.configure import config_from_dict, load_config
from peftbench.errors import PeftbenchError
from peftbench.recipe.rundir import config_hash, resolved_run_name


def test_dotted_overrides_reach_sections_and_method(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: {name: lora, r: 4}\ntrain: {learning_rate: 1e-3}\n")
    cfg = load_config(path, ["train.learning_rate=1e-4", "method.r=16", "method.target_modules=[q,v]", "seed=3"])
    assert cfg.train.learning_rate == pytest.approx(1e-4)  # '1e-4' is a string to YAML 1.1; coerced to float
    assert cfg.method["r"] == 16 and cfg.method["target_modules"] == ["q", "v"]
    assert cfg.seed == 3


def test_method_defaults_are_recorded_in_the_resolved_config():
    cfg = config_from_dict({"method": {"name": "lora"}})
    dumped = yaml.safe_load(dump_config(cfg))
    assert dumped["method"] == {"name": "lora", "r": 8, "alpha": None, "dropout": 0.0, "target_modules": None}
    assert config_hash(config_from_dict(dumped)) == config_hash(cfg)


def test_hash_ignores_output_location_but_not_hyperparameters():
    a = config_from_dict({"output_dir": "x"})
    b = config_from_dict({"output_dir": "y", "run_name": "z"})
    c = config_from_dict({"train": {"learning_rate": 1e-3}})
    assert config_hash(a) == config_hash(b) != config_hash(c)
    assert resolved_run_name(a) == f"lora-r8-lr5e-4-s42-{config_hash(a)}"
    tasks = config_from_dict({"method": {"name": "prompt"}, "data": {"num_train_tasks": 8}, "seed": 3})
    assert resolved_run_name(tasks) == f"prompt-tok20-lr3e-2-t8-s3-{config_hash(tasks)}"
    assert resolved_run_name(config_from_dict({"method": "ia3"})).startswith("ia3-lr3e-3-s42-")


@pytest.mark.parametrize(
    ("raw", "overrides", "needle"),
    [
        ({"trian": {}}, [], "unknown config key(s) trian"),
        ({}, ["train.learnig_rate=1"], "train.learnig_rate"),
        ({}, ["method.name=lora", "method.rank=4"], "has no option(s) rank"),
        ({}, ["method.name=nope"], "unknown method 'nope'"),
        ({}, ["train.max_steps=abc"], "train.max_steps: expected an integer"),
        ({}, ["train.max_steps=2.5"], "expected an integer"),
        ({}, ["train.group_by_length=maybe"], "expected true or false"),
        ({}, ["train.learning_rate=-1"], "learning_rate must be > 0"),
        ({}, ["train.mixed_precision=fp8"], "mixed_precision"),
        ({}, ["method.name=lora", "method.r=0"], "r must be >= 1"),
        ({}, ["nokeyvalue"], "not of the form key=value"),
    ],
)
def test_bad_configs_give_one_line_errors(tmp_path, raw, overrides, needle):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(PeftbenchError) as info:
        load_config(path, overrides)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(PeftbenchError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {learning_rate: [1,\n")
    with pytest.raises(PeftbenchError, match=r"bad\.yaml:\d+:\d+"):
        load_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(PeftbenchError, match="mapping"):
        load_config(top)


def test_shipped_configs_load():
    from pathlib import Path

    # Stand-alone experiment configs; presets, sweeps and accelerate configs: tests/launch/test_presets.py.
    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert configs, "no configs shipped"
    for path in configs:
        cfg = load_config(path)
        assert cfg.method_name
        header = path.read_text().splitlines()[0]
        assert header.startswith("#") and "peftbench" in header, f"{path.name}: first line must say how to run it"


def test_a_method_revision_enters_the_config_hash(monkeypatch):
    """Runs made before a method's construction changed get a new hash (and run directory); methods at revision 0
    keep their hashes."""
    import dataclasses

    from peftbench.methods import get_method
    from peftbench.methods.core import registry

    cfg = config_from_dict({"model": {"name": "tiny-t5"}, "method": {"name": "lora"}})
    before = config_hash(cfg)
    monkeypatch.setitem(registry._REGISTRY, "lora", dataclasses.replace(get_method("lora"), revision=1))
    assert config_hash(cfg) != before
    assert get_method("adapter_houlsby").revision >= 1  # its defaults changed on 2026-12-01


# --------------------------------------------------------------------------------------------------
# Values as typed (issue 17, item 2): YAML 1.1 reads no/yes/on/off as booleans and 1.10 as the number 1.1


def test_mixed_precision_no_as_typed_on_the_command_line_and_in_yaml(cli, tmp_path):
    shown = cli("run", "lora", "--mode", "dev", "--print-config", "train.mixed_precision=no")
    assert shown.returncode == 0, shown.stderr
    assert yaml.safe_load(shown.stdout)["train"]["mixed_precision"] == "no"
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  mixed_precision: no\ndata:\n  english_only: off\n  add_task_name: yes\n")
    cfg = load_config(path)
    assert cfg.train.mixed_precision == "no" and cfg.data.english_only is False and cfg.data.add_task_name is True
    assert load_config(None, ["data.english_only=on", "train.group_by_length=no"]).train.group_by_length is False


def test_fp16_without_a_gpu_is_refused_instead_of_training_in_fp32(cli, tmp_path, monkeypatch):
    """accelerate ignores fp16 on the CPU (the loss is the fp32 run's to the last digit) while the run would record
    fp16: refused in one line before anything trains; bf16, which the CPU runs, is not."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = f"output_dir={tmp_path}"
    proc = cli("run", "lora", "--mode", "dev", "train.mixed_precision=fp16", "train.max_steps=1", out, "--no-progress")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "train.mixed_precision=fp16 needs a GPU" in proc.stderr
    assert not list(tmp_path.rglob("trainable.safetensors"))


def _string_fields() -> list[tuple[str, object]]:
    """Every str-typed field of the schema and of every method's options, as (dotted key, a config to try it in)."""
    import dataclasses
    import typing

    from peftbench.config import ExperimentConfig
    from peftbench.methods import builtin_methods

    def is_str(tp) -> bool:
        return tp is str or (typing.get_origin(tp) in (typing.Union, __import__("types").UnionType)
                             and str in typing.get_args(tp))  # fmt: skip

    found = []
    hints = typing.get_type_hints(ExperimentConfig)
    for f in dataclasses.fields(ExperimentConfig):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            found += [(f"{f.name}.{k}", "lora") for k, t in typing.get_type_hints(tp).items() if is_str(t)]
        elif is_str(tp):
            found.append((f.name, "lora"))
    for spec in builtin_methods():
        found += [(f"method.{k}", spec.name) for k, t in typing.get_type_hints(spec.config_cls).items() if is_str(t)]
    return found


@pytest.mark.parametrize("text", ["no", "yes", "on", "off", "1.10", "007", "2024-01-01", "1e5", "3"])
def test_every_string_field_keeps_its_text(text):
    """Whatever a string field's documented values are, YAML must hand over what was typed; the field's own check
    may then refuse it, but never because YAML turned it into a boolean, a number or a date."""
    from peftbench.configure import YamlFloat, YamlInt, _coerce, load_yaml, parse_override

    fields = _string_fields()
    assert {"train.mixed_precision", "model.dtype", "eval.weights", "model.name", "run_name"} <= {k for k, _ in fields}
    for key, _method in fields:
        (_, value) = parse_override(f"{key}={text}")
        assert _coerce(value, str, key) == text, (key, text)
        assert _coerce(load_yaml(f"x: {text}")["x"], str, key) == text
    assert isinstance(load_yaml("x: 3")["x"], YamlInt) and isinstance(load_yaml("x: 1.5")["x"], YamlFloat)


def test_numbers_read_from_yaml_are_plain_in_the_resolved_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: {name: lora, budget: 1000}\nmodel: {name: tiny-t5}\ntrain: {learning_rate: 1.0e-3}\n")
    cfg = load_config(path, ["run_name=1.10", "train.max_steps=7"])
    assert cfg.run_name == "1.10" and type(cfg.train.max_steps) is int and type(cfg.train.learning_rate) is float
    assert type(cfg.method["budget"]) is int
    assert yaml.safe_load(dump_config(cfg))["run_name"] == "1.10"
