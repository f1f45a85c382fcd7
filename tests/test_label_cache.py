"""The on-disk label cache: a second run reads the same examples back instead of re-labelling, and any
input the labels depend on gives a new entry."""

from __future__ import annotations

import json

import numpy as np

from lit.chat_templates import get_template
from lit.label_cache import labelled_dataset
from lit.mask import get_scope
from lit.image_inputs import ImageInputs
from lit.model import _image_processor


def _build(records_path, tokenizer, cache, scope="lit", **kw):
    from lit.records import load_records

    return labelled_dataset(load_records(records_path), records_path, cache, image_root=records_path.parent,
                            tokenizer=tokenizer, template=get_template("vicuna_v1"), scope=get_scope(scope),
                            image_inputs=ImageInputs(_image_processor(32), 16), max_length=512, progress=False, **kw)


def _same(a, b):
    assert len(a) == len(b) and a.lengths() == b.lengths() and a.has_image() == b.has_image()
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert all(np.array_equal(x[k].numpy(), y[k].numpy()) for k in ("input_ids", "labels", "kind_counts"))
        assert (x["image"] is None) == (y["image"] is None)
        if x["image"] is not None:
            assert np.array_equal(x["image"]["pixel_values"].numpy(), y["image"]["pixel_values"].numpy())


def test_second_build_reads_the_cache_and_matches(demo_data, bpe_tokenizer, tmp_path, monkeypatch):
    from lit.data import SupervisedDataset

    records = json.loads((demo_data / "train.json").read_text())[:12]
    records.append({"id": "text-only", "conversations": [{"from": "human", "value": "Say hi"}, {"from": "gpt", "value": "hi"}]})
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


def test_anything_the_labels_depend_on_gives_a_new_entry(demo_data, bpe_tokenizer, tmp_path):
    path = demo_data / "cache_test2.json"
    path.write_text(json.dumps(json.loads((demo_data / "train.json").read_text())[:4]))
    _build(path, bpe_tokenizer, tmp_path)
    _build(path, bpe_tokenizer, tmp_path, scope="vit")
    _build(path, bpe_tokenizer, tmp_path, templates=frozenset({"Answer the question using a single word or phrase."}))
    path.write_text(json.dumps(json.loads((demo_data / "train.json").read_text())[:5]))
    grown = _build(path, bpe_tokenizer, tmp_path)
    assert len(grown) == 5 and len(list(tmp_path.glob("labels_*"))) == 4
