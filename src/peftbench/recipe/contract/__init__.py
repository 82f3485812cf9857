"""The method contract: what every registered method meets, checked on tiny T5 / tiny LLaMA models.

``peftbench check-method NAME`` runs :func:`run_contract` (a method from a plugin or ``method.module`` included);
the repository's own tests call the same check functions for the built-ins (``check_generation`` in
tests/evaluation/test_generation_fidelity.py, ``fp32_problem`` in tests/test_dtypes.py). Each check returns
``None`` when the property holds, else a one-line reason; :class:`Skip` says why a check does not apply.
docs/own-method.md explains each property and what to fix when it fails. The checks on a built model are in
``model_checks``, those on whole runs (resume, two ranks) in ``run_checks``; this module runs them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftbench.config import ExperimentConfig
from peftbench.methods import get_method
from peftbench.recipe.contract.common import DOC, MODELS, Skip, build, contract_config, train_batch
from peftbench.recipe.contract.model_checks import (
    check_fp32_trainable,
    check_generation,
    check_generation_matches_forward,
    check_only_method_trains,
    check_parameter_count,
    check_save_load,
    decisive,
    fp32_problem,
    generation_features,
    perturb,
    training_problem,
)
from peftbench.recipe.contract.run_checks import check_distributed, check_resume, run_config
from peftbench.training.preemption import Preempted

__all__ = [
    "CHECKS",
    "MODELS",
    "Outcome",
    "Skip",
    "check_generation",
    "contract_config",
    "decisive",
    "fp32_problem",
    "generation_features",
    "perturb",
    "run_config",
    "run_contract",
    "train_batch",
    "training_problem",
]


@dataclass(frozen=True)
class Outcome:
    """One property on one model: PASS, FAIL (with the reason and where to read on) or SKIP (with why)."""

    check: str
    model: str
    status: str
    detail: str = ""
    label: str = ""

    def line(self) -> str:
        what = self.label or (CHECKS[self.check][0] if self.check in CHECKS else self.check)
        text = f"{self.status:<4}  {self.model:<10}  {what}"
        if self.status == "FAIL":
            return f"{text}: {self.detail} (see {DOC}#{self.check.replace('_', '-')})"
        return f"{text}: {self.detail}" if self.detail else text


CHECKS: dict[str, tuple[str, Callable[..., str | None]]] = {
    "only_method_trains": ("only the method's parameters train", check_only_method_trains),
    "fp32_trainable": ("trainable weights stay fp32 on a bf16 base", check_fp32_trainable),
    "generation": ("evaluation's generation equals a cache-free greedy forward loop", check_generation_matches_forward),
    "save_load": ("save -> load gives equal logits", check_save_load),
    "resume": ("SIGTERM + resume is bit-identical to an uninterrupted run", check_resume),
    "distributed": ("two ranks train as one", check_distributed),
    "parameter_count": ("the trainable count matches the spec's count function or formula", check_parameter_count),
}
"""check -> (what it states, the function). Functions take the config, and ``workdir`` where they name it."""

EXPORT = "export"


def run_contract(
    name: str,
    models: tuple[str, ...] = MODELS,
    *,
    module: str | None = None,
    options: dict[str, Any] | None = None,
    workdir: Path | None = None,
    extra: dict[str, tuple[str, Callable[[ExperimentConfig, Path, Path], str | None]]] | None = None,
    only: tuple[str, ...] | None = None,
) -> Iterator[Outcome]:
    """Runs the contract for method ``name`` on each model it supports; yields one outcome per property.
    ``extra`` adds checks that take (config, finished run directory from the resume check, workdir) (the CLI adds
    the export round-trip, which lives above this floor); ``only`` restricts to the named checks."""
    method_options = {**({"module": module} if module else {}), **(options or {})}
    with tempfile.TemporaryDirectory(prefix="peftbench-contract-") as tmp:
        work = Path(workdir) if workdir is not None else Path(tmp)
        for model in models:
            cfg = contract_config(model, name, **method_options)  # loads method.module, checks the options
            reason = get_method(name).supports(build(cfg, apply_method=False)[0].config)
            if reason:
                yield Outcome("supported", model, "SKIP", f"the method does not support {model}: {reason}")
                continue
            (work / model).mkdir(parents=True, exist_ok=True)
            for check, (label, fn) in CHECKS.items():
                if not only or check in only:
                    yield _outcome(check, label, model, lambda f=fn, c=cfg: f(c, work) if _takes_workdir(f) else f(c))
            for check, (label, fn) in (extra or {}).items():
                if only and check not in only:
                    continue
                run_dir = work / model / "resumed"
                if not (run_dir / "metrics.json").is_file():
                    yield Outcome(check, model, "SKIP", "needs the finished run of the resume check", label)
                    continue
                yield _outcome(check, label, model, lambda f=fn, c=cfg, r=run_dir: f(c, r, work))


def _takes_workdir(fn: Callable[..., Any]) -> bool:
    return fn.__code__.co_argcount > 1


def _outcome(check: str, label: str, model: str, call: Callable[[], str | None]) -> Outcome:
    try:
        problem = call()
    except Skip as exc:
        return Outcome(check, model, "SKIP", str(exc), label)
    except Preempted as exc:
        return Outcome(check, model, "FAIL", f"the run stopped unexpectedly: {exc}", label)
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return Outcome(check, model, "FAIL", f"{type(exc).__name__}: {text}" if text else type(exc).__name__, label)
    return Outcome(check, model, "PASS" if problem is None else "FAIL", problem or "", label)
