"""The PEFT methods: one module per method (or per small family: ``lycoris`` holds LoHa and LoKr, ``ia3`` IA3 and
its feed-forward-only variant, ``adapters`` Houlsby's and Pfeiffer's bottleneck adapters), and their shared
machinery in :mod:`peftbench.methods.core` (the registry, budgets, precision, peft wrapping, bottleneck sites, the
methods table).

One method = one module holding a typed config dataclass and an ``apply(model, config)`` function,
registered by one ``register(MethodSpec(...))`` line. Methods from installed packages (entry points of the
group ``peftbench.methods``) and from ``method.module`` register the same way (docs/own-method.md). The trainer
only ever talks to a ``MethodSpec``; it never branches on a method's name.

``apply`` receives a freshly loaded Hugging Face ``PreTrainedModel`` and returns the module to train
(the same model changed in place, or a peft wrapper around it). On return, exactly the method's own
parameters have ``requires_grad=True``; everything else is frozen. Those parameters are what a run
saves (``trainable.safetensors``) and what it reports as trainable.
"""

from peftbench.methods.core.registry import (
    Anatomy,
    MethodSpec,
    SizeKnob,
    TrainingHooks,
    all_methods,
    apply_method,
    build_method_config,
    builtin_methods,
    freeze_all,
    get_method,
    is_layer_norm,
    load_method_module,
    load_plugins,
    method_origin,
    register,
    spec_problem,
    trainable_parameters,
    unfreeze_layer_norms,
)

__all__ = [
    "Anatomy",
    "MethodSpec",
    "SizeKnob",
    "TrainingHooks",
    "all_methods",
    "apply_method",
    "build_method_config",
    "builtin_methods",
    "freeze_all",
    "get_method",
    "is_layer_norm",
    "load_method_module",
    "load_plugins",
    "method_origin",
    "register",
    "spec_problem",
    "trainable_parameters",
    "unfreeze_layer_norms",
]

# Each import below registers one method (a single `register(...)` line at the bottom of the module).
from peftbench.methods import (  # noqa: I001  (registration order = table order)
    full,  # noqa: F401
    lora,  # noqa: F401
    dora,  # noqa: F401
    adalora,  # noqa: F401
    lycoris,  # noqa: F401
    vera,  # noqa: F401
    adapters,  # noqa: F401
    parallel_adapter,  # noqa: F401
    compacter,  # noqa: F401
    prefix,  # noqa: F401
    prompt,  # noqa: F401
    ptuning,  # noqa: F401
    ia3,  # noqa: F401
    bitfit,  # noqa: F401
    ln_tuning,  # noqa: F401
)
