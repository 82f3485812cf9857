"""peftbench from Python (notebooks, scripts): thin functions over what the ``peftbench`` command runs.

Importable as ``peftbench.<name>`` (listed in ``peftbench.__all__``)::

    import peftbench

    cfg = peftbench.preset("lora", mode="dev", overrides={"train.max_steps": 10})
    result = peftbench.run(cfg)                       # train + evaluate; result.run_dir, result.metrics
    peftbench.evaluate(result.run_dir)                # re-score from the saved weights
    peftbench.score([{"id": "1", "task": "t", "prediction": "yes", "references": ["Yes"]}])
    peftbench.export(result.run_dir, "lora-adapter")  # a standard peft adapter directory
    model = peftbench.load_trained(None, "lora-adapter")
    peftbench.report(result.run_dir.parent)           # report.md / .html / .csv / .png

Errors a user can fix raise :class:`peftbench.PeftbenchError` with a one-line message, as on the command line.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftbench.config import ExperimentConfig
from peftbench.errors import PeftbenchError
from peftbench.trained import load_trained

if TYPE_CHECKING:
    from peftbench.export import ExportResult
    from peftbench.recipe.run import RunResult
    from peftbench.report.build import ReportFiles

__all__ = ["evaluate", "export", "load_config", "load_trained", "preset", "report", "run", "score"]

Overrides = Mapping[str, Any] | Sequence[str] | None
"""Dotted overrides: ``{"train.learning_rate": 1e-4, "method.r": 16}`` (values as they are) or, as on the command
line, ``["train.learning_rate=1e-4", "method.r=16"]`` (values read as YAML)."""


def _as_strings(overrides: Overrides) -> tuple[list[str], dict[str, Any]]:
    if overrides is None:
        return [], {}
    if isinstance(overrides, Mapping):
        return [], dict(overrides)
    if isinstance(overrides, str):
        return [overrides], {}
    return list(overrides), {}


def _set(raw: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    from peftbench.configure import set_dotted

    for key, value in values.items():
        path = [p for p in str(key).split(".") if p]
        if not path:
            raise PeftbenchError(f"override {key!r} has an empty key")
        set_dotted(raw, path, value, str(key))
    return raw


def load_config(
    config: str | Path | Mapping[str, Any] | ExperimentConfig, overrides: Overrides = None
) -> ExperimentConfig:
    """A validated, fully resolved config from a YAML file, a plain dict (the YAML's structure) or an existing
    config, with dotted overrides applied."""
    from peftbench.configure import apply_overrides, config_from_dict, read_config_file

    strings, values = _as_strings(overrides)
    if isinstance(config, ExperimentConfig):
        if not strings and not values:
            return config
        raw = config.to_dict()
    elif isinstance(config, Mapping):
        raw = copy.deepcopy(dict(config))
    else:
        raw = read_config_file(config)
    return config_from_dict(_set(apply_overrides(raw, strings), values))


def preset(method: str, mode: str = "dev", overrides: Overrides = None) -> ExperimentConfig:
    """A named preset's config (``peftbench run METHOD --mode MODE``): ``dev`` is CPU-sized, ``full`` the study's."""
    from peftbench.launch.presets import preset_config

    if mode not in ("dev", "full"):
        raise PeftbenchError(f"mode must be 'dev' or 'full', not {mode!r}")
    strings, values = _as_strings(overrides)
    return load_config(preset_config(method, mode, strings), values)


def run(
    config: str | Path | Mapping[str, Any] | ExperimentConfig,
    overrides: Overrides = None,
    *,
    progress: bool = False,
    quiet: bool = True,
) -> RunResult:
    """Trains and evaluates one configuration (``peftbench train``) in this process; returns the run directory and
    its metrics. A finished run is not redone (``result.skipped``); an interrupted one resumes."""
    from peftbench.recipe.run import run_experiment

    return run_experiment(load_config(config, overrides), progress=progress, quiet=quiet)


def evaluate(run_dir: str | Path, *, progress: bool = False, quiet: bool = True) -> RunResult:
    """Re-scores a run's test split from its saved weights (``peftbench evaluate``)."""
    from peftbench.recipe.run import evaluate_run

    return evaluate_run(run_dir, progress=progress, quiet=quiet)


def score(predictions: str | Path | Iterable[Mapping[str, Any]], *, xlingual: bool = False) -> dict[str, Any]:
    """Official SuperNI metrics (``peftbench score``) for a predictions JSONL file or records with ``id``, ``task``,
    ``prediction``, ``references`` and optionally ``category``: overall, per task and per category."""
    from peftbench.evaluation.metrics import read_predictions, score_predictions

    records = read_predictions(predictions) if isinstance(predictions, (str, Path)) else list(predictions)
    return score_predictions(records, xlingual=xlingual)


def export(run_dir: str | Path, out: str | Path, *, merge: bool = False) -> ExportResult:
    """Exports a run's trained weights (``peftbench export``): a peft adapter, a merged plain model (``merge``) or a
    peftbench adapter directory, each recording its base model; :func:`load_trained` loads any of them."""
    from peftbench.export import export_run

    return export_run(run_dir, out, merge=merge)


def report(
    runs_dir: str | Path,
    output: str | Path | None = None,
    *,
    intervals: bool = True,
    bootstrap: int | None = None,
    seed: int | None = None,
) -> ReportFiles:
    """Writes the comparison of every finished run below ``runs_dir`` (``peftbench report``); returns the files and
    the printed tables. ``intervals=False`` is ``--no-intervals``; ``bootstrap=0`` still means the same."""
    from peftbench.report.build import write_report

    return write_report(runs_dir, output, intervals=intervals, bootstrap=bootstrap, seed=seed)
