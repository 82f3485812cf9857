"""The study's analysis of finished runs: configurations over seeds, and the best one per method.

A *configuration* is a run's config without its seed (and without where or how it ran). Its test scores
are averaged over seeds (mean ± sample standard deviation). The best configuration of a method is the one
with the highest mean **validation** ROUGE-L of the tested weights (the study's protocol: choose on the
validation tasks, report on the test tasks); runs without validation tasks cannot be selected this way.

Every selection is made per base model: runs of different models (or of one model in different dtypes or
sizes) are never compared to choose a configuration, and every table and legend names the model
(:func:`annotate_models`).
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftbench.recipe.runfiles import model_id, model_labels, saved_config, trainable_percent

_NOT_CONFIGURATION = ("seed", "output_dir", "run_name", "launch")
REPEAT_OF = "_repeat_of"
"""Key of a collected run that repeats another's config and seed (``build.collect_runs``): that run's directory."""
_SIZE_KEYS = ("r", "init_r", "size", "num_virtual_tokens", "reduction_factor", "projection_hidden_size")


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def annotate_models(runs: list[dict[str, Any]], root: Path) -> None:
    """Sets each run's ``_model``: the label of its base model (:func:`model_labels`), unique per model; where the
    runs were tested on more than one test set (other test tasks), the label names the data too
    (``tiny-t5 · superni-mini/default``), so that no selection or comparison mixes scores of different test sets."""
    ids = [model_id(root / m["_dir"], m) for m in runs]
    labels = model_labels(ids)
    tests = [tuple(sorted(m.get("per_task") or {})) for m in runs]  # the test set: its tasks (fewer instances
    # per task is the same test set, compared on the instances both have)
    names = {} if len(set(tests)) == 1 else _test_set_names(runs, tests, root)
    for m, i, t in zip(runs, ids, tests, strict=True):
        m["_model"] = f"{labels[i]} · {names[t]}" if names else labels[i]


def _test_set_names(runs: list[dict[str, Any]], tests: list[tuple[str, ...]], root: Path) -> dict[tuple[str, ...], str]:
    """A name per test set: the data directory's name and split of its first run, with a short hash of its tasks
    where two would read the same."""
    names: dict[tuple[str, ...], str] = {}
    for m, t in zip(runs, tests, strict=True):
        data = (saved_config(root / m["_dir"]) or {}).get("data")
        if t not in names and isinstance(data, dict):
            names[t] = f"{Path(str(data.get('data_dir', ''))).name}/{data.get('split', '')}"
    for t in set(tests) - set(names):
        names[t] = "data unknown"
    taken = list(names.values())
    return {
        t: f"{n} #{hashlib.sha256(' '.join(t).encode()).hexdigest()[:6]}" if taken.count(n) > 1 else n
        for t, n in names.items()
    }


@dataclass
class Configuration:
    """Runs that differ only in their seed."""

    key: str
    method: str
    model: str
    learning_rate: float | None
    train_tasks: int | None
    size: str
    """The method's size hyperparameter(s), e.g. 'r=8' (empty for methods of fixed size)."""
    trainable_percent: float
    """Trainable parameters, % of the base model's."""
    runs: list[dict[str, Any]] = field(default_factory=list)
    model_label: str = ""
    """The base model's label in tables and legends (``annotate_models``); configurations are selected per label."""
    also: str = ""
    """The settings that tell it from another configuration of the same method, size, learning rate and task count
    (e.g. ``max_steps=200``), where there is one."""

    @property
    def system(self) -> str:
        """Method and base model, e.g. 'lora · t5-xl-lm-adapt': what a selection chooses one configuration for."""
        return f"{self.method} · {self.model_label}" if self.model_label else self.method

    @property
    def seeds(self) -> list[Any]:
        return sorted(m.get("seed") for m in self.runs)

    def test(self, metric: str = "rougeL") -> tuple[float, float]:
        return _mean_std([m["overall"][metric] for m in self.runs])

    def validation(self) -> tuple[float, float] | None:
        """Mean ± std of the validation ROUGE-L of the weights each run was tested with (the best checkpoint's
        under ``eval.weights: best``; runs from before that record: the final weights'), or None when a run
        has none."""
        scores = []
        for m in self.runs:
            tested = (m.get("weights") or {}).get("validation_rougeL")
            entries = (m.get("train") or {}).get("validation") or []
            if tested is None and not entries:
                return None
            scores.append(float(tested if tested is not None else entries[-1][1]))
        return _mean_std(scores)

    def category(self, name: str) -> tuple[float, float]:
        return _mean_std([m["per_category"][name]["rougeL"] for m in self.runs if name in m.get("per_category", {})])

    def mean_of(self, key: str) -> float | None:
        values = [m.get(key) for m in self.runs if isinstance(m.get(key), (int, float))]
        return statistics.fmean(values) if values else None

    @property
    def label(self) -> str:
        parts = [self.size] if self.size else []
        if self.learning_rate is not None:
            parts.append(f"lr={self.learning_rate:g}")
        if self.train_tasks is not None:
            parts.append(f"tasks={self.train_tasks}")
        if self.also:
            parts.append(self.also)
        return " ".join(parts) or "-"


def configuration_key(run_dir: Path, metrics: dict[str, Any]) -> str:
    """A hash of the run's config.yaml without seed, output location and launch settings."""
    raw = _configuration(run_dir) if saved_config(run_dir) is not None else None
    if raw is None:
        raw = {
            "method": metrics.get("method"),
            "method_config": metrics.get("method_config"),
            "model": metrics.get("model"),
            "lr": (metrics.get("train") or {}).get("learning_rate"),
        }
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:10]


def configurations(runs: list[dict[str, Any]], root: Path) -> list[Configuration]:
    """Groups finished runs (as ``report.collect_runs`` returns them) into configurations."""
    if any("_model" not in m for m in runs):
        annotate_models(runs, root)
    groups: dict[str, Configuration] = {}
    for m in runs:
        if m["method"] == "untrained" or m.get(REPEAT_OF):  # a repeat of a run's config and seed: counted once
            continue
        key = configuration_key(root / m["_dir"], m)
        if key not in groups:
            options = m.get("method_config") or {}
            size = " ".join(f"{k}={options[k]}" for k in _SIZE_KEYS if options.get(k) not in (None, False))
            groups[key] = Configuration(
                key=key,
                method=m["method"],
                model=str(m.get("model", "")),
                learning_rate=(m.get("train") or {}).get("learning_rate"),
                train_tasks=(m.get("data") or {}).get("train_tasks"),
                size=size,
                trainable_percent=trainable_percent(m),
                model_label=m["_model"],
            )
        groups[key].runs.append(m)
    _tell_apart(list(groups.values()), root)
    return sorted(
        groups.values(), key=lambda c: (c.model_label, c.method, c.learning_rate or 0, c.size, c.train_tasks or 0)
    )


def _tell_apart(configs: list[Configuration], root: Path) -> None:
    """Sets ``also`` on configurations whose labels would read the same: the settings of their config.yaml that
    differ between them (the last part of each key, e.g. ``max_steps=200``)."""
    from peftbench.recipe.trackers import flat_config

    same: dict[tuple[str, str, str], list[Configuration]] = {}
    for c in configs:
        same.setdefault((c.model_label, c.method, c.label), []).append(c)
    for group in (g for g in same.values() if len(g) > 1):
        flat = [flat_config(_configuration(root / c.runs[0]["_dir"])) for c in group]
        keys = sorted({k for f in flat for k in f if len({str(g.get(k)) for g in flat}) > 1})
        for c, f in zip(group, flat, strict=True):
            c.also = " ".join(f"{_short(k, keys)}={f.get(k)}" for k in keys)


def _short(key: str, keys: list[str]) -> str:
    """A dotted key's last part where that reads unambiguously (``max_steps``), else the whole key (``data.seed``,
    which is not the training seed; two keys ending alike)."""
    last = key.rsplit(".", 1)[-1]
    clash = last in ("seed", "name") or [k.rsplit(".", 1)[-1] for k in keys].count(last) > 1
    return key if clash else last


def _configuration(run_dir: Path) -> dict[str, Any]:
    """A run's config.yaml without what is not part of its configuration (seed, where and how it ran)."""
    raw = saved_config(run_dir) or {}
    for key in _NOT_CONFIGURATION:
        raw.pop(key, None)
    if isinstance(raw.get("train"), dict):
        raw["train"].pop("report_to", None)
    return raw


def best_per_method(configs: list[Configuration]) -> dict[str, Configuration]:
    """Per method and base model (keyed by ``Configuration.system``), the configuration with the best mean
    validation ROUGE-L (methods without validation: none)."""
    best: dict[str, Configuration] = {}
    for config in configs:
        validation = config.validation()
        if validation is None:
            continue
        current = best.get(config.system)
        if current is None or validation[0] > current.validation()[0]:
            best[config.system] = config
    return best


def best_by(configs: list[Configuration], system: str, attribute: str) -> dict[Any, Configuration]:
    """For one method on one base model (``Configuration.system``) and each value of ``attribute``
    (learning_rate, train_tasks), the configuration chosen on validation (or, when runs have no validation
    scores, the one with the best mean test score)."""
    chosen: dict[Any, Configuration] = {}
    for config in configs:
        if config.system != system or getattr(config, attribute) is None:
            continue
        value = getattr(config, attribute)
        score = (config.validation() or config.test())[0]
        current = chosen.get(value)
        if current is None or score > (current.validation() or current.test())[0]:
            chosen[value] = config
    return dict(sorted(chosen.items()))


TENSOR_KINDS = ("tensor_bytes", "cuda_max_allocated")
"""``peak_memory_kind`` values that count a run's own tensor memory (:mod:`peftbench.memory.measure`); older runs
on CPU recorded ``cpu_peak_rss``, the process's peak resident set."""
_KIND_NAMES = {"tensor_bytes": "tensors", "cuda_max_allocated": "CUDA allocated", "cpu_peak_rss": "process RSS"}


def memory_header(runs: list[dict[str, Any]]) -> str:
    """The peak-memory column's name: "peak tensor memory (MB)" when every run with a figure counted its own
    tensors, else "peak memory (MB)" (older runs' process RSS among them: the kind column tells which)."""
    kinds = {m.get("peak_memory_kind") for m in runs if isinstance(m.get("peak_memory_mb"), (int, float))}
    return "peak tensor memory (MB)" if kinds and kinds <= set(TENSOR_KINDS) else "peak memory (MB)"


def memory_measured(m: dict[str, Any]) -> str:
    """What a run's peak-memory figure is, in a few words: 'tensors, training', 'CUDA allocated, evaluation',
    'process RSS' ('' without a figure)."""
    if not isinstance(m.get("peak_memory_mb"), (int, float)):
        return ""
    kind = str(m.get("peak_memory_kind") or "")
    name = _KIND_NAMES.get(kind, kind or "unknown")
    if kind not in TENSOR_KINDS:
        return name
    phase = m.get("peak_memory_of") or ("training" if m.get("train") else "evaluation")
    return f"{name}, {phase}"
