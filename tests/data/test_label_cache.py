"""The on-disk label cache: a second run reads the same examples back instead of re-labelling, and any
input the labels depend on gives a new entry."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from tiny_runs import labelled_tiny

from lit.data.label_cache import MIN_SHARD
from lit.data.labels import LabelSpec
from lit.mask.chat_templates import get_template
from lit.mask.scopes import get_scope


def _build(records_path, tokenizer, cache, scope="lit", workers=None, min_shard=MIN_SHARD, **settings):
    """``settings``: ``LabelSpec`` fields other than the chat template, scope and image root (max_length 512)."""
    return labelled_tiny(records_path, tokenizer, cache, scope, workers, min_shard=min_shard, **settings)


def _same(a, b):
    assert len(a) == len(b) and a.lengths() == b.lengths() and a.has_image() == b.has_image()
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert all(np.array_equal(x[k].numpy(), y[k].numpy()) for k in ("input_ids", "labels", "kind_counts"))
        assert (x["image"] is None) == (y["image"] is None)
        if x["image"] is not None:
            assert np.array_equal(x["image"]["pixel_values"].numpy(), y["image"]["pixel_values"].numpy())


def test_second_build_reads_the_cache_and_matches(demo_data, bpe_tokenizer, tmp_path, monkeypatch):
    from lit.data.dataset import SupervisedDataset

    records = json.loads((demo_data / "train.json").read_text())[:12]
    records.append(
        {"id": "text-only", "conversations": [{"from": "human", "value": "Say hi"}, {"from": "gpt", "value": "hi"}]}
    )
    path = demo_data / "cache_test.json"
    path.write_text(json.dumps(records))
    first = _build(path, bpe_tokenizer, tmp_path)
    (entry,) = tmp_path.glob("labels_*")
    assert (entry / "audit.json").is_file() and not list(tmp_path.glob("*.tmp-*"))

    def no_rebuild(self, *args, **kwargs):
        raise AssertionError("labels were rebuilt although the cache holds them")

    monkeypatch.setattr(SupervisedDataset, "_build", no_rebuild)
    second = _build(path, bpe_tokenizer, tmp_path)
    _same(first, second)
    assert second.audit.to_json()["supervised_tokens_by_kind"] == first.audit.to_json()["supervised_tokens_by_kind"]


@pytest.mark.parametrize("damage", ["truncated", "emptied", "deleted"])
def test_a_damaged_entry_is_labelled_again(demo_data, bpe_tokenizer, tmp_path, caplog, damage):
    """An Arrow file of a complete entry cut short (a crash or a full disk after the rename), emptied or removed:
    the next run labels again, says which entry and why, and gets the undamaged labels."""
    from lit.data.label_cache import entry_problem

    path = demo_data / "cache_damage.json"
    path.write_text(json.dumps(json.loads((demo_data / "train.json").read_text())[:12]))
    reference = _build(path, bpe_tokenizer, tmp_path / "reference")  # its own files: the damage must not reach it
    cache = tmp_path / "cache"
    _build(path, bpe_tokenizer, cache)
    (entry,) = cache.glob("labels_*")
    assert entry_problem(entry) is None
    (arrow,) = (entry / "data").glob("*.arrow")
    if damage == "deleted":
        arrow.unlink()
    else:
        arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size // 2 if damage == "truncated" else 0])
    assert entry_problem(entry)
    with caplog.at_level("WARNING", logger="lit.data.label_cache"):
        second = _build(path, bpe_tokenizer, cache)
    assert f"label cache entry {entry} is damaged" in caplog.text
    _same(reference, second)
    assert entry_problem(entry) is None and [p.name for p in cache.iterdir()] == [entry.name]


def test_anything_the_labels_depend_on_gives_a_new_entry(demo_data, bpe_tokenizer, tmp_path):
    path = demo_data / "cache_test2.json"
    path.write_text(json.dumps(json.loads((demo_data / "train.json").read_text())[:4]))
    _build(path, bpe_tokenizer, tmp_path)
    _build(path, bpe_tokenizer, tmp_path, scope="vit")
    _build(
        path,
        bpe_tokenizer,
        tmp_path,
        template_sentences=frozenset({"Answer the question using a single word or phrase."}),
    )
    path.write_text(json.dumps(json.loads((demo_data / "train.json").read_text())[:5]))
    grown = _build(path, bpe_tokenizer, tmp_path)
    assert len(grown) == 5 and len(list(tmp_path.glob("labels_*"))) == 4


def test_labelling_in_worker_processes_equals_one_process(demo_data, bpe_tokenizer, tmp_path):
    """Shards labelled by forked workers and joined give the examples, ids and audit of one process; an
    unusable record is skipped and counted in the audit either way, with its id from its place in the file."""
    from lit.data.dataset import _ArrowExamples

    records = json.loads((demo_data / "train.json").read_text())[:10]
    for r in records:
        r.pop("id", None)  # ids from positions: a shard must count from its first record's place in the file
    records[7]["conversations"] = [{"from": "human", "value": "no answer"}]
    path = demo_data / "shards.json"
    path.write_text(json.dumps(records))
    serial = _build(path, bpe_tokenizer, tmp_path / "one", workers=1, on_invalid="skip")
    sharded = _build(path, bpe_tokenizer, tmp_path / "three", workers=3, min_shard=1, on_invalid="skip")
    assert isinstance(serial.examples, _ArrowExamples)  # a first run trains from the memory-mapped set too
    _same(serial, sharded)
    assert [e.record_id for e in (sharded.examples[i] for i in range(len(sharded)))] == [
        e.record_id for e in (serial.examples[i] for i in range(len(serial)))
    ]
    assert sharded.audit.to_json() == serial.audit.to_json()
    assert sharded.audit.to_json()["skipped"][0]["id"] == "#7"
    assert not list((tmp_path / "three").glob("*/shards"))


def test_a_bad_record_in_a_worker_names_the_record(demo_data, bpe_tokenizer, tmp_path):
    import pytest

    from lit.records import RecordError

    records = json.loads((demo_data / "train.json").read_text())[:6]
    records[4] = {"id": "bad-4", "conversations": [{"from": "human", "value": "no answer"}]}
    path = demo_data / "shards_bad.json"
    path.write_text(json.dumps(records))
    with pytest.raises(RecordError, match="bad-4"):
        _build(path, bpe_tokenizer, tmp_path, workers=2, min_shard=1)


def test_every_label_setting_is_in_the_cache_key():
    """Each field of the ``LabelSpec`` (the data set's argument) changes the label cache's key, so a setting
    added there cannot reach the labels without reaching the key; the spec is frozen and checks its policies."""
    base = LabelSpec(get_template("vicuna_v1"), get_scope("lit"), 512)
    other = {
        "chat_template": get_template("chatml"),
        "scope": get_scope("vit"),
        "max_length": 256,
        "template_sentences": frozenset({"Answer briefly."}),
        "too_long": "truncate",
        "on_invalid": "skip",
        "image_root": "/images",
    }
    assert set(other) == {f.name for f in dataclasses.fields(LabelSpec)}
    for name, value in other.items():
        assert dataclasses.replace(base, **{name: value}).key() != base.key(), name
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.max_length = 1024
    with pytest.raises(ValueError, match="data.too_long must be error|truncate"):
        dataclasses.replace(base, too_long="cut")


def test_the_key_ignores_truncation_an_earlier_call_left_on_the_tokenizer(demo_data, bpe_tokenizer, tmp_path):
    """A fast tokenizer keeps the truncation of its last call that asked for one (InstructBLIP's Q-Former
    tokenizes with ``truncation=True``); labelling does not depend on it, so neither does the cache key."""
    from lit.data.label_cache import _tokenizer_state

    before = _tokenizer_state(bpe_tokenizer)
    bpe_tokenizer("a long text " * 20, truncation=True, max_length=4)
    assert bpe_tokenizer._tokenizer.truncation is not None
    assert _tokenizer_state(bpe_tokenizer) == before
    bpe_tokenizer._tokenizer.no_truncation()
