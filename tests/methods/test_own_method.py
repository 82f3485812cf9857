"""Bring your own method (issue 29): plugins by entry point and ``method.module``, ``peftbench check-method``
(the contract every built-in passes) on built-ins, on the worked example examples/my_method and on broken methods,
and the example in a dev sweep through ``peftbench report``."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import yaml

from peftbench.configure import config_from_dict, method_config
from peftbench.errors import PeftbenchError
from peftbench.methods import MethodSpec, all_methods, get_method, method_origin
from peftbench.methods.core import registry
from peftbench.recipe.setup import build_model
from tests.conftest import REPO, in_process

EXAMPLE = REPO / "examples" / "my_method"


@pytest.fixture
def clean_registry(monkeypatch):
    """The registry, plugin state and imported example modules as they were, after the test; the example importable."""
    saved = dict(registry._REGISTRY), dict(registry._ORIGINS), dict(registry._PLUGINS)
    modules = set(sys.modules)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.setenv("PYTHONPATH", str(EXAMPLE))
    yield
    for d, old in zip((registry._REGISTRY, registry._ORIGINS, registry._PLUGINS), saved, strict=True):
        d.clear()
        d.update(old)
    for name in set(sys.modules) - modules:
        if name.startswith(("my_method", "tests.methods.broken", "fake_plugin")):
            del sys.modules[name]


class FakeEntryPoint(SimpleNamespace):
    def load(self):
        return self.loader()


def _entry_points(monkeypatch, *eps):
    monkeypatch.delenv("PEFTBENCH_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.setattr(registry, "entry_points", lambda group: list(eps) if group == registry.PLUGIN_GROUP else [])
    registry._PLUGINS.update(loaded=False, error=None)


def _ep(loader, name="scaled_lora", value="my_method", dist="my-method"):
    return FakeEntryPoint(name=name, value=value, module=value.split(":")[0], dist=SimpleNamespace(name=dist),
                          loader=loader)  # fmt: skip


def test_entry_point_module_registers_like_a_builtin_and_is_listed_with_its_origin(clean_registry, monkeypatch):
    import importlib

    _entry_points(monkeypatch, _ep(lambda: importlib.import_module("my_method")))
    assert "scaled_lora" in [s.name for s in all_methods()]
    assert method_origin("scaled_lora") == "package my-method (entry point scaled_lora = my_method)"
    assert method_origin("lora") == "built-in"
    listing = in_process("methods")
    assert listing.returncode == 0, listing.stderr
    assert "scaled_lora: LoRA with alpha/sqrt(r) scaling" in listing.stdout
    assert "from: package my-method (entry point scaled_lora = my_method)" in listing.stdout


def test_plugin_autoload_can_be_disabled_as_pytests(clean_registry, monkeypatch):
    import importlib

    _entry_points(monkeypatch, _ep(lambda: importlib.import_module("my_method")))
    monkeypatch.setenv("PEFTBENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "scaled_lora" not in [s.name for s in all_methods()] and "my_method" not in sys.modules
    # method.module is the user's explicit choice: it still loads
    cfg = config_from_dict({"method": {"name": "scaled_lora", "module": "my_method"}})
    assert cfg.method_name == "scaled_lora" and method_origin("scaled_lora") == "module my_method"
    del registry._REGISTRY["scaled_lora"], sys.modules["my_method"]
    _entry_points(monkeypatch, _ep(lambda: importlib.import_module("my_method")))
    monkeypatch.setenv("PEFTBENCH_DISABLE_PLUGIN_AUTOLOAD", "0")
    assert "scaled_lora" in [s.name for s in all_methods()] and method_origin("scaled_lora").startswith("package")


def test_entry_point_object_or_callable_giving_a_spec(clean_registry, monkeypatch):
    lora = get_method("lora")
    spec = MethodSpec(name="other_lora", config_cls=lora.config_cls, apply=lora.apply, summary="s", paper="p",
                      default_learning_rate=1e-3)  # fmt: skip
    _entry_points(monkeypatch, _ep(lambda: lambda: spec, name="other", value="fake_plugin:make"))
    assert get_method("other_lora") is spec
    assert method_origin("other_lora").startswith("package my-method")


@pytest.mark.parametrize(
    ("loader", "message"),
    [
        (lambda: 1 / 0, "package my-method (entry point scaled_lora = my_method) failed to load: ZeroDivisionError"),
        (lambda: "not a spec", "malformed method: expected a peftbench MethodSpec, got str"),
        (lambda: lambda: MethodSpec("x_y", int, len, "", "", 1.0), "config_cls must be a dataclass"),
        (lambda: get_method("lora").__class__(**{**get_method("lora").__dict__}), None),  # the same name, a new object
    ],
)
def test_a_broken_plugin_stops_in_one_line_naming_its_package(clean_registry, monkeypatch, loader, message):
    _entry_points(monkeypatch, _ep(loader))
    message = message or "method 'lora' collides with the built-in method 'lora'; rename it"
    with pytest.raises(PeftbenchError, match="package my-method") as info:
        all_methods()
    assert message in str(info.value) and "\n" not in str(info.value)
    proc = in_process("methods")  # on the command line: one line, status 2, no traceback
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and message in proc.stderr


def test_method_module_in_the_config_registers_before_the_name_is_checked(clean_registry):
    cfg = config_from_dict({"model": {"name": "tiny-t5"}, "method": {"name": "scaled_lora", "module": "my_method",
                                                                       "r": 4}})  # fmt: skip
    assert cfg.method["module"] == "my_method" and method_config(cfg).r == 4
    assert method_origin("scaled_lora") == "module my_method"
    with pytest.raises(PeftbenchError, match=r"method.module 'no_such_mod' failed to import: ModuleNotFoundError"):
        config_from_dict({"method": {"name": "x", "module": "no_such_mod"}})


def test_a_budget_sizes_the_plugins_knob_as_a_builtins(clean_registry):
    # scaled_lora trains exactly LoRA's parameters, so one budget must give both the same rank
    for budget in ("5%", 60_000):
        ours = config_from_dict(
            {"model": {"name": "tiny-t5"}, "method": {"name": "scaled_lora", "module": "my_method", "budget": budget}}
        )
        lora = config_from_dict({"model": {"name": "tiny-t5"}, "method": {"name": "lora", "budget": budget}})
        assert ours.method["r"] == lora.method["r"] > 1 and ours.method["budget"] == lora.method["budget"]


def test_the_cost_table_lists_a_plugin_after_the_builtins(clean_registry, monkeypatch):
    from peftbench.launch import cost
    from peftbench.methods import load_method_module

    monkeypatch.setattr(cost, "available_presets", lambda: ["lora"])
    load_method_module("my_method")
    rows = [line.split() for line in cost.cost_table("tiny-t5", "dev", progress=False).splitlines()[3:]]
    assert [r[0] for r in rows] == ["lora", "scaled_lora"]
    # the plugin's preset: its default r = 8 on tiny-t5, as its own count function says
    model = build_model(config_from_dict({"model": {"name": "tiny-t5"}}), apply_method=False)[0]
    expected = get_method("scaled_lora").count(model.config, method_config(config_from_dict(
        {"method": {"name": "scaled_lora"}})))  # fmt: skip
    assert rows[1][1] == f"{expected:,}"


def test_check_method_passes_for_builtins(clean_registry):
    # the whole contract on one built-in; the properties of a single model on a few more (each is checked for every
    # built-in by the suite's own tests, which call the same functions: test_methods_contract, test_dtypes,
    # test_generation_fidelity, test_method_formulas)
    proc = in_process("check-method", "adapter_houlsby", "--model", "tiny-llama")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASS") == 8 and "FAIL" not in proc.stdout and "SKIP" not in proc.stdout, proc.stdout
    quick = "only_method_trains,fp32_trainable,generation,save_load,parameter_count"
    for method in ("lora", "prompt", "bitfit"):
        proc = in_process("check-method", method, "--model", "tiny-t5", "--only", quick)
        assert proc.returncode == 0 and proc.stdout.count("PASS") == 5, proc.stdout + proc.stderr


def test_check_method_passes_for_the_worked_example(clean_registry):
    proc = in_process("check-method", "scaled_lora", "--module", "my_method")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # on both tiny models every property passes (count included: the example has a count function; two ranks)
    assert proc.stdout.count("PASS") == 16 and "SKIP" not in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("method", "check", "failing", "reason"),
    [
        ("half_lora", "fp32-trainable", "trainable weights stay fp32 on a bf16 base", "is torch.bfloat16 (and"),
        ("cached_shift", "generation", "evaluation's generation equals a cache-free greedy forward loop",
         "generation gave"),
        ("leaky_lora", "only-method-trains", "only the method's parameters train",
         "1 base-model parameter(s) train that the spec does not declare, e.g. lm_head.weight"),
        ("counting_shift", "distributed", "two ranks train as one", "differently from one process"),
    ],
)  # fmt: skip
def test_check_method_fails_a_broken_method_with_a_one_line_reason(clean_registry, method, check, failing, reason):
    # --only the property at fault (each broken method passes the others; the built-ins and the example run all)
    proc = in_process("check-method", method, "--module", "tests.methods.broken_methods", "--model", "tiny-llama",
                      "--only", f"{check},save-load")  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fails = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 1 and failing in fails[0] and reason in fails[0], proc.stdout
    assert f"docs/own-method.md#{check}" in fails[0] and proc.stdout.count("PASS") == 1, proc.stdout
    assert proc.stdout.strip().endswith(f"{method}: FAILED 1 check(s)")


def test_check_method_only_names_known_checks(clean_registry):
    proc = in_process("check-method", "lora", "--only", "generaton")
    assert proc.returncode == 2 and "unknown check 'generaton'; checks: only_method_trains" in proc.stderr


def test_a_plugin_without_a_preset_file_gets_the_studys_shared_settings(clean_registry, tmp_path):
    from peftbench.launch.presets import preset_config
    from peftbench.launch.sweep import expand, load_sweep

    for mode, model in (("full", "google/t5-xl-lm-adapt"), ("dev", "tiny-t5")):
        cfg = preset_config("scaled_lora", mode, ["method.module=my_method", "method.r=4"])
        lora = preset_config("lora", mode)
        assert cfg.method_name == "scaled_lora" and cfg.method["r"] == 4 and cfg.model.name == model
        assert (cfg.data, cfg.launch) == (lora.data, lora.launch)  # the study's (or dev's) data and launch
        assert cfg.train.learning_rate == get_method("scaled_lora").default_learning_rate  # the method's own
    with pytest.raises(PeftbenchError, match=r"no preset for method 'scaled_lorra'.*method\.module"):
        preset_config("scaled_lorra", "dev", ["method.module=my_method"])
    # method.module however it is given: a dotted override, a method section, the API's mapping, a sweep's overrides
    assert preset_config("scaled_lora", "dev", ["method={name: scaled_lora, module: my_method, r: 4}"]).method["r"] == 4
    import peftbench

    assert (
        peftbench.preset("scaled_lora", "dev", {"method": {"name": "scaled_lora", "module": "my_method"}}).method_name
        == "scaled_lora"
    )
    assert peftbench.preset("scaled_lora", "dev", {"method.module": "my_method"}).method_name == "scaled_lora"
    sweep = tmp_path / "s.yaml"
    sweep.write_text(yaml.safe_dump({"mode": "dev", "methods": {"scaled_lora": {"method.r": [4, 8]}},
                                     "overrides": {"method.module": "my_method"}}))  # fmt: skip
    assert [r.config.method["r"] for r in expand(load_sweep(sweep))] == [4, 8]
    printed = in_process("run", "scaled_lora", "--mode", "dev", "method.module=my_method", "--print-config")
    assert printed.returncode == 0 and "name: scaled_lora" in printed.stdout and "module: my_method" in printed.stdout


def test_the_example_in_a_dev_sweep_with_lora_through_the_report(clean_registry, tmp_path):
    runs = tmp_path / "runs"
    sweep = {
        "mode": "dev",
        "methods": {"lora": {}, "scaled_lora": {"method.module": "my_method"}},  # its own name, no preset file
        "overrides": {"output_dir": str(runs), "train.max_steps": 4, "train.save_steps": 4, "train.eval_steps": 4,
                      "data.num_train_tasks": 4, "data.max_train_instances_per_task": 2,
                      "data.max_eval_instances_per_task": 1, "eval.max_new_tokens": 4},
    }  # fmt: skip
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    proc = in_process("sweep", str(path), "--no-progress")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 finished" in proc.stdout, proc.stdout
    report = in_process("report", str(runs))
    assert report.returncode == 0, report.stdout + report.stderr
    assert "scaled_lora" in report.stdout and "lora" in report.stdout.replace("scaled_lora", ""), report.stdout
