"""``peftbench check-method NAME``: the contract every built-in method passes, run on any registered method
(a plugin's too), one line per property (:mod:`peftbench.recipe.contract` holds the checks; the export round trip,
which needs :mod:`peftbench.exporter`, is here)."""

from __future__ import annotations

from pathlib import Path

from peftbench.config import ExperimentConfig
from peftbench.errors import PeftbenchError
from peftbench.recipe.contract import CHECKS, MODELS, run_contract


def export_round_trip(cfg: ExperimentConfig, run_dir: Path, workdir: Path) -> str | None:
    """check-method's export property: ``export_run`` + ``load_trained`` give the run's logits exactly."""
    import torch

    from peftbench.exporter import export_run
    from peftbench.recipe.contract import train_batch
    from peftbench.recipe.rundir import load_trainable
    from peftbench.recipe.setup import build_model
    from peftbench.trained import load_trained

    out = workdir / f"{cfg.model.name}-export"
    result = export_run(run_dir, out)
    model, tokenizer = build_model(cfg)
    load_trainable(model, run_dir / "trainable.safetensors")
    batch = train_batch(model, tokenizer)
    with torch.no_grad():
        want = model.eval()(**batch).logits
        got = load_trained(None, out)(**batch).logits
    if not torch.equal(got, want):
        return f"the {result.kind} export's logits differ (max |diff| {(got - want).abs().max().item():.3g})"
    return None


def check_method(name: str, model: str = "both", module: str | None = None, only: str | None = None) -> int:
    """Runs the contract on ``model`` (``tiny-t5``, ``tiny-llama`` or ``both``), printing one line per property;
    ``only`` (comma-separated check names) restricts it. Returns the exit status (0 only when no property fails)."""
    models = MODELS if model == "both" else (model,)
    extra = {"export": ("export -> load_trained gives equal logits", export_round_trip)}
    checks = None
    if only is not None:
        checks = tuple(c.strip().replace("-", "_") for c in only.split(",") if c.strip())
        known = [*CHECKS, *extra]
        unknown = [c for c in checks if c not in known]
        if unknown or not checks:
            raise PeftbenchError(
                f"--only {only!r}: unknown check {unknown[0] if unknown else '(none)'!r}; checks: {', '.join(known)}"
            )
        if "export" in checks and "resume" not in checks:
            checks = (*checks, "resume")  # the export round trip exports the resume check's finished run
    failed = 0
    for outcome in run_contract(name, models, module=module, extra=extra, only=checks):
        print(outcome.line(), flush=True)
        failed += outcome.status == "FAIL"
    verdict = "meets the method contract" if checks is None else f"passes the checks run ({', '.join(checks)})"
    print(f"{name}: {'FAILED ' + str(failed) + ' check(s)' if failed else verdict}")
    return 1 if failed else 0
