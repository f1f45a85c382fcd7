"""What the model is trained on: each record's tokens with the supervised ones marked, under one loss scope.

The tokenizer is prepared as training prepares it (``lit.mask.tokenizer.prepare_tokenizer``: ``<image>`` is
added to a Vicuna/Llama tokenizer that lacks it), and ``--loss lit`` takes its template settings from
``conf/loss/default.yaml``, so the audit shows exactly the mask training builds::

    python -m lit.mask.audit show --data FILE --tokenizer DIR --chat-template T --loss L [--n 5] [--html OUT.html]
    python -m lit.mask.audit dump --data FILE --tokenizer DIR --chat-template T --loss L [--template-sentences FILE] \
        --out OUT.jsonl
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path

from lit.constants import IGNORE_INDEX, SPAN_KINDS
from lit.mask.chat_templates import get_template
from lit.mask.render import encode, render
from lit.mask.scopes import SCOPES, get_scope, labels_for
from lit.records import load_records, record_id


def _template_sentences(args, records) -> frozenset[str]:
    """Template sentences for ``--loss lit`` exactly as training gets them: from ``--template-sentences``, else from
    the loss config (its ``template_sentences.file``, or mined from the whole corpus, not only ``--n``, with its
    thresholds)."""
    from lit.mask.mining import TemplateSentences, loss_settings, mine

    if not get_scope(args.loss).uses_template_sentences:
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


def _encode_all(args):
    from lit.mask.tokenizer import load_tokenizer, prepare_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    template = _chat_template(args, tokenizer)
    prepare_tokenizer(tokenizer, template)  # adds <image> where missing, as training does
    scope = get_scope(args.loss)
    records = load_records(args.data)
    sentences = _template_sentences(args, records)
    if getattr(args, "n", None):
        records = records[: args.n]
    image_id = tokenizer.convert_tokens_to_ids(template.image_token) if template.image_token else None
    for i, record in enumerate(records):
        rid = record_id(record, i)
        enc = encode(
            render(record, template, template_sentences=sentences, record_id=rid),
            tokenizer,
            record_id=rid,
            image_token_id=image_id,
        )
        yield rid, tokenizer, enc, labels_for(enc, scope)


def _show(args) -> None:
    colour = sys.stdout.isatty() and not args.no_colour
    html_rows = []
    for rid, tok, enc, labels in _encode_all(args):
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
        for rid, _, enc, labels in _encode_all(args):
            fh.write(json.dumps({"id": rid, "input_ids": enc.input_ids.tolist(), "labels": labels.tolist()}) + "\n")
            n += 1
    print(f"{n} records written to {args.out}")


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lit.mask.audit", description="Inspect the LIT loss mask.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("show", "dump"):
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
        p.add_argument("--loss", required=True, choices=list(SCOPES))
        p.add_argument(
            "--template-sentences",
            help="template artefact from `python -m lit.mask.mining mine`; with "
            "--loss lit and none given, the sentences come as training gets them: the loss config's "
            "template_sentences.file, else mined from --data with its thresholds",
        )
    show, dump = sub.choices["show"], sub.choices["dump"]
    show.add_argument("--n", type=int, default=5, help="how many records")
    show.add_argument("--html", help="also write an HTML page with supervised tokens highlighted")
    show.add_argument("--no-colour", action="store_true")
    dump.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    (_show if args.command == "show" else _dump)(args)


if __name__ == "__main__":
    _main()
