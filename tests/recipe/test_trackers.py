"""``train.report_to`` with W&B (offline) and MLflow (a local file store): one real run through the CLI logs to
both, and each is read back with its own reader and compared with the run's ``metrics.json`` and ``config.yaml``:
every training loss and learning rate, every validation score, the test scores and the resolved config."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_superni_mini, run_cli, tiny_mini_config

pytest.importorskip("wandb", reason="W&B is an optional extra: pip install 'peftbench[wandb]'")
pytest.importorskip("mlflow", reason="MLflow is an optional extra: pip install 'peftbench[mlflow]'")

STEPS = 4


@pytest.fixture(scope="module")
def logged(tmp_path_factory) -> dict:
    """One 4-step run (logging every step, validation every 2) with report_to [wandb, mlflow]."""
    data_dir = require_superni_mini()
    root = tmp_path_factory.mktemp("trackers")
    raw = tiny_mini_config(data_dir, root / "runs", run_name="tracked")
    raw["train"].update(max_steps=STEPS, logging_steps=1, eval_steps=2, report_to=["wandb", "mlflow"])
    raw["data"]["num_validation_tasks"] = 2
    config = root / "c.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "MLFLOW_TRACKING_URI": (root / "mlruns").as_uri()}
    proc = run_cli("train", str(config), "--no-progress", env=env, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = root / "runs" / "tracked"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "root": root,
        "run_dir": run_dir,
        "metrics": metrics,
        "config": yaml.safe_load((run_dir / "config.yaml").read_text()),
    }


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _expected_series(metrics: dict) -> dict[str, list[tuple[int, float]]]:
    train = metrics["train"]
    steps = [step for step, _ in train["losses"]]
    assert steps == list(range(1, STEPS + 1))
    return {
        "train/loss": [(step, loss) for step, loss in train["losses"]],
        "validation/rougeL": [(step, score) for step, score in train["validation"]],
    }


def _wandb_records(path: Path) -> list:
    """The protobuf records of an offline run's ``.wandb`` file: W&B's LevelDB-style log (a 7-byte file header, then
    32 KiB blocks of records with a 7-byte header: CRC, length, type FULL 1 / FIRST 2 / MIDDLE 3 / LAST 4)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    block, pos, chunks, pending = 32768, 7, [], b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            chunks.append(chunk)
        elif kind in (2, 3):
            pending += chunk
        elif kind == 4:
            chunks.append(pending + chunk)
            pending = b""
    records = []
    for chunk in chunks:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        records.append(record)
    return records


@pytest.mark.slow
@pytest.mark.xdist_group("trackers")
def test_wandb_offline_run_holds_losses_learning_rate_scores_and_config(logged):
    run_dir = logged["run_dir"]
    (log,) = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))  # files under the run directory
    records = _wandb_records(log)
    rows = []
    config = {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            rows.append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            )
        elif kind == "config":
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "run":
            assert record.run.project == "peftbench" and record.run.display_name == "tracked"
    series = {
        key: [(row["_step"], row[key]) for row in rows if key in row] for key in ("train/loss", "validation/rougeL")
    }
    assert series == _expected_series(logged["metrics"])
    rates = [row["train/learning_rate"] for row in rows if "train/learning_rate" in row]
    assert len(rates) == STEPS and rates[0] == pytest.approx(logged["config"]["train"]["learning_rate"] * 3 / 4)
    assert rates == sorted(rates, reverse=True) and rates[-1] == 0  # linear decay, no warm-up in 4 steps
    last = rows[-1]
    for key, value in logged["metrics"]["overall"].items():
        assert last[f"test/{key}"] == value and last["_step"] == STEPS
    expected_config = {
        k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in _flat(logged["config"]).items()
    }
    assert config.get("method.name") == "lora"
    assert {k: v for k, v in config.items() if not k.startswith("_")} == expected_config


@pytest.mark.slow
@pytest.mark.xdist_group("trackers")
def test_mlflow_file_store_holds_losses_learning_rate_scores_and_config(logged, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 refuses its file store without it

    client = MlflowClient(tracking_uri=(logged["root"] / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("peftbench")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"

    def history(key: str) -> list[tuple[int, float]]:
        return [
            (m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        ]

    for key, expected in _expected_series(logged["metrics"]).items():
        assert history(key) == expected, key
    assert [step for step, _ in history("train/learning_rate")] == list(range(1, STEPS + 1))
    for key, value in logged["metrics"]["overall"].items():
        assert history(f"test/{key}") == [(STEPS, value)]
    params = run.data.params  # MLflow keeps parameters as strings
    assert params == {k: str(v) for k, v in _flat(logged["config"]).items()}


def test_status_ignores_the_config_files_wandb_keeps_in_a_run_directory(tmp_path, cli):
    run_dir = tmp_path / "runs" / "lora-run"
    (run_dir / "wandb" / "run-20260101_000000-abc" / "files").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "tiny-t5"}, "method": {"name": "lora"}}))
    (run_dir / "wandb" / "run-20260101_000000-abc" / "files" / "config.yaml").write_text("_wandb: {value: {}}\n")
    done = cli("status", str(tmp_path / "runs"))
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()[1:]] == ["lora-run"]
