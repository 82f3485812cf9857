"""Tokenisation, truncation that keeps the cue, label masking, padding and batch order."""

from __future__ import annotations

from transformers import ByT5Tokenizer

from peftbench.data.collate import (
    generation_batch,
    generation_batches,
    length_grouped_batches,
    prefix_generation_batch,
    sorted_batches,
    training_batch,
)
from peftbench.data.tokenize import IGNORE_INDEX, Features, tokenize_example, tokenize_prompt, tokenize_target

TOK = ByT5Tokenizer()
SOURCE = (
    "Definition: " + "very long definition " * 20 + "\n\nNow complete the following example -\nInput: abc.\nOutput: "
)


def test_truncation_keeps_the_output_cue_for_both_architectures():
    for enc_dec in (True, False):
        ids = tokenize_prompt(TOK, SOURCE, 64, enc_dec)
        assert len(ids) == 64
        text = TOK.decode(ids, skip_special_tokens=True)
        # a decoder-only prompt ends at the cue's colon: its trailing space begins the target
        assert text.endswith("\nOutput: " if enc_dec else "\nOutput:") and text.startswith("Definition: very long")
        assert (ids[-1] == TOK.eos_token_id) == enc_dec  # encoder input closes with EOS; a causal prompt does not


def test_short_prompt_is_not_changed():
    short = "Now complete the following example -\nInput: x.\nOutput: "
    ids = tokenize_prompt(TOK, short, 512, True)
    assert TOK.decode(ids, skip_special_tokens=True) == short


def test_decoder_only_loss_is_on_target_tokens_only():
    prompt, target = tokenize_example(TOK, "Input: ab.\nOutput: ", "yes", 64, 8, False)
    assert TOK.decode(prompt + target, skip_special_tokens=True) == "Input: ab.\nOutput: yes"
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


def _feature(i: int, task: str, ids: list[int]) -> Features:
    return Features(str(i), task, "c", ids, [1], ("x",))


def test_generation_batches_share_a_task_prefix_and_keep_tasks_together():
    shared_a, shared_b = list(range(100, 140)), list(range(200, 220))
    feats = [
        _feature(0, "a", shared_a + [5] * 10),
        _feature(1, "b", [*shared_b, 6, 7]),
        _feature(2, "a", [*shared_a, 5, 8]),
        _feature(3, "c", [9] * 70),  # alone in its task: no prefix to share
        _feature(4, "a", shared_a + [5] * 3),
        _feature(5, "b", shared_b + [6] * 9),
        _feature(6, "d", [3] * 8 + [4]),  # shares only 8 tokens (< MIN_SHARED_PREFIX) with the next
        _feature(7, "d", [3] * 8 + [2, 2]),
        _feature(8, "a", shared_a + [5] * 20),
    ]
    lengths = [len(f.prompt_ids) for f in feats]
    plain = generation_batches(feats, 2, True, 4, share_prefix=False)
    assert [b.indices for b in plain] == list(sorted_batches(lengths, 2, by_tokens=True, extra=4))
    assert all(b.prefix == 0 for b in plain)

    plan = generation_batches(feats, 2, True, 4, share_prefix=True)
    assert sorted(i for b in plan for i in b.indices) == list(range(len(feats)))
    by_task = {}
    for n, batch in enumerate(plan):
        tasks = {feats[i].task for i in batch.indices}
        if batch.prefix:
            assert len(tasks) == 1
            by_task.setdefault(tasks.pop(), []).append((n, batch.prefix))
    assert sorted(by_task) == ["a", "b"]
    assert {p for _, p in by_task["a"]} == {41} and {p for _, p in by_task["b"]} == {21}  # shared + common token
    for positions in by_task.values():  # a task's batches are consecutive (its prefix is encoded once)
        numbers = [n for n, _ in positions]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    # Longest first: the cross-task batch with the 70-token prompt, then task a (60), task b (29), the rest.
    assert (plan[0].indices, plan[0].prefix) == ([3, 7], 0)
    assert plan[1].indices[0] == 8 and plan[1].prefix == 41 and plan[-1].indices == [6]
    rest = [i for b in plan if not b.prefix for i in b.indices]
    assert sorted(rest) == [3, 6, 7]
    budget = 2 * (max(lengths) + 4)
    for batch in plan:  # the split's token budget holds for every batch
        assert len(batch.indices) <= 2 or max(lengths[i] + 4 for i in batch.indices) * len(batch.indices) <= budget


def test_prefix_batch_puts_padding_between_prefix_and_rest():
    feats = [_feature(0, "a", [7, 7, 7, 1, 2]), _feature(1, "a", [7, 7, 7, 3])]
    batch = prefix_generation_batch(feats, 3, pad_id=0)
    assert batch["input_ids"].tolist() == [[7, 7, 7, 1, 2], [7, 7, 7, 0, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 1]]


def test_truncation_of_a_real_superni_prompt_keeps_the_cue(superni_mini):
    from peftbench.config import DataConfig
    from peftbench.data.encoding import encode_source
    from peftbench.data.tasks import load_task

    task = load_task(superni_mini / "tasks" / "task039_qasc_find_overlapping_words.json")
    source = encode_source(task, task.instances[0]["input"], DataConfig(num_pos_examples=2, add_explanation=True))
    assert len(TOK(source)["input_ids"]) > 300
    for enc_dec in (True, False):
        ids = tokenize_prompt(TOK, source, 200, enc_dec)
        text = TOK.decode(ids, skip_special_tokens=True)
        assert len(ids) == 200
        cue = "\nOutput: " if enc_dec else "\nOutput:"  # decoder-only: the space begins the target
        assert text.startswith("Definition: Generate an overlapping word") and text.endswith(cue)


def test_multi_output_target_is_drawn_afresh_each_epoch_deterministically():
    """Tk-Instruct's collator draws random.choice(output) per batch; here each epoch draws from (training seed,
    epoch, id), so the target varies over epochs and a resumed epoch gets the same targets (issue 11, part 6)."""
    from peftbench.config import TrainConfig
    from peftbench.data.collate import epoch_target, training_length, with_epoch_targets
    from peftbench.data.examples import Example
    from peftbench.data.tokenize import featurize
    from peftbench.training.trainer import epoch_loader

    source = "Definition: name a colour.\n\nNow complete the following example -\nInput: x.\nOutput: "
    colours = ("red", "green", "blue violet")
    multi = Example("t-0", "t", "c", source, colours[0], colours, colours)
    single = Example("t-1", "t", "c", source, "only", ("only",), ("only",))
    evaluation = Example("t-2", "t", "c", source, "red", colours)
    feats = featurize([multi, single, evaluation], TOK, 128, 16, True)
    options = [tokenize_target(TOK, c, 16) for c in colours]
    assert feats[0].target_options == tuple(options) and feats[0].target_ids == options[0]
    assert feats[1].target_options == () and feats[2].target_options == ()

    drawn = [epoch_target(feats[0], seed=3, epoch=e) for e in range(8)]
    assert len({tuple(t) for t in drawn}) > 1 and all(t in options for t in drawn)
    assert drawn == [epoch_target(feats[0], seed=3, epoch=e) for e in range(8)]  # same (seed, epoch), same target
    assert drawn != [epoch_target(feats[0], seed=4, epoch=e) for e in range(8)]
    assert all(epoch_target(feats[1], 3, e) == feats[1].target_ids for e in range(8))

    train = TrainConfig(per_device_batch_size=1)
    for epoch in range(8):
        epoch_feats = with_epoch_targets(feats[:2], 3, epoch)
        assert epoch_feats[0].target_ids == drawn[epoch] and epoch_feats[1] is feats[1]
        # Length grouping sees the lengths with the epoch's targets (T5: max(prompt, target) tokens).
        assert training_length(epoch_feats[0], True) == max(len(feats[0].prompt_ids), len(drawn[epoch]))
        batches = list(epoch_loader(feats[:2], train, seed=3, epoch=epoch, pad_id=0, encoder_decoder=True))
        labels = [b["labels"][0][b["labels"][0] != IGNORE_INDEX].tolist() for b in batches]
        assert drawn[epoch] in labels and feats[1].target_ids in labels
        resumed = list(epoch_loader(feats[:2], train, seed=3, epoch=epoch, pad_id=0, encoder_decoder=True, skip=1))
        assert all(
            (a["labels"] == b["labels"]).all() and (a["input_ids"] == b["input_ids"]).all()
            for a, b in zip(batches[1:], resumed, strict=True)
        )


def test_tasks_with_fewer_than_half_a_batch_are_batched_across_tasks():
    """Per-task batches of 2 examples would decode 4x as many steps as mixed batches of 8 (issue 17, item 6)."""
    shared = list(range(100, 140))
    few = [_feature(i, f"t{i // 2}", [*shared, 1000 + i // 2, 5 + i]) for i in range(24)]  # 12 tasks x 2
    plan = generation_batches(few, 8, False, 4, share_prefix=True)
    assert all(b.prefix == 0 for b in plan) and len(plan) == 3
    many = [_feature(i, f"t{i // 4}", [*shared, 1000 + i // 4, 5 + i]) for i in range(24)]  # 6 tasks x 4
    plan = generation_batches(many, 8, False, 4, share_prefix=True)
    assert all(b.prefix == 41 for b in plan) and len(plan) == 6
