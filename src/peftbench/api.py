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

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftbench import configure
from peftbench.config import ExperimentConfig
from peftbench.configure import Overrides
from peftbench.errors import PeftbenchError
from peftbench.trained import load_trained

if TYPE_CHECKING:
    from peftbench.exporter import ExportResult
    from peftbench.recipe.run import RunResult
    from peftbench.reporting.build import ReportFiles

__all__ = ["evaluate", "export", "load_config", "load_trained", "preset", "report", "run", "score"]

load_config = configure.load_config
"""A validated, fully resolved config (:func:`peftbench.configure.load_config`, what ``peftbench train`` uses)."""


def preset(method: str, mode: str = "dev", overrides: Overrides = None) -> ExperimentConfig:
    """A named preset's config (``peftbench run METHOD --mode MODE``): ``dev`` is CPU-sized, ``full`` the study's."""
    from peftbench.configure import config_from_dict
    from peftbench.launch.presets import named_modules, preset_config, preset_dict

    if mode not in ("dev", "full"):
        raise PeftbenchError(f"mode must be 'dev' or 'full', not {mode!r}")
    if isinstance(overrides, Mapping):  # values as they are, applied over the preset
        return load_config(config_from_dict(preset_dict(method, mode, named_modules(overrides))), overrides)
    return preset_config(method, mode, [overrides] if isinstance(overrides, str) else list(overrides or []))


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
    from peftbench.exporter import export_run

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
    from peftbench.reporting.build import write_report

    return write_report(runs_dir, output, intervals=intervals, bootstrap=bootstrap, seed=seed)
