"""Bad input never produces a traceback: each case exits non-zero with one line that names the problem."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from peftbench.cli import COMMANDS, build_parser, main
from tests.conftest import run_cli, tiny_mini_config


def _one_line_error(capsys, argv: list[str], needle: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("peftbench: error: ") and "\n" not in err, err
    assert "Traceback" not in err
    assert needle in err, err
    return err


def _config(tmp_path, data_dir, **extra) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_mini_config(data_dir, tmp_path / "runs", **extra)))
    return str(path)


def test_parser_and_command_table_agree():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
    for name in COMMANDS:
        assert sub.choices[name].format_help()  # every subcommand documents itself


def test_missing_config_file(capsys, tmp_path):
    _one_line_error(capsys, ["train", str(tmp_path / "nope.yaml")], "does not exist")


def test_errors_point_where_the_fix_is(capsys, tmp_path, monkeypatch):
    """A directory given as a config (a run directory names its config.yaml), a preset name given to plan as a
    config, an unknown model name (the presets listed), an extra argument (the subcommand's --help)."""
    run = tmp_path / "run"
    run.mkdir()
    _one_line_error(capsys, ["train", str(tmp_path)], f"{tmp_path} is a directory, not a config file")
    (run / "config.yaml").write_text("method: {name: lora}\n")
    _one_line_error(capsys, ["train", str(run)], f"a run directory: its config is {run / 'config.yaml'}")
    monkeypatch.chdir(tmp_path)
    _one_line_error(capsys, ["plan", "lora"], "for the lora preset: --preset lora")
    err = _one_line_error(capsys, ["run", "lora", "--mode", "dev", "model.name=tiny-t6"], "cannot load tokenizer")
    assert "presets: tiny-t5, tiny-llama, tiny-gpt2" in err
    with pytest.raises(SystemExit) as exit_:
        main(["run", "lora", "--mode", "dev", "foo"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err and err.endswith("foo (see `peftbench run --help`)")


def test_bad_override(capsys, tmp_path, superni_mini):
    _one_line_error(capsys, ["train", _config(tmp_path, superni_mini), "train.warmup=0.1"], "train.warmup")


def test_unknown_method(capsys, tmp_path, superni_mini):
    _one_line_error(capsys, ["train", _config(tmp_path, superni_mini), "method.name=loraa"], "unknown method 'loraa'")


def test_missing_data_dir(capsys, tmp_path, superni_mini):
    cfg = _config(tmp_path, tmp_path / "no-such-data")
    _one_line_error(capsys, ["train", cfg], "no-such-data")


def test_missing_split(capsys, tmp_path, superni_mini):
    _one_line_error(capsys, ["train", _config(tmp_path, superni_mini), "data.split=nosplit"], "nosplit")


def test_task_named_in_split_but_absent(capsys, tmp_path, superni_mini):
    err = _one_line_error(capsys, ["train", _config(tmp_path, superni_mini), "data.split=default"], "train_tasks.txt")
    assert "734 of 756" in err


def _copy_data(superni_mini, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(superni_mini / "splits", data / "splits")
    (data / "tasks").mkdir()
    for split_file in ("train_tasks.txt", "test_tasks.txt"):
        for name in (superni_mini / "splits" / "mini" / split_file).read_text().split():
            shutil.copy(superni_mini / "tasks" / f"{name}.json", data / "tasks" / f"{name}.json")
    return data


def test_malformed_task_json(capsys, tmp_path, superni_mini):
    data = _copy_data(superni_mini, tmp_path)
    victim = sorted((data / "tasks").glob("*.json"))[0]
    victim.write_text(victim.read_text()[:500])
    _one_line_error(capsys, ["train", _config(tmp_path, data)], victim.name)


def test_task_missing_keys(capsys, tmp_path, superni_mini):
    data = _copy_data(superni_mini, tmp_path)
    victim = sorted((data / "tasks").glob("*.json"))[0]
    task = json.loads(victim.read_text())
    del task["Definition"]
    victim.write_text(json.dumps(task))
    _one_line_error(capsys, ["train", _config(tmp_path, data)], "Definition")


def test_unloadable_model(capsys, tmp_path, superni_mini):
    cfg = _config(tmp_path, superni_mini)
    _one_line_error(capsys, ["train", cfg, f"model.name={tmp_path / 'no-model'}"], "cannot load")


def test_score_bad_predictions(capsys, tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"id": "1", "task": "t", "prediction": "a", "references": ["a"]}\n{"id": 2\n')
    _one_line_error(capsys, ["score", str(bad)], "p.jsonl:2")


def test_report_without_runs(capsys, tmp_path):
    _one_line_error(capsys, ["report", str(tmp_path)], "no finished runs")


def test_evaluate_not_a_run(capsys, tmp_path):
    _one_line_error(capsys, ["evaluate", str(tmp_path)], "not a peftbench run directory")


def test_demo_rejects_non_preset(capsys, tmp_path):
    _one_line_error(capsys, ["demo", "--output-dir", str(tmp_path), "--model", "gpt2-xl"], "tiny preset")


@pytest.mark.slow
def test_real_process_exit_code_and_stderr(tmp_path):
    """The same path through a real `python -m peftbench` process: exit status 2, one line, no traceback."""
    proc = run_cli("train", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "does not exist" in proc.stderr


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_of_every_command(name, capsys):
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    assert "usage: peftbench " + name in capsys.readouterr().out
