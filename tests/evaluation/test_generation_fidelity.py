"""Evaluation generates what the trained model computes, for every method.

The independent reference is the model's own forward pass: a cache-free greedy loop, one example at a
time, the whole sequence fed at every step (for peft's prompt-learning methods, the PeftModel's forward,
which is what training optimises). The evaluation path is ``generate_predictions`` exactly as a run calls
it: length-sorted, padded, token-budget batches, the KV cache, and (decoder-only) the shared task prefix.

Before the check, the method's trainable weights are perturbed so that they matter, and the frozen weight
matrices and the output head are scaled up so that the logits are decisive (a random tiny model's
next-token distribution is nearly flat and hardly depends on the context). The test also checks that the
perturbation changes the forward pass, so that agreeing with the reference means the method was used.
"""

from __future__ import annotations

import pytest
import torch

from peftbench.configure import config_from_dict
from peftbench.data.tokenize import Features, tokenize_example
from peftbench.errors import PeftbenchError
from peftbench.evaluation.generate import generate_predictions
from peftbench.methods import all_methods, trainable_parameters
from peftbench.models import is_encoder_decoder
from peftbench.recipe.setup import build_model

MODELS = ("tiny-t5", "tiny-llama", "tiny-gpt2")
METHODS = [spec.name for spec in all_methods()]
NEW_TOKENS = 8
DEFINITION = "Definition: Repeat the words of the input in the same order, then stop.\n\n"
INPUTS = ["red fox", "a cat sat on the mat", "2 and 3", "the old man and the sea went out"]
OTHER = "Definition: Answer yes or no.\n\nNow complete the following example -\nInput: is snow cold?\nOutput: "


def _features(tokenizer, enc_dec: bool) -> list[Features]:
    prompts = [(f"{DEFINITION}Now complete the following example -\nInput: {x}.\nOutput: ", "copy") for x in INPUTS]
    prompts.append((OTHER, "yes-no"))
    return [
        Features(str(i), task, "c", *tokenize_example(tokenizer, text, "x", 256, 8, enc_dec), ("x",))
        for i, (text, task) in enumerate(prompts)
    ]  # fmt: skip


@torch.no_grad()
def _perturb(model, seed: int) -> None:
    """Moves every trainable tensor away from its initialisation (zero-initialised ones included)."""
    gen = torch.Generator().manual_seed(seed)
    for param in trainable_parameters(model).values():
        scale = max(param.float().std().item() if param.numel() > 1 else 0.0, 0.3)
        param.add_((torch.randn(param.shape, generator=gen) * scale).to(param.dtype))


@torch.no_grad()
def _decisive(model) -> None:
    """Scales the frozen weight matrices (and so the output head) so that logits depend on the context."""
    for name, param in model.named_parameters():
        if param.ndim == 2 and not param.requires_grad and "embed" not in name and "shared" not in name:
            param.mul_(4.0)


@torch.no_grad()
def _reference_greedy(model, prompt: list[int], enc_dec: bool, eos: int) -> list[int]:
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
def _first_logits(model, feats: list[Features], enc_dec: bool) -> torch.Tensor:
    out = []
    for f in feats:
        ids = torch.tensor([f.prompt_ids])
        extra = {"decoder_input_ids": torch.tensor([[model.config.decoder_start_token_id]])} if enc_dec else {}
        out.append(model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False, **extra).logits[0, -1])
    return torch.stack(out)


def _build(model_name: str, method: str, options: dict | None = None):
    torch.manual_seed(0)
    cfg = config_from_dict({"model": {"name": model_name}, "method": {"name": method, **(options or {})}, "seed": 7})
    try:
        return build_model(cfg)
    except PeftbenchError as exc:  # a method the architecture does not support (LoHa/LoKr on GPT-2's Conv1D)
        if model_name == "tiny-gpt2" and "cannot be used" in str(exc):
            return None
        raise


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model_name", MODELS)
def test_evaluation_generates_what_the_forward_pass_computes(model_name, method):
    _check_generation(model_name, method)


def test_prefix_on_all_t5_attentions_generates_what_the_forward_pass_computes():
    """``scope: all``: the encoder's prefix enters through hooks, the cross-attention's through the initial cache."""
    _check_generation("tiny-t5", "prefix", {"scope": "all"})


def _check_generation(model_name: str, method: str, options: dict | None = None) -> None:
    built = _build(model_name, method, options)
    if built is None:
        assert method in ("loha", "lokr"), f"{method} unexpectedly unsupported on {model_name}"
        return
    model, tokenizer = built
    model.eval()
    enc_dec = is_encoder_decoder(model)
    feats = _features(tokenizer, enc_dec)
    _decisive(model)
    _perturb(model, seed=1)
    before = _first_logits(model, feats, enc_dec)
    _perturb(model, seed=2)
    assert not torch.allclose(_first_logits(model, feats, enc_dec), before), "the method's weights do not matter"

    records = generate_predictions(
        model, tokenizer, feats, None, batch_size=3, max_new_tokens=NEW_TOKENS, encoder_decoder=enc_dec,
        progress=False, batch_by_tokens=True, share_prefix=True,
    )  # fmt: skip
    got = {r["id"]: r["prediction"] for r in records}
    for f in feats:
        ids = _reference_greedy(model, f.prompt_ids, enc_dec, tokenizer.eos_token_id)
        expected = tokenizer.decode(ids, skip_special_tokens=True).strip()
        assert got[f.id] == expected, f"{method} on {model_name}, example {f.id}: {got[f.id]!r} != {expected!r}"
