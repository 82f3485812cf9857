"""peftbench's demo: deterministic SuperNI-format data from procedural tasks, for ``peftbench demo``.

Split by layer: ``words`` (word lists and drawing helpers), ``skills`` (instance makers and wrong answers),
``tasks`` (the task table and splits), ``writer`` (the dataset on disk, with its completeness stamp). Nothing in
``peftbench.data`` (the SuperNI pipeline) imports this package.
"""

from peftbench.demo.tasks import DEMO_SPLIT, PRETRAIN_SPLIT
from peftbench.demo.writer import GENERATOR_VERSION, generate_demo_data

__all__ = ["DEMO_SPLIT", "GENERATOR_VERSION", "PRETRAIN_SPLIT", "generate_demo_data"]
