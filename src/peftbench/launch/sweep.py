"""Sweeps: a YAML grid over methods, their hyperparameters, learning rates, seeds and training-task counts.

A sweep file names a preset ``mode`` and, per method, the values to try::

    mode: dev
    methods:                      # method -> its own axes (crossed), or a list of such (alternatives)
      lora: {method.r: [4, 8]}
      adapter_houlsby: {method.size: [8, 32]}
      prefix: [{method.projection: false}, {method.projection: true, method.projection_hidden_size: [256, 512]}]
    grid:                         # axes shared by every method (crossed)
      train.learning_rate: [1.0e-3, 5.0e-3]
      seed: [1, 2]
    zip:                          # lists of equal length, taken together (one axis)
      data.num_train_tasks: [4, 8]
      train.max_steps: [10, 20]
    overrides: {output_dir: runs/sweep-dev}   # every run
    slurm: {partition: gpu}                    # sbatch options for --launcher slurm

Every combination becomes one run: the method's preset in that mode, with the values applied. Its name
is the run directory's deterministic name (method, size, learning rate, task count, seed, config hash), so
re-running a sweep skips finished runs and resumes pre-empted ones.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from peftbench.config import ExperimentConfig
from peftbench.configure import YamlFloat, YamlInt, apply_overrides, config_from_dict, parse_override, read_config_file
from peftbench.errors import PeftbenchError
from peftbench.launch.presets import MODES, named_modules, preset_dict
from peftbench.recipe.rundir import resolved_run_name, run_dir_for
from peftbench.recipe.runfiles import run_status

SECTIONS = ("mode", "methods", "grid", "zip", "overrides", "slurm")


@dataclass
class Sweep:
    """A parsed sweep file."""

    path: Path
    mode: str
    methods: dict[str, list[dict[str, list[Any]]]]
    """Per method, one or more sets of axes (each set crossed; the sets are alternatives)."""
    grid: dict[str, list[Any]] = field(default_factory=dict)
    zip: dict[str, list[Any]] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepRun:
    """One run of a sweep."""

    name: str
    method: str
    values: dict[str, Any]
    """The sweep's values for this run (dotted key -> value)."""
    config: ExperimentConfig

    @property
    def run_dir(self) -> Path:
        return run_dir_for(self.config)


def _axes(where: str, raw: Any) -> dict[str, list[Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise PeftbenchError(f"{where}: expected a mapping of dotted keys to lists of values")
    out = {}
    for key, values in raw.items():
        values = values if isinstance(values, list) else [values]
        if not values:
            raise PeftbenchError(f"{where}.{key}: empty list of values")
        out[str(key)] = values
    return out


def load_sweep(path: str | Path, extra: list[str] | None = None) -> Sweep:
    """Reads and checks a sweep file (one-line errors). ``extra``: dotted ``key=value`` pairs (as for
    ``peftbench train``) applied to every run, over the file's ``overrides:``; a key the sweep varies is refused."""
    path = Path(path)
    if not path.is_file():
        raise PeftbenchError(f"sweep file {path} does not exist")
    raw = read_config_file(path)
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise PeftbenchError(f"{path}: unknown section(s) {', '.join(unknown)}; sections: {', '.join(SECTIONS)}")
    mode = raw.get("mode", "full")
    if mode not in MODES:
        raise PeftbenchError(f"{path}: mode must be one of {', '.join(MODES)}, got {mode!r}")
    methods_raw = raw.get("methods")
    if isinstance(methods_raw, list):
        methods_raw = {str(m): {} for m in methods_raw}
    if not isinstance(methods_raw, dict) or not methods_raw:
        raise PeftbenchError(f"{path}: 'methods' must list at least one method (a list, or a mapping to its axes)")
    methods = {
        str(m): [_axes(f"methods.{m}", a) for a in (axes if isinstance(axes, list) else [axes])] or [{}]
        for m, axes in methods_raw.items()
    }
    zipped = _axes("zip", raw.get("zip"))
    if len({len(v) for v in zipped.values()}) > 1:
        raise PeftbenchError(f"{path}: every list under 'zip' must have the same length")
    overrides = raw.get("overrides") or {}
    slurm = raw.get("slurm") or {}
    if not isinstance(overrides, dict) or not isinstance(slurm, dict):
        raise PeftbenchError(f"{path}: 'overrides' and 'slurm' must be mappings")
    sweep = Sweep(path, mode, methods, _axes("grid", raw.get("grid")), zipped, overrides, slurm)
    varied = {*sweep.grid, *sweep.zip, *(key for options in methods.values() for axes in options for key in axes)}
    for item in extra or []:
        keys, value = parse_override(item)
        key = ".".join(keys)
        if key in varied:
            raise PeftbenchError(f"{key}={value} overrides a value {path} varies; remove {key} from the sweep first")
        sweep.overrides = {**sweep.overrides, key: value}
    return sweep


def _text(value: Any) -> str:
    """A sweep value as override text: numbers as written in the sweep file, anything else as YAML."""
    if isinstance(value, YamlInt | YamlFloat):
        return value.text
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _assign(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    return apply_overrides(raw, [f"{k}={_text(v)}" for k, v in values.items()])


def expand(sweep: Sweep) -> list[SweepRun]:
    """Every run of the sweep, in a stable order (methods as listed, then the grid's order)."""
    runs: list[SweepRun] = []
    seen: dict[str, dict[str, Any]] = {}
    zip_keys = list(sweep.zip)
    zip_rows = list(zip(*sweep.zip.values(), strict=True)) if zip_keys else [()]
    for method, alternatives in sweep.methods.items():
        for method_axes in alternatives:
            runs += _expand_one(sweep, method, {**sweep.grid, **method_axes}, zip_keys, zip_rows, seen)
    return runs


def _expand_one(
    sweep: Sweep,
    method: str,
    axes: dict[str, list[Any]],
    zip_keys: list[str],
    zip_rows: list[tuple],
    seen: dict[str, dict[str, Any]],
) -> list[SweepRun]:
    runs = []
    keys = list(axes)
    modules = [*named_modules(axes), *named_modules(sweep.zip), *named_modules(sweep.overrides)]
    try:
        base = preset_dict(method, sweep.mode, modules)
    except PeftbenchError as exc:
        raise PeftbenchError(f"{sweep.path}: {exc}") from None
    for combo in itertools.product(*(axes[k] for k in keys)):
        for row in zip_rows:
            values = {**dict(zip(keys, combo, strict=True)), **dict(zip(zip_keys, row, strict=True))}
            raw = _assign(copy.deepcopy(base), {**sweep.overrides, **values})
            try:
                cfg = config_from_dict(raw)
            except PeftbenchError as exc:
                raise PeftbenchError(f"{sweep.path}: run {method} {values}: {exc}") from None
            name = resolved_run_name(cfg)
            if name in seen:
                raise PeftbenchError(
                    f"{sweep.path}: {method} {values} and {seen[name]} are the same run ({name}); remove one"
                )
            seen[name] = {"method": method, **values}
            runs.append(SweepRun(name, method, values, cfg))
    return runs


def estimated_trainable(runs: Iterable[SweepRun]) -> tuple[dict[str, int | str], list[str]]:
    """Trainable parameters per run, counted on meta-device models ('?' where the model cannot be read),
    and notes saying why counts are missing. A model that cannot be read is tried once."""
    from peftbench.methods import get_method
    from peftbench.methods.core.budget import MethodCounter

    cache: dict[str, int | str] = {}
    broken: dict[str, str] = {}
    out: dict[str, int | str] = {}
    for run in runs:
        cfg = run.config
        if cfg.model.name in broken:
            out[run.name] = "?"
            continue
        options = {k: v for k, v in cfg.method.items() if k not in ("name", "budget")}
        key = yaml.safe_dump([cfg.model.name, cfg.model.tokenizer, cfg.method_name, options])
        if key not in cache:
            try:
                cache[key] = MethodCounter(get_method(cfg.method_name), cfg.model).count(options)
            except PeftbenchError as exc:
                if "cannot load model" in str(exc):
                    broken[cfg.model.name] = str(exc)
                cache[key] = "?"
        out[run.name] = cache[key]
    notes = [f"trainable counts unavailable: {reason}" for reason in broken.values()]
    return out, notes


def _label(key: str, keys: Iterable[str]) -> str:
    """A dotted key as the plan shows it: its last part (``train.learning_rate`` -> ``learning_rate``), the one
    before for a bare ``name`` (``model.name`` -> ``model``), the whole key where two would read the same."""
    short = key.rsplit(".", 2)[-2] if key.endswith(".name") else key.split(".")[-1]
    others = [k.rsplit(".", 2)[-2] if k.endswith(".name") else k.split(".")[-1] for k in keys if k != key]
    return key if short in others else short


def plan_table(runs: list[SweepRun], counts: dict[str, int | str] | None = None, notes: Iterable[str] = ()) -> str:
    """The dry-run listing: one line per run with its values, trainable parameters and status."""
    rows = [("run", "method", "values", "trainable", "status")]
    for run in runs:
        shown = ", ".join(f"{_label(k, run.values)}={v}" for k, v in run.values.items()) or "-"
        trainable = (counts or {}).get(run.name, "")
        rows.append(
            (
                run.name,
                run.method,
                shown,
                f"{trainable:,}" if isinstance(trainable, int) else trainable,
                run_status(run.run_dir),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    statuses = [r[4] for r in rows[1:]]
    summary = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
    return "\n".join([*lines, "", f"{len(runs)} runs ({summary})", *notes])
