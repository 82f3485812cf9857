"""Parameter-budget matching: the chosen size is the closest to the budget, and the run trains exactly that."""

from __future__ import annotations

import json

import pytest
import yaml

from peftbench.config import ModelConfig
from peftbench.configure import config_from_dict
from peftbench.errors import PeftbenchError
from peftbench.methods import builtin_methods, get_method
from peftbench.methods.core.budget import MethodCounter, match_budget, parse_budget
from peftbench.models import count_parameters
from peftbench.recipe.rundir import config_hash
from peftbench.recipe.setup import build_model
from tests.conftest import in_process, tiny_mini_config

SIZED = [spec.name for spec in builtin_methods() if spec.size_knob is not None]
MODELS = ("tiny-t5", "tiny-llama")


def _real_count(model: str, method: str, value: int) -> int:
    """Trainable parameters of the real (materialised) model, built as a run builds it."""
    knob = get_method(method).size_knob.field
    cfg = config_from_dict({"model": {"name": model}, "method": {"name": method, knob: value}})
    return count_parameters(build_model(cfg)[0])[0]


@pytest.mark.parametrize(
    ("text", "percent", "count"),
    [("0.1%", 0.1, None), ("2%", 2.0, None), (120000, None, 120000), ("200k", None, 200_000), ("1.5M", None, 1_500_000),
     ("3e4", None, 30_000)],
)  # fmt: skip
def test_parse_budget(text, percent, count):
    b = parse_budget(text)
    assert (b.percent, b.count) == (percent, count)


@pytest.mark.parametrize("bad", ["0%", "150%", "abc", "-5", 0, 0.5, True, "1.5x"])
def test_bad_budget_is_one_line(bad):
    with pytest.raises(PeftbenchError) as err:
        parse_budget(bad)
    assert "\n" not in str(err.value) and "budget" in str(err.value)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", SIZED)
@pytest.mark.parametrize("budget", ["1%", 20000])
def test_chosen_size_is_the_closest_allowed(model, method, budget):
    spec = get_method(method)
    match = match_budget(method, ModelConfig(name=model), {}, budget)
    step = spec.size_knob.step(spec.config_cls())
    assert match.value % step == 0 and match.knob == spec.size_knob.field
    target = match.target
    achieved = _real_count(model, method, match.value)
    assert achieved == match.trainable  # the meta-device count is the real model's count
    if spec.size_knob.monotone:
        # Monotone counts: the neighbours bracket the budget, and neither is closer.
        counter = MethodCounter(spec, ModelConfig(name=model))
        values = list(range(max(step, match.value - 8 * step), match.value + 9 * step, step))
        counts = [counter.count({match.knob: v}) for v in values]
        assert counts == sorted(counts), "declared monotone but is not"
        for neighbour in (match.value - step, match.value + step):
            if neighbour >= step:
                assert abs(achieved - target) <= abs(_real_count(model, method, neighbour) - target)
    else:
        # Not monotone (LoKr): every value up to where the count stops changing, on the real model.
        for v in range(1, 17):  # tiny models' factors are <= 16 wide: the count is constant from r = 8
            assert abs(achieved - target) <= abs(_real_count(model, method, v) - target), v


def test_percentage_is_of_the_base_model():
    match = match_budget("lora", ModelConfig(name="tiny-t5"), {}, "1%")
    base_total = count_parameters(build_model(config_from_dict({"model": {"name": "tiny-t5"}}), False)[0])[1]
    assert match.base_total == base_total and match.target == round(base_total / 100)


def test_other_options_are_kept_while_matching():
    all_targets = match_budget("lora", ModelConfig(name="tiny-t5"), {"target_modules": ["q", "k", "v", "o"]}, 20000)
    qv = match_budget("lora", ModelConfig(name="tiny-t5"), {}, 20000)
    assert all_targets.value < qv.value  # twice the modules: about half the rank


def test_budget_in_config_records_the_chosen_value():
    cfg = config_from_dict({"model": {"name": "tiny-t5"}, "method": {"name": "adapter_pfeiffer", "budget": "2%"}})
    match = match_budget("adapter_pfeiffer", ModelConfig(name="tiny-t5"), {}, "2%")
    assert cfg.method["budget"] == "2%" and cfg.method["size"] == match.value
    # the saved config reloads to the same run (same hash), and still agrees with the budget
    again = config_from_dict(yaml.safe_load(yaml.safe_dump({"model": {"name": "tiny-t5"}, "method": cfg.method})))
    assert config_hash(again) == config_hash(config_from_dict({"model": {"name": "tiny-t5"}, "method": cfg.method}))


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ({"name": "ia3", "budget": "1%"}, "fixed size"),
        ({"name": "lora", "budget": "1%", "r": 64}, "conflicts with method.budget"),
        ({"name": "adapter_houlsby", "budget": "1%", "reduction_factor": 4}, "leave method.reduction_factor unset"),
        ({"name": "compacter", "budget": "1%", "reduction_factor": 16}, "leave method.reduction_factor unset"),
        ({"name": "adapter_pfeiffer", "budget": "1%", "reduction_factor": 4}, "leave method.reduction_factor unset"),
        ({"name": "loha", "budget": "1%"}, "Conv1D"),
    ],
)
def test_budget_refusals_are_one_line(method, message):
    model = "tiny-gpt2" if method["name"] == "loha" else "tiny-t5"
    with pytest.raises(PeftbenchError, match=message) as err:
        config_from_dict({"model": {"name": model}, "method": method})
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_train_with_a_budget_trains_that_many_parameters(superni_mini, tmp_path):
    cfg = tiny_mini_config(superni_mini, tmp_path / "runs", method="lora", run_name="budget")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    proc = in_process("train", str(tmp_path / "c.yaml"), "method.budget=15000", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = tmp_path / "runs" / "budget"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    match = match_budget("lora", ModelConfig(name="tiny-t5"), {}, 15000)
    assert saved["method"]["budget"] == 15000 and saved["method"]["r"] == match.value
    assert metrics["trainable_params"] == metrics["budget"]["achieved"] == match.trainable
    assert metrics["budget"]["value"] == match.value and metrics["budget"]["target"] == 15000
    assert f"r={match.value}" in proc.stdout + proc.stderr


def test_methods_budget_cli_lists_every_method(cli):
    proc = cli("methods", "--model", "tiny-t5", "--budget", "1%")
    assert proc.returncode == 0, proc.stderr
    for spec in builtin_methods():
        assert any(line.startswith(spec.name + " ") for line in proc.stdout.splitlines()), spec.name
    lora = match_budget("lora", ModelConfig(name="tiny-t5"), {}, "1%")
    assert f"r={lora.value}" in proc.stdout and f"{lora.trainable:,}" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--budget", "1%"], "--budget needs --model"), (["--model", "tiny-t5", "--budget", "lots"], "budget")],
)
def test_methods_budget_cli_errors(cli, args, message):
    proc = cli("methods", *args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_train_refuses_an_unsupported_architecture_in_one_line(cli, superni_mini, tmp_path):
    cfg = tiny_mini_config(superni_mini, tmp_path / "runs", model="tiny-gpt2", method="lokr")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    proc = cli("train", str(tmp_path / "c.yaml"), "--no-progress")
    assert proc.returncode == 2
    assert "lokr" in proc.stderr and "Conv1D" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_counters_share_one_skeleton_per_model_and_a_changed_local_config_is_read_again(monkeypatch, tmp_path):
    import peftbench.models as models
    from peftbench.methods.core import budget

    built = []
    real = models.model_skeleton
    monkeypatch.setattr(models, "model_skeleton", lambda cfg: built.append(cfg.name) or real(cfg))
    budget._cached_skeleton.cache_clear()
    tiny = ModelConfig(name="tiny-t5")
    counts = [MethodCounter(get_method(m), tiny).count({}) for m in ("lora", "ia3", "bitfit")]
    assert built == ["tiny-t5"]  # one skeleton for the three methods
    model = build_model(config_from_dict({"model": {"name": "tiny-t5"}, "method": {"name": "lora"}}))[0]
    assert counts[0] == sum(p.numel() for p in model.parameters() if p.requires_grad)  # a copy was counted on
    assert MethodCounter(get_method("lora"), tiny).count({}) == counts[0]

    local = tmp_path / "t5"
    real(tiny).config.save_pretrained(local)
    first = MethodCounter(get_method("lora"), ModelConfig(name=str(local)))
    config = json.loads((local / "config.json").read_text())
    (local / "config.json").write_text(json.dumps({**config, "num_layers": config["num_layers"] + 1}))
    second = MethodCounter(get_method("lora"), ModelConfig(name=str(local)))
    assert second.base_total > first.base_total and built.count(str(local)) == 2
