"""The benchmark scripts stay importable (no timing here: benchmarks are run by hand, see docs/benchmarks.md),
and the full-scale data generator writes a checkout that loads."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from peftbench.config import DataConfig
from peftbench.data.examples import load_examples

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if not p.stem.startswith("_"))


@pytest.fixture(autouse=True)
def bench_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_imports_and_has_main(name: str) -> None:
    module = importlib.import_module(name)
    assert callable(getattr(module, "main", None)) and module.__doc__


def test_run_all_lists_every_benchmark() -> None:
    run_all = importlib.import_module("run_all")
    assert sorted(run_all.SCRIPTS) == sorted(f"{n}.py" for n in SCRIPTS if n.endswith("_bench"))
    assert all(name.removesuffix(".py") in SCRIPTS for name in run_all.MEASUREMENTS)
    assert "fidelity_effects.py" in run_all.MEASUREMENTS


def test_scale_generator_writes_a_loadable_checkout(tmp_path: Path) -> None:
    superni_scale = importlib.import_module("superni_scale")
    root = superni_scale.generate(tmp_path / "superni", train_tasks=5, test_tasks=3, instances=7, seed=1)
    data = load_examples(DataConfig(str(root), num_pos_examples=2))
    assert data.stats["train_instances"] == 35 and data.stats["test_instances"] == 21
    assert len({e.category for e in data.test}) == 3 and data.stats["skipped_instances"] == 0
    again = superni_scale.generate(tmp_path / "again", train_tasks=5, test_tasks=3, instances=7, seed=1)
    for path in sorted((root / "tasks").glob("*.json")):  # deterministic for a seed
        assert (again / "tasks" / path.name).read_bytes() == path.read_bytes()
    assert sys.modules["superni_scale"] is superni_scale
