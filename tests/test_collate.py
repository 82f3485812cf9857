"""Tokenisation, truncation that keeps the cue, label masking, padding and batch order."""

from __future__ import annotations

from transformers import ByT5Tokenizer

from peftbench.data.collate import (
    IGNORE_INDEX,
    Features,
    generation_batch,
    length_grouped_batches,
    sorted_batches,
    tokenize_prompt,
    tokenize_target,
    training_batch,
)

TOK = ByT5Tokenizer()
SOURCE = (
    "Definition: " + "very long definition " * 20 + "\n\nNow complete the following example -\nInput: abc.\nOutput: "
)


def test_truncation_keeps_the_output_cue_for_both_architectures():
    for enc_dec in (True, False):
        ids = tokenize_prompt(TOK, SOURCE, 64, enc_dec)
        assert len(ids) == 64
        text = TOK.decode(ids, skip_special_tokens=True)
        assert text.endswith("\nOutput: ") and text.startswith("Definition: very long")
        assert (ids[-1] == TOK.eos_token_id) == enc_dec  # encoder input closes with EOS; a causal prompt does not


def test_short_prompt_is_not_changed():
    short = "Now complete the following example -\nInput: x.\nOutput: "
    ids = tokenize_prompt(TOK, short, 512, True)
    assert TOK.decode(ids, skip_special_tokens=True) == short


def test_decoder_only_loss_is_on_target_tokens_only():
    prompt = tokenize_prompt(TOK, "Input: ab.\nOutput: ", 64, False)
    target = tokenize_target(TOK, "yes", 8)
    batch = training_batch([Features("1", "t", "c", prompt, target, ("yes",))], TOK.pad_token_id, False)
    labels = batch["labels"][0].tolist()
    assert labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert labels[len(prompt) :] == target and target[-1] == TOK.eos_token_id


def test_padding_sides():
    a = Features("1", "t", "c", [5, 6, 7], [8, 1], ("",))
    b = Features("2", "t", "c", [5], [8, 9, 1], ("",))
    gen = generation_batch([a, b], 0, encoder_decoder=False)
    assert gen["input_ids"].tolist() == [[5, 6, 7], [0, 0, 5]]  # left padding for decoder-only generation
    assert gen["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    enc = generation_batch([a, b], 0, encoder_decoder=True)
    assert enc["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    train = training_batch([a, b], 0, encoder_decoder=True)
    assert train["labels"].tolist() == [[8, 1, IGNORE_INDEX], [8, 9, 1]]


def test_target_truncation_keeps_eos():
    ids = tokenize_target(TOK, "abcdefgh", 4)
    assert len(ids) == 4 and ids[-1] == TOK.eos_token_id


def test_length_grouped_batches_are_deterministic_complete_and_grouped():
    lengths = [(i * 37) % 101 for i in range(400)]
    a = length_grouped_batches(lengths, 8, seed=1, epoch=0)
    assert a == length_grouped_batches(lengths, 8, seed=1, epoch=0)
    assert a != length_grouped_batches(lengths, 8, seed=1, epoch=1)
    assert sorted(i for b in a for i in b) == list(range(400))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in a) / len(a)
    plain = length_grouped_batches(lengths, 8, seed=1, epoch=0, group_by_length=False)
    plain_spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plain) / len(plain)
    assert spread < plain_spread / 4


def test_evaluation_batches_are_sorted_longest_first():
    batches = list(sorted_batches([3, 9, 1, 9, 5], 2))
    assert batches == [[1, 3], [4, 0], [2]]


def test_token_budget_batches_grow_as_prompts_shrink():
    lengths = [100, 10, 50, 100, 25, 10, 10, 10, 10, 10, 10]
    batches = list(sorted_batches(lengths, 2, by_tokens=True, extra=0))  # budget 2 x 100 = 200 tokens
    assert batches == [[0, 3], [2, 4, 1, 5], [6, 7, 8, 9, 10]]
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:  # no batch pads more tokens than the first one
        assert max(lengths[i] for i in batch) * len(batch) <= 200
    # generated tokens count in the budget: (100 + 100) x 2 = 400 = at most 3 examples of 10 + 100
    assert [len(b) for b in sorted_batches(lengths, 2, by_tokens=True, extra=100)] == [2, 2, 3, 3, 1]


def test_truncation_of_a_real_superni_prompt_keeps_the_cue(superni_mini):
    from peftbench.data.encoding import EncodingConfig, encode_source
    from peftbench.data.superni import load_task

    task = load_task(superni_mini / "tasks" / "task039_qasc_find_overlapping_words.json")
    source = encode_source(task, task.instances[0]["input"], EncodingConfig(num_pos_examples=2, add_explanation=True))
    assert len(TOK(source)["input_ids"]) > 300
    for enc_dec in (True, False):
        ids = tokenize_prompt(TOK, source, 200, enc_dec)
        text = TOK.decode(ids, skip_special_tokens=True)
        assert len(ids) == 200
        assert text.startswith("Definition: Generate an overlapping word") and text.endswith("\nOutput: ")
