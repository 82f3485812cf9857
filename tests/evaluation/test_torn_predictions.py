"""A predictions file torn by a crash at any byte, inside a multi-byte UTF-8 character too, keeps every complete
line and is rewritten before anything is appended (issue: a torn ``predictions.jsonl`` stopped every later
attempt with a UnicodeDecodeError; before that, a torn tail would have glued the next record to its garbage)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from peftbench.errors import PeftbenchError
from peftbench.evaluation.generate import _existing_predictions, _resume, record_checksum

# Non-ASCII of 2, 3 and 4 bytes in UTF-8, as real SuperNI outputs have (and the demo base produces).
TEXTS = ["Ja, très bien", "答案是 42", "ok 👍🏽 done", "plain", "Привет", "naïve — “quoted”", "x", "émoji 🤖"]


def _records() -> list[dict]:
    records = [
        {"id": f"t-{i}", "task": "t", "category": "c", "prediction": text, "references": [text.upper(), "ß"]}
        for i, text in enumerate(TEXTS)
    ]
    return [{**r, "checksum": record_checksum(r)} for r in records]


def _features(records: list[dict]) -> list[SimpleNamespace]:
    keys = ("id", "task", "category", "references")
    return [SimpleNamespace(**{k: r[k] for k in keys}) for r in records]


def _write(path: Path, records: list[dict]) -> bytes:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    path.write_bytes(data)
    return data


def _complete_lines_before(data: bytes, offset: int) -> int:
    """How many whole lines (with their newline) lie in ``data[:offset]``: the independent expectation."""
    return data[:offset].count(b"\n")


def test_the_fixture_has_multibyte_characters_to_tear():
    data = "".join(json.dumps(r, ensure_ascii=False) for r in _records()).encode()
    assert sum(1 for b in data if b >= 0xC0) >= 10  # lead bytes of multi-byte characters


def test_every_truncation_offset_keeps_exactly_the_complete_lines(tmp_path):
    records = _records()
    full = _write(tmp_path / "p.jsonl", records)
    features = _features(records)
    batches = [[i] for i in range(len(records))]  # one line a batch: every complete line counts
    for offset in range(len(full) + 1):
        path = tmp_path / f"cut-{offset}.jsonl"
        path.write_bytes(full[:offset])
        kept = _resume(path, features, batches)
        expected = records[: _complete_lines_before(full, offset)]
        assert kept == {r["id"]: r for r in expected}, offset
        # the file now holds exactly those lines, so appending the rest gives the undamaged file
        assert path.read_bytes() == full[: len(b"".join(full.splitlines(keepends=True)[: len(expected)]))], offset
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records[len(expected) :]))
        assert path.read_bytes() == full, offset


def test_a_torn_tail_is_cut_off_before_appending_even_when_every_record_is_whole(tmp_path):
    # The last line lost only its newline: without the rewrite, the next batch would be glued onto it.
    records = _records()
    full = _write(tmp_path / "p.jsonl", records)
    path = tmp_path / "p.jsonl"
    path.write_bytes(full[:-1])
    features = _features(records)
    kept = _resume(path, features, [list(range(len(records)))])  # one batch: incomplete, so all regenerated
    assert kept == {} and path.read_bytes() == b""
    path.write_bytes(full[:-1])
    kept = _resume(path, features, [[i] for i in range(len(records))])
    assert kept == {r["id"]: r for r in records[:-1]} and path.read_bytes().endswith(b"\n")


@pytest.mark.parametrize("seed", range(6))
def test_flipped_zeroed_and_invalid_bytes_cost_only_their_own_lines(tmp_path, seed):
    rng = random.Random(seed)
    records = _records()
    full = bytearray(_write(tmp_path / "p.jsonl", records))
    line_of = [full[:i].count(b"\n") for i in range(len(full))]
    hit = rng.sample(range(len(full)), 3)
    touched = {line_of[i] for i in hit} | {line_of[i] + 1 for i in hit if full[i] == ord("\n")}  # a lost newline
    for i in hit:
        full[i] = rng.choice([0x00, 0xFF, 0x80, full[i] ^ (1 << rng.randrange(8))])
    path = tmp_path / "p.jsonl"
    path.write_bytes(bytes(full))
    features = _features(records)
    kept = _resume(path, features, [[i] for i in range(len(records))])
    for k, record in enumerate(records):
        if k not in touched:  # a line no damage touched is always kept, exactly
            assert kept.get(record["id"]) == record, (seed, k)
    for line in path.read_bytes().splitlines():  # what is left parses, so appending is safe
        assert isinstance(json.loads(line.decode("utf-8")), dict)


def test_a_flipped_bit_inside_a_line_that_still_parses_is_caught_by_its_checksum(tmp_path):
    records = _records()
    path = tmp_path / "p.jsonl"
    data = _write(path, records).replace(b'"prediction": "plain"', b'"prediction": "plaim"')  # n -> m, one bit
    path.write_bytes(data)
    kept = _resume(path, _features(records), [[i] for i in range(len(records))])
    assert set(kept) == {r["id"] for r in records} - {"t-3"} and b"plaim" not in path.read_bytes()
    # a line naming another example's references (not the example it claims to be) is not trusted either
    other = [{**records[0], "references": ["something else"]}]
    _write(path, [{**other[0], "checksum": record_checksum(other[0])}])
    assert _resume(path, _features(records[:1]), [[0]]) == {}


def test_a_directory_in_place_of_the_file_is_one_line(tmp_path):
    (tmp_path / "p.jsonl").mkdir()
    with pytest.raises(PeftbenchError, match=r"p.jsonl is damaged \(a directory"):
        _existing_predictions(tmp_path / "p.jsonl")
