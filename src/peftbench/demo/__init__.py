"""peftbench's demo: deterministic SuperNI-format data from procedural tasks, for ``peftbench demo``.

Split by layer: ``words`` (word lists and drawing helpers), ``skills`` (instance makers and wrong answers),
``tasks`` (the task table and splits), ``writer`` (the dataset on disk, with its completeness stamp); and
``runner``, ``peftbench demo`` itself (pre-trained base, baseline, methods, report). ``data.data_dir: "@demo"`` is
resolved here (:func:`data_dir`): nothing in ``peftbench.data`` (the SuperNI pipeline) or in the run recipe
imports the demo. This module does not import ``runner``, which imports the experiments.
"""

from pathlib import Path

from peftbench.demo.tasks import DEMO_SPLIT, PRETRAIN_SPLIT
from peftbench.demo.writer import GENERATOR_VERSION, generate_demo_data
from peftbench.io import cache_dir

DATA = {"seed": 0, "train_instances": 100, "test_instances": 30, "pretrain_instances": 300}
"""Arguments of the demo data generator."""

__all__ = ["DATA", "DEMO_SPLIT", "GENERATOR_VERSION", "PRETRAIN_SPLIT", "data_dir", "generate_demo_data"]


def data_dir() -> Path:
    """The demo's generated tasks (what ``data.data_dir: "@demo"`` means), written once to the cache."""
    return generate_demo_data(cache_dir() / "demo-data", **DATA)
