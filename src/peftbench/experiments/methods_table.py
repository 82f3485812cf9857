"""The text behind ``peftbench methods``: every registered method, its options and, for a model, its size."""

from __future__ import annotations

from dataclasses import MISSING, fields

from peftbench.config import ModelConfig
from peftbench.errors import PeftbenchError
from peftbench.methods import MethodSpec, all_methods, build_method_config
from peftbench.models import count_parameters, load_model


def _options(spec: MethodSpec) -> str:
    parts = []
    for f in fields(spec.config_cls):
        default = (
            f.default
            if f.default is not MISSING
            else (f.default_factory() if f.default_factory is not MISSING else "?")
        )
        parts.append(f"{f.name}={default}")
    return ", ".join(parts) or "-"


def method_size(spec: MethodSpec, model_name: str, options: dict | None = None) -> tuple[int, int] | str:
    """(trainable, total) parameters of ``spec`` on a model, or the reason it is unsupported."""
    model = load_model(ModelConfig(name=model_name))
    reason = spec.supports(model.config)
    if reason:
        return reason
    model = spec.apply(model, build_method_config(spec.name, options or {}))
    return count_parameters(model)


def methods_table(model_name: str | None = None) -> str:
    """A plain-text listing of the registry (with trainable counts when ``model_name`` is given)."""
    lines = []
    for spec in all_methods():
        lines.append(f"{spec.name}: {spec.summary}")
        lines.append(f"    options: {_options(spec)}")
        lines.append(f"    defaults: lr {spec.default_learning_rate:g}, {spec.lr_scheduler} schedule, "
                     f"warmup {spec.warmup_ratio:g}")  # fmt: skip
        lines.append(f"    paper: {spec.paper}")
        if model_name:
            try:
                size = method_size(spec, model_name)
            except PeftbenchError:
                raise  # e.g. a model that cannot be loaded: one line for the whole listing
            except (ValueError, TypeError, NotImplementedError) as exc:  # a library refusing this architecture
                size = f"not supported: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            if isinstance(size, str):
                lines.append(f"    on {model_name}: not supported ({size})")
            else:
                trainable, total = size
                lines.append(
                    f"    on {model_name}: {trainable:,} trainable of {total:,} ({100 * trainable / total:.4f}%)"
                )
        if spec.count_note:
            lines.append(f"    counting: {spec.count_note}")
    return "\n".join(lines)
