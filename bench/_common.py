"""Shared helpers of the benchmarks: one result line each, ``name: value (ratio vs baseline)``."""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from typing import Any


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--quick", action="store_true", help="a smaller run (for smoke tests)")
    return p


def best_time(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """The fastest of ``repeat`` timed calls (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def report(name: str, value: float, unit: str, ratio: float | None = None, baseline: str = "", goal: str = "") -> str:
    """Prints and returns one result line."""
    text = f"{name}: {value:,.4g} {unit}"
    if ratio is not None:
        text += f" ({ratio:.3g}x vs {baseline})"
    if goal:
        text += f" [goal {goal}]"
    print(text, flush=True)
    return text


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
