"""The demo's data: deterministic SuperNI-format tasks made by procedures, what ``data.data_dir: "@demo"`` means.

A data source beside :mod:`peftbench.data` (which reads any SuperNI-layout directory, this one included), split by
layer: ``words`` (word lists and drawing helpers), ``skills`` (instance makers and wrong answers), ``tasks`` (the
task table and splits), ``writer`` (the dataset on disk, with its completeness stamp). :func:`data_dir` writes it
once to the cache. ``peftbench demo`` itself (pre-trained base, baseline, methods, report) is :mod:`peftbench.demo`,
the top of the package: the run recipe resolves ``@demo`` here, never by importing the demo command.
"""

from pathlib import Path

from peftbench.demodata.tasks import DEMO_SPLIT, PRETRAIN_SPLIT
from peftbench.demodata.writer import GENERATOR_VERSION, generate_demo_data
from peftbench.io import cache_dir

DEMO_DATA = "@demo"
"""What ``data.data_dir`` says to mean this data (the ``dev`` presets' default)."""

DATA = {"seed": 0, "train_instances": 100, "test_instances": 30, "pretrain_instances": 300}
"""Arguments of the demo data generator."""

__all__ = ["DATA", "DEMO_DATA", "DEMO_SPLIT", "GENERATOR_VERSION", "PRETRAIN_SPLIT", "data_dir", "generate_demo_data"]


def data_dir() -> Path:
    """The demo's generated tasks (what ``data.data_dir: "@demo"`` means), written once to the cache."""
    return generate_demo_data(cache_dir() / "demo-data", **DATA)
