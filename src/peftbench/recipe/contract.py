"""The method contract: what every registered method meets, checked on tiny T5 / tiny LLaMA models.

``peftbench check-method NAME`` runs :func:`run_contract` (a method from a plugin or ``method.module`` included);
the repository's own tests call the same check functions for the built-ins (``check_generation`` in
tests/evaluation/test_generation_fidelity.py, ``fp32_problem`` in tests/test_dtypes.py). Each check returns
``None`` when the property holds, else a one-line reason; :class:`Skip` says why a check does not apply.
docs/own-method.md explains each property and what to fix when it fails.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from peftbench.config import ExperimentConfig
from peftbench.configure import config_from_dict, method_config
from peftbench.data.collate import training_batch
from peftbench.data.tokenize import Features, tokenize_example
from peftbench.errors import PeftbenchError
from peftbench.evaluation.generate import generate_predictions
from peftbench.io import load_tensors
from peftbench.methods import get_method, is_layer_norm, trainable_parameters
from peftbench.methods.core.formula import FormulaError, formula_count
from peftbench.models import count_parameters, is_encoder_decoder
from peftbench.recipe.run import run_experiment
from peftbench.recipe.setup import build_model
from peftbench.training.callbacks import Callback
from peftbench.training.preemption import Preempted
from peftbench.weights import apply_trainable, read_trainable, write_trainable

MODELS = ("tiny-t5", "tiny-llama")
DOC = "docs/own-method.md"


class Skip(Exception):
    """A check that does not apply to this method or machine; the message says why."""


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


# ---------------------------------------------------------------------------------------------- shared helpers

PAIRS = [
    ("Definition: Copy the input.\n\nNow complete the following example -\nInput: red fox.\nOutput: ", "red fox"),
    ("Definition: Answer yes or no.\n\nNow complete the following example -\nInput: a cat.\nOutput: ", "yes"),
    ("Definition: Add the numbers.\n\nNow complete the following example -\nInput: 2 and 3.\nOutput: ", "5"),
]
NEW_TOKENS = 8
DEFINITION = "Definition: Repeat the words of the input in the same order, then stop.\n\n"
INPUTS = ["red fox", "a cat sat on the mat", "2 and 3", "the old man and the sea went out"]
OTHER = "Definition: Answer yes or no.\n\nNow complete the following example -\nInput: is snow cold?\nOutput: "


def contract_config(model: str, method: str, *, dtype: str = "float32", **method_options: Any) -> ExperimentConfig:
    """The config the checks build models from (``method_options`` may hold ``module``)."""
    raw = {"model": {"name": model, "dtype": dtype}, "method": {"name": method, **method_options}, "seed": 7}
    return config_from_dict(raw)


def _build(cfg: ExperimentConfig, **kwargs: Any) -> tuple[nn.Module, Any]:
    torch.manual_seed(0)
    return build_model(cfg, **kwargs)


def train_batch(model: nn.Module, tokenizer) -> dict[str, torch.Tensor]:
    enc_dec = is_encoder_decoder(model)
    feats = [
        Features(str(i), "t", "c", *tokenize_example(tokenizer, s, t, 128, 16, enc_dec), (t,))
        for i, (s, t) in enumerate(PAIRS)
    ]
    return training_batch(feats, tokenizer.pad_token_id, enc_dec)


@torch.no_grad()
def perturb(model: nn.Module, seed: int) -> None:
    """Moves every trainable tensor away from its initialisation (zero-initialised ones included)."""
    gen = torch.Generator().manual_seed(seed)
    for param in trainable_parameters(model).values():
        scale = max(param.float().std().item() if param.numel() > 1 else 0.0, 0.3)
        param.add_((torch.randn(param.shape, generator=gen) * scale).to(param.dtype))


@torch.no_grad()
def decisive(model: nn.Module) -> None:
    """Scales the frozen weight matrices (and so the output head) so that logits depend on the context."""
    for name, param in model.named_parameters():
        if param.ndim == 2 and not param.requires_grad and "embed" not in name and "shared" not in name:
            param.mul_(4.0)


def generation_features(tokenizer, enc_dec: bool) -> list[Features]:
    """Four prompts sharing a task definition (the shared-prefix path) and one of another task."""
    prompts = [(f"{DEFINITION}Now complete the following example -\nInput: {x}.\nOutput: ", "copy") for x in INPUTS]
    prompts.append((OTHER, "yes-no"))
    return [
        Features(str(i), task, "c", *tokenize_example(tokenizer, text, "x", 256, 8, enc_dec), ("x",))
        for i, (text, task) in enumerate(prompts)
    ]  # fmt: skip


@torch.no_grad()
def reference_greedy(model: nn.Module, prompt: list[int], enc_dec: bool, eos: int) -> list[int]:
    """Greedy decoding by the forward pass alone: batch of one, no cache, the whole sequence every step."""
    new: list[int] = []
    ids = torch.tensor([prompt])
    mask = torch.ones_like(ids)
    for _ in range(NEW_TOKENS):
        if enc_dec:
            decoder = torch.tensor([[model.config.decoder_start_token_id, *new]])
            logits = model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder, use_cache=False).logits
        else:
            seq = torch.tensor([[*prompt, *new]])
            logits = model(input_ids=seq, attention_mask=torch.ones_like(seq), use_cache=False).logits
        token = int(logits[0, -1].argmax())
        new.append(token)
        if token == eos:
            break
    return new


@torch.no_grad()
def _first_logits(model: nn.Module, feats: list[Features], enc_dec: bool) -> torch.Tensor:
    out = []
    for f in feats:
        ids = torch.tensor([f.prompt_ids])
        extra = {"decoder_input_ids": torch.tensor([[model.config.decoder_start_token_id]])} if enc_dec else {}
        out.append(model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False, **extra).logits[0, -1])
    return torch.stack(out)


@torch.no_grad()
def _logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    return model(**batch).logits


# ---------------------------------------------------------------------------------------------------- the checks


def base_parameters_allowed(spec, base: nn.Module) -> Callable[[str], bool]:
    """Which of the base model's own parameters a method may train: all for a method whose trained weights are
    the base model's (``merge="always"``, full fine-tuning); the layer norms where its anatomy says they train;
    biases for a method whose tensors sit in the base's modules (``merge="in_place"``, BitFit)."""
    if spec.merge == "always":
        return lambda name: True
    norms: set[str] = set()
    if spec.anatomy is not None and spec.anatomy.layer_norms.startswith("trained"):
        norms = {f"{m}.{p}" for m, mod in base.named_modules() if is_layer_norm(mod) for p, _ in mod.named_parameters()}
    biases = spec.merge == "in_place"
    return lambda name: name in norms or (biases and name.endswith(".bias"))


def training_problem(spec, base: nn.Module, trainable: set[str], changed: set[str]) -> str | None:
    """What :func:`check_only_method_trains` asserts of one training: parameters ``changed`` by the optimizer
    are among the ``trainable`` (requires_grad) ones, and those are the method's own or base-model parameters
    the spec declares (:func:`base_parameters_allowed`); ``base`` is the model before ``apply``."""
    if not trainable:
        return "no parameter has requires_grad=True after apply"
    base_names = {n for n, _ in base.named_parameters()}
    allowed = base_parameters_allowed(spec, base)
    own = {n.replace("base_model.model.", "") for n in trainable}
    undeclared = sorted(n for n in own if n in base_names and not allowed(n))
    if undeclared:
        return f"{len(undeclared)} base-model parameter(s) train that the spec does not declare, e.g. {undeclared[0]}"
    if not changed:
        return "the optimizer steps changed no parameter (no gradient reaches the method's weights?)"
    frozen = sorted(changed - trainable)
    if frozen:
        return f"{len(frozen)} frozen parameter(s) changed in training, e.g. {frozen[0]}"
    return None


def check_only_method_trains(cfg: ExperimentConfig) -> str | None:
    """Two AdamW steps change only parameters with requires_grad, and those are the method's own (the base
    model's only where the spec declares it, :func:`base_parameters_allowed`)."""
    model, tokenizer = _build(cfg)
    trainable = trainable_parameters(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    if trainable:
        optimizer = torch.optim.AdamW(list(trainable.values()), lr=1e-2, weight_decay=0.0)
        batch = train_batch(model, tokenizer)
        model.train()
        for _ in range(2):
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    base = _build(cfg, apply_method=False)[0]
    return training_problem(get_method(cfg.method_name), base, set(trainable), changed)


def fp32_problem(model: nn.Module) -> str | None:
    """On a half-precision base: a trainable parameter that is not fp32, or a base kept in fp32 throughout."""
    trainable = trainable_parameters(model)
    half = sorted(n for n, p in trainable.items() if p.dtype != torch.float32)
    if half:
        return f"trainable {half[0]} is {trainable[half[0]].dtype} (and {len(half) - 1} more), not fp32"
    frozen = [p.dtype for p in model.parameters() if not p.requires_grad and p.is_floating_point()]
    if frozen and torch.float32 in frozen and all(d == torch.float32 for d in frozen):
        return "the frozen base was upcast to fp32 as well (only the method's weights should be)"
    return None


def check_fp32_trainable(cfg: ExperimentConfig) -> str | None:
    """Trainable weights are fp32 on a bf16 base (``MethodSpec.fp32_trainable``)."""
    spec = get_method(cfg.method_name)
    if not spec.fp32_trainable and spec.merge == "always":
        raise Skip("the method trains the base weights themselves (fp32_trainable=False, merge='always')")
    bf16 = contract_config(cfg.model.name, cfg.method_name, dtype="bfloat16", **_options(cfg))
    problem = fp32_problem(_build(bf16)[0])
    if problem and not spec.fp32_trainable:
        problem += "; fp32_trainable=False is only for methods that train the base weights (merge='always')"
    return problem


def check_generation(model: nn.Module, tokenizer) -> str | None:
    """Evaluation's generation (``generate_predictions`` as a run calls it: length-sorted token-budget batches,
    the KV cache, the shared task prefix) equals a cache-free greedy loop over the forward pass. The method's
    weights are perturbed first, and the check fails if they do not change the forward pass."""
    model.eval()
    enc_dec = is_encoder_decoder(model)
    feats = generation_features(tokenizer, enc_dec)
    decisive(model)
    perturb(model, seed=1)
    before = _first_logits(model, feats, enc_dec)
    perturb(model, seed=2)
    if torch.allclose(_first_logits(model, feats, enc_dec), before):
        return "changing the method's weights does not change the model's output (is the method used?)"
    records = generate_predictions(
        model, tokenizer, feats, None, batch_size=3, max_new_tokens=NEW_TOKENS, encoder_decoder=enc_dec,
        progress=False, batch_by_tokens=True, share_prefix=True,
    )  # fmt: skip
    got = {r["id"]: r["prediction"] for r in records}
    for f in feats:
        ids = reference_greedy(model, f.prompt_ids, enc_dec, tokenizer.eos_token_id)
        expected = tokenizer.decode(ids, skip_special_tokens=True).strip()
        if got[f.id] != expected:
            return f"example {f.id}: generation gave {got[f.id]!r}, the forward pass {expected!r}"
    return None


def check_generation_matches_forward(cfg: ExperimentConfig) -> str | None:
    return check_generation(*_build(cfg))


def check_save_load(cfg: ExperimentConfig, workdir: Path) -> str | None:
    """``write_trainable`` → a freshly built model → ``read_trainable`` + ``apply_trainable`` gives equal logits."""
    model, tokenizer = _build(cfg)
    perturb(model, seed=3)
    batch = train_batch(model, tokenizer)
    logits = _logits(model, batch)
    path = workdir / f"{cfg.model.name}-save-load.safetensors"
    write_trainable(model, path)
    fresh, _ = _build(cfg)
    try:
        apply_trainable(fresh, read_trainable(path), str(path))
    except PeftbenchError as exc:
        return str(exc)
    again = _logits(fresh, batch)
    if not torch.equal(again, logits):
        return f"logits differ after loading (max |diff| {(again - logits).abs().max().item():.3g})"
    return None


class _TermAt(Callback):
    """Sends this process SIGTERM after optimizer step ``step`` (the run's handler sets its stop flag)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, step: int, total: int) -> None:
        if step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def run_raw(cfg: ExperimentConfig, out: Path, run_name: str, **train: Any) -> dict[str, Any]:
    """A tiny run of the method on the demo's generated tasks (8 steps, a checkpoint every 3), as a raw config;
    ``train`` overrides ``train.*``."""
    return {
        "model": {"name": cfg.model.name},
        "method": {"name": cfg.method_name, **_options(cfg)},
        "data": {"data_dir": "@demo", "split": "demo", "num_train_tasks": 4, "max_train_instances_per_task": 4,
                 "max_eval_instances_per_task": 1, "max_source_length": 128, "max_target_length": 8},
        "train": {"max_steps": 8, "per_device_batch_size": 2, "save_steps": 3, "eval_steps": 1000,
                  "logging_steps": 1, "learning_rate": 5e-3, "report_to": [], **train},
        "eval": {"batch_size": 8, "max_new_tokens": 4, "weights": "last"},
        "output_dir": str(out), "run_name": run_name, "seed": 7,
    }  # fmt: skip


def run_config(cfg: ExperimentConfig, out: Path, run_name: str) -> ExperimentConfig:
    """:func:`run_raw` as a config."""
    return config_from_dict(run_raw(cfg, out, run_name))


def _options(cfg: ExperimentConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.method.items() if k != "name"}


def check_resume(cfg: ExperimentConfig, workdir: Path) -> str | None:
    """A run stopped by SIGTERM at step 4 (saved at step 3) and resumed ends bit-identical to an uninterrupted
    run: the same trained weights and losses. Leaves the finished run in ``workdir/<model>/resumed``."""
    out = workdir / cfg.model.name
    reference = run_experiment(run_config(cfg, out, "reference"), progress=False, quiet=True).run_dir
    stopped = run_config(cfg, out, "resumed")
    try:
        run_experiment(stopped, progress=False, quiet=True, callbacks=[_TermAt(4)])
        return "SIGTERM at step 4 did not stop the run (the handler was not reached)"
    except Preempted:
        pass
    run_dir = run_experiment(stopped, progress=False, quiet=True).run_dir
    a, b = (load_tensors(d / "trainable.safetensors") for d in (run_dir, reference))
    if a.keys() != b.keys():
        return "the resumed run saved other tensors than the uninterrupted one"
    differ = sorted(k for k in a if not torch.equal(a[k], b[k]))
    if differ:
        return f"{len(differ)} trained tensor(s) differ from an uninterrupted run, e.g. {differ[0]}"
    losses = [json.loads((d / "metrics.json").read_text())["train"]["losses"] for d in (run_dir, reference)]
    if losses[0] != losses[1]:
        return "the resumed run's losses differ from an uninterrupted run's"
    return None


DISTRIBUTED_STEPS = 3
"""2 ranks x batch 2 x 3 steps: 12 of the 16 training examples, inside the first epoch."""


def _train_processes(config: dict[str, Any], path: Path, launcher: list[str], timeout: float) -> str | None:
    """``peftbench train`` of ``config`` (written to ``path``) under ``launcher``, one thread per process (the same
    kernels in every rank); a one-line reason when it fails."""
    import subprocess
    import sys

    path.write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, *launcher, "-m", "peftbench", "train", str(path), "--no-progress"]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"{' '.join(command[1:4])}... did not finish within {timeout:.0f} s"
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        return f"the {path.stem} run exited {proc.returncode}: {lines[-1].strip() if lines else 'no output'}"
    return None


def check_distributed(cfg: ExperimentConfig, workdir: Path) -> str | None:
    """Two gloo ranks (torchrun, batch 2 each) train to the weights and losses of one process with batch 2 and
    gradient accumulation 2: the same global batches (accelerate deals them round-robin), so equal to float
    tolerance. Dropout options are set to 0 for both runs: ranks draw their masks from their own generators."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        raise Skip("torch.distributed with the gloo backend is not available in this torch build")
    options = {k: (0.0 if "dropout" in k and isinstance(v, float) else v) for k, v in _options(cfg).items()}
    for field in dataclasses.fields(get_method(cfg.method_name).config_cls):
        if "dropout" in field.name and field.name not in options:
            options[field.name] = 0.0
    plain = contract_config(cfg.model.name, cfg.method_name, **options)
    out = workdir / cfg.model.name / "distributed"
    out.mkdir(parents=True, exist_ok=True)
    runs = {
        "two-ranks": ([*TORCHRUN], 1),
        "one-rank": ([], 2),
    }
    for name, (launcher, accumulation) in runs.items():
        raw = run_raw(plain, out, name, max_steps=DISTRIBUTED_STEPS, save_steps=1000, logging_steps=1,
                      gradient_accumulation_steps=accumulation)  # fmt: skip
        problem = _train_processes(raw, out / f"{name}.json", launcher, timeout=600)
        if problem:
            return problem
    two, one = out / "two-ranks", out / "one-rank"
    a, b = load_tensors(two / "trainable.safetensors"), load_tensors(one / "trainable.safetensors")
    if a.keys() != b.keys():
        return "the two ranks saved other tensors than one process"
    for key in sorted(a):
        if not torch.allclose(a[key].float(), b[key].float(), atol=1e-6, rtol=1e-5):
            diff = (a[key].float() - b[key].float()).abs().max().item()
            return f"two ranks trained {key} differently from one process (max |diff| {diff:.3g})"
    losses = [json.loads((d / "metrics.json").read_text())["train"]["losses"] for d in (two, one)]
    if [s for s, _ in losses[0]] != [s for s, _ in losses[1]] or any(
        abs(x - y) > 1e-5 * abs(y) for (_, x), (_, y) in zip(losses[0], losses[1], strict=True)
    ):
        return f"the two ranks logged losses {losses[0]}, one process {losses[1]}"
    return None


TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
"""torchrun with 2 processes on this machine."""


def check_parameter_count(cfg: ExperimentConfig) -> str | None:
    """The built model's trainable count equals the spec's: ``spec.count(model.config, method_config)`` where the
    spec has that function, else its ``formula`` evaluated from the config's numbers (``methods.core.formula``)."""
    spec = get_method(cfg.method_name)
    model, _ = _build(cfg)
    options = method_config(cfg)
    if spec.count is not None:
        expected, source = spec.count(model.config, options), "spec.count"
    else:
        try:
            expected, source = formula_count(spec, model.config, options), f"the formula {spec.formula!r}"
        except FormulaError as exc:
            raise Skip(f"no count function, and the formula cannot be evaluated ({exc})") from None
    got = count_parameters(model)[0]
    return None if got == expected else f"the model has {got:,} trainable parameters, {source} gives {expected:,}"


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
            reason = get_method(name).supports(_build(cfg, apply_method=False)[0].config)
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
