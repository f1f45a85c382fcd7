"""Benchmark: template mining over a 665K-conversation corpus and label building per scope.

The corpus is generated with LLaVA-mix-665K's shape: ~1-10 rounds per record (mean ~2.6), ~9% text-only,
VQA-style rounds carrying the frequent suffixes ("Answer the question using a single word or phrase.", the
multiple-choice suffix), captions, OCR-book questions and free-form questions.

    python benchmarks/bench_labels.py --records 665000 --label-records 20000 --tokenizer data/demo/tokenizer
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import mining_corpus  # the same directory: run as python benchmarks/bench_labels.py

SUFFIXES = [
    "Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly.",
    "",
]
NOUNS = ["dog", "cat", "bus", "man", "woman", "table", "sign", "tree", "car", "plate", "book", "phone"]


def question(rng: random.Random) -> str:
    kind = rng.random()
    noun, other = rng.choice(NOUNS), rng.choice(NOUNS)
    if kind < 0.45:
        return f"What color is the {noun} next to the {other}? {rng.choice(SUFFIXES)}".strip()
    if kind < 0.55:
        return f"Which is larger?\nA. the {noun}\nB. the {other}\n{SUFFIXES[1]}"
    if kind < 0.7:
        return rng.choice(["Who wrote this book?", "What is the title of this book?", "Is this a comedy book?"])
    return f"Can you describe how the {noun} interacts with the {other} in this scene, and why it matters?"


def corpus(n: int, seed: int = 0) -> list[dict]:
    """The mix-665K shape of ``mining_corpus`` with this benchmark's questions and longer answers."""
    return mining_corpus.corpus(n, seed, ask=question, max_answer_words=30)


def labelling_inputs(tokenizer: str, n_records: int, tmp: Path) -> tuple[list[dict], Path, dict]:
    """What the label-cache benchmarks label: ``n_records`` of the corpus, with one real 32 px image in
    ``tmp`` standing in for every image path, written to ``tmp/corpus.json``, and the ``labelled_dataset``
    keyword arguments of the LIT scope on the vicuna_v1 template."""
    from PIL import Image

    from lit.data.image_inputs import ImageInputs
    from lit.data.labels import LabelSpec
    from lit.mask.chat_templates import get_template
    from lit.mask.scopes import get_scope
    from lit.mask.tokenizer import load_tokenizer, prepare_tokenizer
    from lit.model.loading import _image_processor

    tok = load_tokenizer(tokenizer)
    template = get_template("vicuna_v1")
    prepare_tokenizer(tok, template)
    records = corpus(n_records)
    for r in records:
        if "image" in r:
            r["image"] = "img.png"
    Image.new("RGB", (32, 32)).save(tmp / "img.png")
    path = tmp / "corpus.json"
    path.write_text(json.dumps(records))
    kwargs = dict(
        spec=LabelSpec(template, get_scope("lit"), 1 << 20, image_root=tmp),
        tokenizer=tok,
        image_inputs=ImageInputs(_image_processor(32), 576),
        progress=False,
    )
    return records, path, kwargs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=665_000)
    p.add_argument("--label-records", type=int, default=20_000)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--chat-template", default="vicuna_v1")
    p.add_argument("--out", default="benchmarks/results_labels.json")
    args = p.parse_args()

    from lit.mask.chat_templates import get_template
    from lit.mask.mining import mine_file
    from lit.mask.render import encode, render
    from lit.mask.scopes import SCOPES, get_scope, labels_for
    from lit.mask.tokenizer import load_tokenizer, prepare_tokenizer

    records = corpus(args.records)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.json"
        path.write_text(json.dumps(records))
        t0 = time.perf_counter()
        templates = mine_file(path, min_share=0.01).sentences  # includes reading + hashing the file
        mining_s = time.perf_counter() - t0
    tok = load_tokenizer(args.tokenizer)
    template = get_template(args.chat_template)
    prepare_tokenizer(tok, template)
    image_id = tok.convert_tokens_to_ids("<image>")
    subset = records[: args.label_records]
    rates = {}
    for name in SCOPES:
        scope = get_scope(name)
        t0 = time.perf_counter()
        for i, rec in enumerate(subset):
            sentences = templates if scope.uses_template_sentences else frozenset()
            enc = encode(render(rec, template, template_sentences=sentences), tok, record_id=i, image_token_id=image_id)
            labels_for(enc, scope)
        rates[name] = len(subset) / (time.perf_counter() - t0)
    result = {
        "records_mined": len(records),
        "mining_seconds": round(mining_s, 1),
        "templates_found": len(templates),
        "label_records": len(subset),
        "conversations_per_second": {k: round(v) for k, v in rates.items()},
    }
    print(json.dumps(result, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
