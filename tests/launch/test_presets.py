"""Presets (`peftbench run METHOD --mode dev|full`), shipped YAML files, training-task subsets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from peftbench.config import DataConfig
from peftbench.configure import load_config
from peftbench.data.examples import load_examples
from peftbench.errors import PeftbenchError
from peftbench.launch.presets import available_presets, launch_command, preset_config, preset_dict
from peftbench.methods import builtin_methods
from tests.conftest import REPO, in_process

CONFIGS = REPO / "configs"


def test_every_method_has_a_preset_and_every_preset_a_method():
    assert available_presets() == sorted(spec.name for spec in builtin_methods())


@pytest.mark.parametrize("method", [spec.name for spec in builtin_methods()])
@pytest.mark.parametrize("mode", ["dev", "full"])
def test_every_preset_loads_in_both_modes(method, mode):
    cfg = preset_config(method, mode)
    assert cfg.method_name == method
    lines = (CONFIGS / "methods" / f"{method}.yaml").read_text().splitlines()
    assert any(line.startswith(f"# peftbench run {method} --mode {mode}") for line in lines[:3])
    if mode == "dev":
        assert cfg.model.name == "tiny-t5" and cfg.launch.num_processes == 1 and cfg.train.max_steps <= 50
    else:
        assert cfg.model.name == "google/t5-xl-lm-adapt" and cfg.data.num_validation_tasks == 50
        assert cfg.train.num_epochs == 4 and cfg.train.save_steps == 1000 and cfg.train.eval_steps == 5000


def test_study_schedules_per_method():
    full, lora = preset_config("full"), preset_config("lora")
    assert (full.train.lr_scheduler, full.train.warmup_ratio) == ("constant", 0.0)
    assert (lora.train.lr_scheduler, lora.train.warmup_ratio) == ("linear", 0.03)
    assert full.launch.accelerate_config.endswith("deepspeed_zero3.yaml")
    assert lora.launch.accelerate_config.endswith("ddp.yaml") and lora.launch.num_processes == 8
    assert full.eval.batch_size < lora.eval.batch_size  # evaluation batch by method size
    assert lora.method["r"] == 64 and lora.method["alpha"] is None  # alpha = r (LoRAConfig), also for every r swept


@pytest.mark.parametrize("path", sorted((CONFIGS / "presets").glob("*.yaml")), ids=lambda p: p.name)
def test_preset_layers_say_how_they_are_used(path):
    assert path.read_text().startswith("# peftbench run METHOD --mode")
    assert isinstance(yaml.safe_load(path.read_text()), dict)


@pytest.mark.parametrize("path", sorted((CONFIGS / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_parse_and_say_how_to_launch(path):
    text = path.read_text()
    assert text.startswith(f"# accelerate launch --config_file configs/accelerate/{path.name} -m peftbench")
    loaded = yaml.safe_load(text)
    assert loaded["distributed_type"] in ("MULTI_GPU", "DEEPSPEED", "FSDP")
    assert loaded["num_machines"] == 1


def test_overrides_and_bad_input():
    cfg = preset_config("lora", "dev", ["method.r=4", "seed=7"])
    assert cfg.method["r"] == 4 and cfg.seed == 7
    with pytest.raises(PeftbenchError, match="no preset for method 'lorra'"):
        preset_dict("lorra")
    with pytest.raises(PeftbenchError, match="unknown mode"):
        preset_dict("lora", "quick")


def test_launch_command_uses_torchrun_or_accelerate():
    one = preset_config("lora", "dev")
    assert launch_command(one, ["train", "c.yaml"])[1:] == ["-m", "peftbench", "train", "c.yaml"]
    two = preset_config("lora", "dev", ["launch.num_processes=2"])
    assert "torch.distributed.run" in launch_command(two, ["train", "c.yaml"])
    acc = preset_config("lora", "full")
    command = launch_command(acc, ["train", "c.yaml"])
    assert "accelerate.commands.launch" in command and command[command.index("--num_processes") + 1] == "8"
    assert Path(command[command.index("--config_file") + 1]).is_file()


@pytest.mark.slow
def test_run_dev_end_to_end_then_nothing_to_do(tmp_path):
    args = ("run", "lora", "--mode", "dev", f"output_dir={tmp_path}", "method.r=4", "train.max_steps=6",
            "--no-progress")  # fmt: skip
    first = in_process(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert run_dir.name.startswith("lora-r4-lr5e-3-s42-")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 6 and metrics["data"]["validation_tasks"] == 2
    assert load_config(run_dir / "config.yaml").data.data_dir == "@demo"
    again = in_process(*args)
    assert again.returncode == 0 and "already finished" in again.stdout + again.stderr


def test_run_print_config_and_errors(cli):
    shown = cli("run", "adapter_parallel", "--mode", "dev", "--print-config", "method.size=16")
    assert shown.returncode == 0 and yaml.safe_load(shown.stdout)["method"]["size"] == 16
    bad = cli("run", "nope")
    assert bad.returncode == 2 and "no preset for method 'nope'" in bad.stderr and "Traceback" not in bad.stderr


def _load(data_dir: Path, **extra):
    return load_examples(DataConfig(data_dir=str(data_dir), split="mini", max_train_instances_per_task=2, **extra))


def test_training_task_subsets_are_nested(superni_mini):
    every = _load(superni_mini).train_tasks
    subsets = [_load(superni_mini, num_train_tasks=n).train_tasks for n in (2, 5, len(every))]
    assert [len(s) for s in subsets] == [2, 5, len(every)]
    assert set(subsets[0]) < set(subsets[1]) < set(subsets[2]) == set(every)
    assert _load(superni_mini, num_train_tasks=5, seed=1).train_tasks != subsets[1]  # seeded
    with pytest.raises(PeftbenchError, match="only 22 training tasks"):
        _load(superni_mini, num_train_tasks=100)


@pytest.mark.slow
def test_tensorboard_logging(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc = in_process("run", "lora", "--mode", "dev", f"output_dir={tmp_path}", "train.max_steps=10",
                   "train.report_to=[tensorboard]", "train.logging_steps=2", "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    events = sorted((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    assert events, sorted(str(p) for p in run_dir.rglob("*"))
    # one TensorBoard run per training run: scalars and hyperparameters in tensorboard/ itself, no sub-directories
    assert [p for p in (run_dir / "tensorboard").iterdir() if p.is_dir()] == []
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "validation/rougeL", "test/rougeL"} <= tags
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4, 6, 8, 10]
    hparams = acc.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in hparams and b"method.r" in hparams["_hparams_/session_start_info"]


def test_unknown_or_missing_tracker_is_one_line(cli):
    proc = cli("run", "lora", "--mode", "dev", "train.report_to=[comet]", "--print-config")
    assert proc.returncode == 2 and "unknown tracker(s) comet" in proc.stderr


# The study's protocol, read from its own scripts (hepengfe/parameter_efficient_instruction_tuning):
# scripts/grid_search_1/grid_search_<method>_1.sh export WEIGHT_DECAY / DROPOUT_RATE, and
# configs/hfai/default_config_ddp.yaml launches with mixed_precision 'no'.
STUDY_GRIDS = {  # method -> (WEIGHT_DECAY, DROPOUT_RATE) as the study's grid scripts export them
    "full": (0.0, 0.0), "lora": (0.01, 0.1), "adapter_houlsby": (0.01, 0.1), "ia3": (0.01, 0.1),
    "prefix": (0.01, 0.1), "prompt": (0.01, 0.1), "bitfit": (0.01, 0.1),
}  # fmt: skip


@pytest.mark.parametrize("method", sorted(STUDY_GRIDS))
def test_full_presets_train_with_the_study_s_precision_and_regularisation(method):
    cfg = preset_config(method, "full")
    weight_decay, dropout = STUDY_GRIDS[method]
    assert (cfg.model.dtype, cfg.train.mixed_precision) == ("float32", "no")
    assert cfg.train.weight_decay == weight_decay
    if method == "lora":  # the study gives DROPOUT_RATE to LoRA's dropout
        assert cfg.method["dropout"] == dropout


def test_every_full_preset_records_that_it_follows_the_study():
    from peftbench.recipe.protocol import study_protocol

    for spec in builtin_methods():
        protocol = study_protocol(preset_config(spec.name, "full"))
        if spec.name == "ia3":  # the study's (AdapterHub) IA3 has a dropout, peft's has none: a known difference
            assert list(protocol["differences"]) == ["method.dropout"]
        else:
            assert protocol["follows_study"], (spec.name, protocol["differences"])
    changed = study_protocol(preset_config("lora", "full", ["train.mixed_precision=bf16", "model.dtype=bfloat16"]))
    assert not changed["follows_study"]
    assert changed["differences"]["train.mixed_precision"] == {"run": "bf16", "study": "no"}
    assert set(changed["differences"]) == {"train.mixed_precision", "model.dtype"}
    paper = study_protocol(preset_config("prefix", "full", ["method.scope=all"]))  # Li & Liang's placement
    assert paper["differences"] == {"method.scope": {"run": "all", "study": "decoder"}}


def test_the_study_example_config_is_the_lora_preset_and_follows_the_study():
    """configs/study-t5-xl-lora.yaml (README: "the study's setting" for `peftbench train`) records
    follows_study = true, and every setting it shares with `peftbench run lora --mode full` is the preset's."""
    from dataclasses import asdict

    from peftbench.recipe.protocol import study_protocol

    example = load_config(CONFIGS / "study-t5-xl-lora.yaml")
    assert study_protocol(example)["follows_study"], study_protocol(example)["differences"]
    ours, preset = asdict(example), asdict(preset_config("lora", "full"))
    for section in ("model", "method", "data", "train", "eval"):
        assert ours[section] == preset[section], section
    assert ours["launch"]["num_processes"] == preset["launch"]["num_processes"]
