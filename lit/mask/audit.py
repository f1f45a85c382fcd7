"""What the model is trained on: each record's tokens with the supervised ones marked, under one loss scope.

The tokenizer is prepared as training prepares it (``lit.mask.tokenizer.prepare_tokenizer``: ``<image>`` is
added to a Vicuna/Llama tokenizer that lacks it), and ``--loss lit`` takes its template settings from
``conf/loss/default.yaml``, so the audit shows exactly the mask training builds::

    python -m lit.mask.audit show --data FILE --tokenizer DIR --chat-template T --loss L [--n 5] [--html OUT.html]
    python -m lit.mask.audit dump --data FILE --tokenizer DIR --chat-template T --loss L [--template-sentences FILE] \
        --out OUT.jsonl
    python -m lit.mask.audit export --data FILE --tokenizer DIR --chat-template T --loss L \
        [--weights instruction=0.1 template_sentence=0] --out FOLDER

``export`` writes the labelled corpus as a Hugging Face ``datasets`` folder (``Dataset.save_to_disk``; read it back
with ``datasets.load_from_disk``) for any trainer that takes pre-tokenized data: ``id``, ``input_ids``, ``labels``
(unshifted, ``-100`` where the scope does not supervise), ``kinds`` (each token's span kind, an index into
``kind_names`` of ``lit_export.json``), ``loss_weights`` (each token's weight, 0 where unsupervised; with
``--weights``, the weights ``loss.weights`` would give) and ``images`` (the record's image paths, as written in
it, relative to its image folder). Each image is one ``image_token`` in ``input_ids``, never supervised: a trainer
whose model expands it into the vision encoder's tokens must expand ``labels`` and ``loss_weights`` with
``-100`` and 0 there. ``lit_export.json`` in the folder says what produced it: scope, weights, chat template,
tokenizer, image token id and the data file's SHA-256.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from lit.constants import IGNORE_INDEX, SPAN_KINDS
from lit.mask.chat_templates import get_template
from lit.mask.render import encode, render
from lit.mask.scopes import BASELINES, SCOPES, get_scope, labels_for
from lit.records import load_records, record_id


def _scope(args):
    """The scope ``--loss``, with ``--weights`` (``export``) as ``loss.weights`` changes it."""
    try:
        return get_scope(args.loss, _weights(getattr(args, "weights", None)))
    except (KeyError, ValueError) as err:
        raise SystemExit(f"--weights: {err}") from None


def _weights(pairs: list[str] | None) -> dict[str, float] | None:
    """``--weights kind=w ...`` as ``loss.weights`` takes it; a malformed pair is an error naming it."""
    if not pairs:
        return None
    weights = {}
    for pair in pairs:
        kind, sep, value = pair.partition("=")
        try:
            weights[kind] = float(value) if sep else None
        except ValueError:
            weights[kind] = None
        if weights[kind] is None:
            raise SystemExit(
                f"--weights {pair}: write kind=weight, e.g. instruction=0.1 (kinds: {', '.join(SPAN_KINDS)})"
            )
    return weights


def _template_sentences(args, records) -> frozenset[str]:
    """Template sentences for ``--loss lit`` exactly as training gets them: from ``--template-sentences``, else from
    the loss config (its ``template_sentences.file``, or mined from the whole corpus, not only ``--n``, with its
    thresholds)."""
    from lit.mask.mining import TemplateSentences, loss_settings, mine

    if not _scope(args).uses_template_sentences:
        return frozenset()
    settings = loss_settings(args.loss)
    path = args.template_sentences or settings.get("file")
    if path:
        return TemplateSentences.load(path).sentences
    return mine(
        records,
        min_share=settings["min_share"],
        min_count=settings["min_count"],
        top_k=settings["top_k"],
        progress=False,
    ).sentences


def _chat_template(args, tokenizer):
    """``--chat-template``: a name in ``TEMPLATES``, or ``auto``: derived from the Jinja chat template saved in the
    ``--tokenizer`` folder (``lit.mask.jinja_template``), its image token from ``--image-token`` or the folder's
    ``config.json``."""
    from dataclasses import replace

    from lit.mask.jinja_template import config_image_token_id, from_tokenizer, with_image_token

    if args.chat_template != "auto":
        return get_template(args.chat_template)
    template = from_tokenizer(tokenizer)
    image_token = args.image_token
    config = Path(args.tokenizer) / "config.json"
    if not image_token and config.is_file():
        token_id = config_image_token_id(json.loads(config.read_text()))
        image_token = tokenizer.convert_ids_to_tokens(token_id) if token_id is not None else None
    if template.image_text and not image_token:  # the image block is typed image as a whole, one span per image
        return replace(template, image_token="")
    return with_image_token(template, image_token) if image_token else template


@dataclass
class _Corpus:
    """The records of ``--data`` and everything their labels are built with, prepared as training prepares it."""

    tokenizer: object
    template: object
    scope: object
    records: list[dict]
    sentences: frozenset[str]

    @property
    def image_id(self) -> int | None:
        return self.tokenizer.convert_tokens_to_ids(self.template.image_token) if self.template.image_token else None

    def encoded(self):
        """``(record id, record, encoded, labels)`` per record."""
        for i, record in enumerate(self.records):
            rid = record_id(record, i)
            enc = encode(
                render(record, self.template, template_sentences=self.sentences, record_id=rid),
                self.tokenizer,
                record_id=rid,
                image_token_id=self.image_id,
            )
            yield rid, record, enc, labels_for(enc, self.scope, self.tokenizer)


def _corpus(args) -> _Corpus:
    from lit.mask.tokenizer import load_tokenizer, prepare_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    template = _chat_template(args, tokenizer)
    prepare_tokenizer(tokenizer, template)  # adds <image> where missing, as training does
    records = load_records(args.data)
    sentences = _template_sentences(args, records)
    if getattr(args, "n", None):
        records = records[: args.n]
    return _Corpus(tokenizer, template, _scope(args), records, sentences)


def _show(args) -> None:
    colour = sys.stdout.isatty() and not args.no_colour
    html_rows = []
    corpus = _corpus(args)
    tok = corpus.tokenizer
    for rid, _, enc, labels in corpus.encoded():
        pieces_term, pieces_html = [], []
        for tid, kind, lab in zip(enc.input_ids.tolist(), enc.kinds.tolist(), labels.tolist()):
            piece = tok.decode([tid])
            on = lab != IGNORE_INDEX
            pieces_term.append((f"\x1b[42;30m{piece}\x1b[0m" if colour else f"[{piece}]") if on else piece)
            title = SPAN_KINDS[kind]
            cls = "on" if on else "off"
            pieces_html.append(f'<span class="{cls}" title="{title}">{html.escape(piece)}</span>')
        n_on = int((labels != IGNORE_INDEX).sum())
        print(
            f"=== {rid}: {n_on}/{len(labels)} tokens supervised ({args.loss}); supervised shown "
            f"{'in green' if colour else 'in [brackets]'}"
        )
        print("".join(pieces_term))
        html_rows.append(
            f"<h3>{html.escape(str(rid))} &mdash; {n_on}/{len(labels)} supervised</h3><pre>{''.join(pieces_html)}</pre>"
        )
    if args.html:
        style = "<style>.on{background:#9be29b}.off{color:#777}pre{white-space:pre-wrap;font-family:monospace}</style>"
        Path(args.html).write_text(
            f"<html><head><meta charset='utf-8'>{style}</head><body>"
            f"<h2>loss scope: {args.loss}</h2>{''.join(html_rows)}</body></html>"
        )
        print(f"HTML written to {args.html}")


def _dump(args) -> None:
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(args.out, "w") as fh:
        for rid, _, enc, labels in _corpus(args).encoded():
            fh.write(json.dumps({"id": rid, "input_ids": enc.input_ids.tolist(), "labels": labels.tolist()}) + "\n")
            n += 1
    print(f"{n} records written to {args.out}")


def _export(args) -> None:
    import datasets
    import numpy as np

    from lit.files import atomic_write, file_sha256
    from lit.mask.scopes import token_weights

    corpus = _corpus(args)
    scope = corpus.scope
    rows: dict[str, list] = {"id": [], "input_ids": [], "labels": [], "kinds": [], "loss_weights": [], "images": []}
    for rid, record, enc, labels in corpus.encoded():
        weights = token_weights(enc.kinds, labels, scope)
        image = record.get("image")
        rows["id"].append(str(rid))
        rows["input_ids"].append(enc.input_ids.tolist())
        rows["labels"].append(labels.tolist())
        rows["kinds"].append(enc.kinds.astype(np.int8).tolist())
        rows["loss_weights"].append(np.asarray(weights, dtype=np.float32).tolist())
        rows["images"].append(
            [] if image is None else [str(p) for p in (image if isinstance(image, list) else [image])]
        )
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "input_ids": datasets.Sequence(datasets.Value("int64")),
            "labels": datasets.Sequence(datasets.Value("int64")),
            "kinds": datasets.Sequence(datasets.Value("int8")),
            "loss_weights": datasets.Sequence(datasets.Value("float32")),
            "images": datasets.Sequence(datasets.Value("string")),
        }
    )
    out = Path(args.out)
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(out))
    image_token = corpus.template.image_token or None
    manifest = {
        "data": str(args.data),
        "data_sha256": file_sha256(args.data),
        "tokenizer": str(args.tokenizer),
        "chat_template": args.chat_template,
        "loss": args.loss,
        "weights": dict(scope.weights),
        "kind_names": list(SPAN_KINDS),
        "image_token": image_token,
        "image_token_id": corpus.image_id,
        "records": len(rows["id"]),
    }
    atomic_write(out / "lit_export.json", json.dumps(manifest, indent=1))
    print(f"{len(rows['id'])} records exported to {out} (datasets.load_from_disk; what produced it: lit_export.json)")


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lit.mask.audit", description="Inspect the LIT loss mask.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("show", "dump", "export"):
        p = sub.add_parser(name)
        p.add_argument("--data", required=True, help="LLaVA-format JSON/JSONL")
        p.add_argument("--tokenizer", required=True, help="tokenizer directory (save_pretrained layout)")
        p.add_argument(
            "--chat-template",
            "--template",
            dest="chat_template",
            required=True,
            help="chat template name, e.g. vicuna_v1, or auto: the Jinja template saved with --tokenizer",
        )
        p.add_argument("--image-token", help="with auto: the token that stands for an image (e.g. <|image_pad|>)")
        p.add_argument("--loss", required=True, choices=[*SCOPES, *BASELINES])
        p.add_argument(
            "--template-sentences",
            help="template artefact from `python -m lit.mask.mining mine`; with "
            "--loss lit and none given, the sentences come as training gets them: the loss config's "
            "template_sentences.file, else mined from --data with its thresholds",
        )
    show, dump, export = sub.choices["show"], sub.choices["dump"], sub.choices["export"]
    show.add_argument("--n", type=int, default=5, help="how many records")
    show.add_argument("--html", help="also write an HTML page with supervised tokens highlighted")
    show.add_argument("--no-colour", action="store_true")
    dump.add_argument("--out", required=True)
    export.add_argument("--out", required=True, help="the datasets folder to write (save_to_disk)")
    export.add_argument(
        "--weights", nargs="*", metavar="KIND=W", help="span weights as loss.weights gives them, e.g. instruction=0.1"
    )
    args = parser.parse_args(argv)
    {"show": _show, "dump": _dump, "export": _export}[args.command](args)


if __name__ == "__main__":
    _main()
