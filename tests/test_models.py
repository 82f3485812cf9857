"""Model skeletons (weights on ``meta``, for counts, budgets and memory plans) have the parameters of the checkpoint
``from_pretrained`` loads."""

from __future__ import annotations

import torch
from transformers import T5Config, T5ForConditionalGeneration

from peftbench.config import ModelConfig
from peftbench.models import model_skeleton


def test_a_t5_v1_1_skeleton_keeps_its_own_lm_head(tmp_path):
    """transformers 5 builds a T5 from its config with ``lm_head`` tied to the shared embedding, but loads a T5 v1.1 /
    LM-adapt checkpoint (separate ``lm_head``, as google/t5-xl-lm-adapt has) untied. The skeleton counts what the
    real load gives (the reference: ``from_pretrained`` of a saved checkpoint with an lm_head of its own)."""
    torch.manual_seed(0)
    config = T5Config(vocab_size=64, d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16,
                      feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0)  # fmt: skip
    model = T5ForConditionalGeneration(config)
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight))
    model.save_pretrained(tmp_path / "v1_1")
    loaded = T5ForConditionalGeneration.from_pretrained(tmp_path / "v1_1")
    assert loaded.lm_head.weight is not loaded.shared.weight
    skeleton = model_skeleton(ModelConfig(name=str(tmp_path / "v1_1")))
    assert sum(p.numel() for p in skeleton.parameters()) == sum(p.numel() for p in loaded.parameters())


def test_the_shipped_t5_xl_lm_adapt_has_its_published_size():
    """google/t5-xl-lm-adapt (T5 v1.1 XL, LM-adapted): 2,849,757,184 parameters — 24 + 24 layers of d_model 2048,
    gated d_ff 5120, 32 heads × 64, vocabulary 32128, a separate lm_head (the published "3B" model)."""
    d, f, v, h = 2048, 5120, 32128, 32 * 64
    encoder = 24 * (4 * d * h + 3 * d * f + 2 * d) + d  # attention, gated FF, two RMS norms; final norm
    decoder = 24 * (8 * d * h + 3 * d * f + 3 * d) + d
    relative = 2 * 32 * 32  # one relative-position bias table (32 buckets x 32 heads) in each stack
    expected = encoder + decoder + relative + 2 * v * d  # shared embedding + lm_head
    skeleton = model_skeleton(ModelConfig(name="google/t5-xl-lm-adapt"))
    assert sum(p.numel() for p in skeleton.parameters()) == expected == 2_849_757_184


def test_an_unreachable_hub_is_asked_once_per_model_and_said_so(monkeypatch, caplog):
    # Offline without HF_HUB_OFFLINE=1 every hub lookup waits through huggingface_hub's retries (~25 s): a plan asks
    # for the same model several times (train, eval, what would fit), so the answer (here the shipped config) is kept.
    from transformers import AutoConfig

    from peftbench import models

    real = AutoConfig.from_pretrained
    asked: list[str] = []

    def from_pretrained(name, *args, **kwargs):
        if name == "google/t5-small-lm-adapt":
            asked.append(name)
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(models, "_HUB_CONFIGS", {})
    monkeypatch.setattr("huggingface_hub.is_offline_mode", lambda: False)  # the suite sets HF_HUB_OFFLINE=1
    monkeypatch.setattr(models.AutoConfig, "from_pretrained", from_pretrained)
    cfg = ModelConfig(name="google/t5-small-lm-adapt")
    with caplog.at_level("WARNING", logger="peftbench"):
        first, second = model_skeleton(cfg), model_skeleton(cfg)
    assert asked == ["google/t5-small-lm-adapt"]
    assert [r.getMessage() for r in caplog.records].count(
        "google/t5-small-lm-adapt: We couldn't connect to 'https://huggingface.co' to load the files; using the "
        "config.json peftbench ships for it (shapes only; HF_HUB_OFFLINE=1 skips the hub lookup)"
    ) == 1
    assert first.config.d_model == second.config.d_model == 512 and first.config is not second.config
