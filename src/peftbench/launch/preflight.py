"""Checks before peftbench starts processes: the devices a launch asks for, the data, the model.

A run started with ``launch.num_processes`` > 1 is restarted under ``accelerate launch`` / ``torchrun``; every
process would then fail on its own (the same error N times, with the launcher's traceback). These checks run
once, in the process the user started, before any other process: cheap (no task file or weight is read), and
one line naming every problem.
"""

from __future__ import annotations

from collections.abc import Iterable

from peftbench.config import ExperimentConfig
from peftbench.demodata import DEMO_DATA
from peftbench.errors import PeftbenchError


def device_problem(cfg: ExperimentConfig, gpus: int | None = None) -> str | None:
    """Why this machine cannot start the run's processes (None when it can).

    One process per GPU: ``launch.num_processes`` above 1 needs that many GPUs here, unless
    ``launch.gpus_per_process`` is 0 (CPU processes under torchrun, gloo). ``gpus``: the GPUs present
    (default ``torch.cuda.device_count()``).
    """
    launch = cfg.launch
    n = launch.num_processes
    if n <= 1 or launch.gpus_per_process == 0:
        return None
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count()
    if gpus >= n:
        return None
    have = "no GPU" if gpus == 0 else f"only {gpus} GPU{'s' if gpus > 1 else ''}"
    return (
        f"launch.num_processes={n} starts one process per GPU, but this machine has {have}: "
        f"override it, e.g. launch.num_processes={max(gpus, 1)}"
        + (
            " (or launch.gpus_per_process=0 launch.accelerate_config=null for CPU processes under torchrun)"
            if gpus == 0
            else ""
        )
    )


def data_problem(cfg: ExperimentConfig) -> str | None:
    """Why the run's data cannot be read (None when the split's lists and task files are in place)."""
    from peftbench.data.superni import split_task_lists

    if cfg.data.data_dir == DEMO_DATA:  # generated on first use
        return None
    try:
        split_task_lists(cfg.data)
    except PeftbenchError as exc:
        return str(exc)
    return None


def model_problem(cfg: ExperimentConfig) -> str | None:
    """Why the base model's configuration cannot be read (None when it can; weights are not read)."""
    from peftbench.models import check_model

    try:
        check_model(cfg.model)
    except PeftbenchError as exc:
        return str(exc)
    return None


def detected_gpu_memory() -> int | None:
    """Bytes of memory of this machine's first GPU (None without one): what a launch here is planned against."""
    import torch

    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.get_device_properties(0).total_memory)


def _memory_key(cfg: ExperimentConfig) -> str:
    """What the planned memory depends on: the config without seed, learning rate, names and places."""
    import json

    raw = cfg.to_dict()
    for key in ("seed", "output_dir", "run_name"):
        raw.pop(key, None)
    raw["train"] = {k: v for k, v in raw["train"].items() if k not in ("learning_rate", "report_to", "max_steps")}
    return json.dumps(raw, sort_keys=True, default=str)


def memory_problem(cfg: ExperimentConfig, gpu_bytes: int) -> str | None:
    """Why the run would not fit in ``gpu_bytes`` per device, planned from shapes alone
    (:func:`peftbench.memory.plan.plan_memory`: training and generation steps on fake weights), with what would
    fit; None when it fits."""
    from peftbench.memory.plan import plan_memory

    if cfg.launch.gpus_per_process == 0:
        return None  # CPU processes: no GPU memory to plan against
    try:
        problem = plan_memory(cfg, alternatives=True).fits(gpu_bytes)
    except PeftbenchError:
        return None  # a model that cannot be read is model_problem's to report
    return f"{cfg.method_name} on {cfg.model.name}: {problem}" if problem else None


def preflight(configs: Iterable[ExperimentConfig], gpus: int | None = None, gpu_memory: int | None = None) -> None:
    """Checks devices, data, model and memory of every config (each distinct data, model and memory shape once);
    raises one :class:`PeftbenchError` naming every problem found, before any process is started.

    Memory is planned against ``gpu_memory`` bytes per device (``--gpu-memory``), else against the GPU detected
    here; without either (a CPU machine, a login node) it is not checked."""
    problems: list[str] = []
    seen: set[str] = set()
    memory = gpu_memory if gpu_memory is not None else detected_gpu_memory()
    for cfg in configs:
        checks = [
            (f"launch:{cfg.launch.num_processes}:{cfg.launch.gpus_per_process}", lambda c=cfg: device_problem(c, gpus)),
            (f"data:{cfg.data.data_dir}:{cfg.data.split}", lambda c=cfg: data_problem(c)),
            (f"model:{cfg.model.name}", lambda c=cfg: model_problem(c)),
        ]
        if memory is not None:
            checks.append((f"memory:{_memory_key(cfg)}", lambda c=cfg: memory_problem(c, memory)))
        for key, check in checks:
            if key in seen:
                continue
            seen.add(key)
            problem = check()
            if problem and problem not in problems:
                problems.append(problem)
    if problems:
        raise PeftbenchError("nothing was started: " + "; ".join(problems))


def memory_preflight(configs: Iterable[ExperimentConfig], gpu_memory: int) -> None:
    """The memory check alone (for the Slurm launcher, whose data and GPUs are on the compute nodes): raises one
    :class:`PeftbenchError` naming every run whose planned peak exceeds ``gpu_memory`` bytes per device."""
    problems: list[str] = []
    seen: set[str] = set()
    for cfg in configs:
        key = _memory_key(cfg)
        if key not in seen:
            seen.add(key)
            problem = memory_problem(cfg, gpu_memory)
            if problem and problem not in problems:
                problems.append(problem)
    if problems:
        raise PeftbenchError("nothing was started: " + "; ".join(problems))
