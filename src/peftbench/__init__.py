"""peftbench: which parameter-efficient fine-tuning method should I use to instruction-tune a model?

The Python API (:mod:`peftbench.api`; examples in the README)::

    import peftbench
    result = peftbench.run(peftbench.preset("lora", mode="dev"))

``run``, ``evaluate``, ``score``, ``export``, ``load_trained``, ``report``, ``load_config`` and ``preset`` are
imported on first use, so ``import peftbench`` itself loads neither torch nor transformers (``__init__.pyi``
gives type checkers their signatures).
"""

from __future__ import annotations

import importlib
from typing import Any

from peftbench.errors import PeftbenchError
from peftbench.version import __version__

__all__ = [
    "PeftbenchError",
    "__version__",
    "evaluate",
    "export",
    "load_config",
    "load_trained",
    "preset",
    "report",
    "run",
    "score",
]


def __getattr__(name: str) -> Any:
    """The API's functions, imported from ``peftbench.api`` when first asked for."""
    if name in __all__:
        value = getattr(importlib.import_module("peftbench.api"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'peftbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
