"""The contract's checks on a built model: what trains, its precision, generation against the forward pass,
save and load, and the trainable count against the spec's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from peftbench.config import ExperimentConfig
from peftbench.configure import method_config
from peftbench.data.tokenize import Features, tokenize_example
from peftbench.errors import PeftbenchError
from peftbench.evaluation.generate import generate_predictions
from peftbench.methods import get_method, is_layer_norm, trainable_parameters
from peftbench.methods.core.formula import FormulaError, formula_count
from peftbench.models import count_parameters, is_encoder_decoder
from peftbench.recipe.contract.common import Skip, build, contract_config, given_options, train_batch
from peftbench.weights import apply_trainable, read_trainable, write_trainable

NEW_TOKENS = 8
DEFINITION = "Definition: Repeat the words of the input in the same order, then stop.\n\n"
INPUTS = ["red fox", "a cat sat on the mat", "2 and 3", "the old man and the sea went out"]
OTHER = "Definition: Answer yes or no.\n\nNow complete the following example -\nInput: is snow cold?\nOutput: "


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
    ]


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
    model, tokenizer = build(cfg)
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
    base = build(cfg, apply_method=False)[0]
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
    bf16 = contract_config(cfg.model.name, cfg.method_name, dtype="bfloat16", **given_options(cfg))
    problem = fp32_problem(build(bf16)[0])
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
        model,
        tokenizer,
        feats,
        None,
        batch_size=3,
        max_new_tokens=NEW_TOKENS,
        encoder_decoder=enc_dec,
        progress=False,
        batch_by_tokens=True,
        share_prefix=True,
    )
    got = {r["id"]: r["prediction"] for r in records}
    for f in feats:
        ids = reference_greedy(model, f.prompt_ids, enc_dec, tokenizer.eos_token_id)
        expected = tokenizer.decode(ids, skip_special_tokens=True).strip()
        if got[f.id] != expected:
            return f"example {f.id}: generation gave {got[f.id]!r}, the forward pass {expected!r}"
    return None


def check_generation_matches_forward(cfg: ExperimentConfig) -> str | None:
    return check_generation(*build(cfg))


def check_save_load(cfg: ExperimentConfig, workdir: Path) -> str | None:
    """``write_trainable`` → a freshly built model → ``read_trainable`` + ``apply_trainable`` gives equal logits."""
    model, tokenizer = build(cfg)
    perturb(model, seed=3)
    batch = train_batch(model, tokenizer)
    logits = _logits(model, batch)
    path = workdir / f"{cfg.model.name}-save-load.safetensors"
    write_trainable(model, path)
    fresh, _ = build(cfg)
    try:
        apply_trainable(fresh, read_trainable(path), str(path))
    except PeftbenchError as exc:
        return str(exc)
    again = _logits(fresh, batch)
    if not torch.equal(again, logits):
        return f"logits differ after loading (max |diff| {(again - logits).abs().max().item():.3g})"
    return None


def check_parameter_count(cfg: ExperimentConfig) -> str | None:
    """The built model's trainable count equals the spec's: ``spec.count(model.config, method_config)`` where the
    spec has that function, else its ``formula`` evaluated from the config's numbers (``methods.core.formula``)."""
    spec = get_method(cfg.method_name)
    model, _ = build(cfg)
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
