"""Task-template mining: the frequent, low-information sentences that LIT keeps out of the loss.

L2T finds templates "by counting sentence frequencies over the whole training corpus" and removing the
most frequent ones; the segmentation and threshold are not published (SOURCES.md [A][B]), so ours are:

- human turns only, with the ``<image>`` marker removed;
- a sentence runs to ``.``, ``!`` or ``?`` followed by white space, or to the end of a line; a single
  capital letter before a full stop (option labels such as ``A.``), and a number that starts a line
  (``3. red``), do not end one;
- an answer option is never a template: a sentence that starts with an option label (``A. red``,
  ``(b) blue``, ``3. green``, ``A) white``) is instance content, however often it recurs in a corpus
  of multiple-choice questions over a small vocabulary, and ``lit`` supervises it;
- a sentence counts once per record (the share of records containing it, not raw occurrences);
- templates are the sentences with ``share >= min_share`` (and ``count >= min_count``), at most
  ``top_k`` of them when set, most frequent first.

The thresholds have one source: the ``loss`` config (``conf/loss/default.yaml``), which training reads and
the CLIs compose (``--loss lit``); flags override single values. The result is a JSON artefact keyed by
the corpus hash and the parameters, so a second run is free.
CLI: ``python -m lit.mask.mining mine --data FILE --out FILE [--loss lit] [--min-share S] [--top-k K]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import re
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from lit.constants import IMAGE_MARKER
from lit.files import file_sha256
from lit.paths import conf_dir
from lit.records import load_records

log = logging.getLogger(__name__)

# A sentence: a visible character, then (possessively, so each character is looked at once) runs of plain
# characters, or of punctuation that does not end it (after a one-letter word or a line-initial number, or
# not followed by white space), then the punctuation run that ends it, if any; no sentence crosses a line.
_SENTENCE = re.compile(
    r"\S(?:[^.!?\n]++|(?:(?<=\b[A-Z])|(?<=^\d)|(?<=^\d\d))[.!?]++|[.!?]++(?!\s|$))*+(?:[.!?]++)?", re.M
)
_OPTION = re.compile(r"(?:[A-Za-z][.)]|\([A-Za-z0-9]{1,2}\)|\d{1,2}[.)])\s")
CONF_DIR = conf_dir()


def is_option(sentence: str) -> bool:
    """Whether a sentence starts with an answer-option label (``A.``, ``(b)``, ``3.``, ``A)``)."""
    return _OPTION.match(sentence) is not None


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the sentences of ``text``, in order, without white space."""
    return [m.span() for m in _SENTENCE.finditer(text)]


def human_sentences(record: dict) -> set[str]:
    """The distinct sentences of a record's human turns (option lines included; ``mine`` drops them).
    The turns are joined by newlines, which no sentence crosses, and split in one regex pass."""
    text = "\n".join(
        t["value"]
        for t in record.get("conversations", ())
        if t.get("from") == "human" and isinstance(t.get("value"), str)
    )
    return set(_SENTENCE.findall(text.replace(IMAGE_MARKER, "")))


def loss_settings(loss: str = "lit") -> dict:
    """``template_sentences`` settings of the ``loss`` config group, composed by Hydra as training composes it
    (``file``, ``min_share``, ``min_count``, ``top_k``); empty for a scope without template sentences."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    if not (CONF_DIR / "loss" / f"{loss}.yaml").is_file():
        known = sorted(p.stem for p in (CONF_DIR / "loss").glob("*.yaml") if p.stem != "default")
        raise KeyError(f"no loss config {loss!r} in {CONF_DIR / 'loss'}; known: {', '.join(known)}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="loss/" + loss)
    node = cfg.loss if "loss" in cfg else cfg
    return OmegaConf.to_container(node.get("template_sentences") or OmegaConf.create({}), resolve=True)


@dataclass
class TemplateSentences:
    """The mined template sentences plus what is needed to audit and reproduce them."""

    corpus_sha256: str
    n_records: int
    min_share: float
    min_count: int
    top_k: int | None
    template_sentences: list[dict]  # {"sentence", "count", "share"}, most frequent first
    top: list[dict]  # the 50 most frequent sentences, templates or not, for inspection

    @property
    def sentences(self) -> frozenset[str]:
        return frozenset(t["sentence"] for t in self.template_sentences)

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(asdict(self), indent=1, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> TemplateSentences:
        try:
            fields = json.loads(Path(path).read_text())
            if "templates" in fields and "template_sentences" not in fields:  # written before the field's rename
                fields["template_sentences"] = fields.pop("templates")
            return cls(**fields)
        except (OSError, json.JSONDecodeError, TypeError) as err:
            raise ValueError(
                f"{path}: not a template file written by `python -m lit.mask.mining mine` ({err})"
            ) from err


def mine(
    records: list[dict],
    *,
    min_share: float,
    min_count: int = 2,
    top_k: int | None = None,
    corpus_sha256: str = "",
    progress: bool = True,
) -> TemplateSentences:
    """Count in how many records each human-turn sentence occurs and select the templates
    (option lines are counted, shown in ``top``, and never chosen)."""
    counts: Counter[str] = Counter()
    for record in tqdm(records, desc="counting sentences", disable=not progress, mininterval=1.0):
        counts.update(human_sentences(record))
    n = max(len(records), 1)
    ranked = [{"sentence": s, "count": c, "share": c / n} for s, c in counts.most_common()]
    chosen = [r for r in ranked if r["share"] >= min_share and r["count"] >= min_count and not is_option(r["sentence"])]
    if top_k is not None:
        chosen = chosen[:top_k]
    return TemplateSentences(corpus_sha256, len(records), min_share, min_count, top_k, chosen, ranked[:50])


@contextmanager
def _gc_paused():
    """Parsing a 665K-record corpus builds millions of dicts and lists, and the cyclic garbage collector
    would rescan them over and over (about twice the parse time itself); none of them form cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def mine_file(data: str | Path, out: str | Path | None = None, **params) -> TemplateSentences:
    """Mine ``data`` (LLaVA JSON/JSONL), reusing ``out`` when it was mined from the same bytes and params."""
    sha = file_sha256(data)
    if out is not None and Path(out).exists():
        cached = TemplateSentences.load(out)
        same = {k: getattr(cached, k) for k in ("min_share", "min_count", "top_k")}
        wanted = {
            "min_share": params["min_share"],
            "min_count": params.get("min_count", 2),
            "top_k": params.get("top_k"),
        }
        if cached.corpus_sha256 == sha and same == wanted:
            return cached
    with _gc_paused():
        result = mine(load_records(data), corpus_sha256=sha, **params)
    if out is not None:
        result.save(out)
    return result


def template_sentences(loss, scope, data_path: str | Path, cache_dir: str | Path) -> frozenset[str]:
    """The task-template sentences that ``scope`` (the ``loss`` group's, ``lit.mask.scopes``) keeps out of the loss,
    none for the other scopes: the group's ``template_sentences.file``, or mined from the training corpus
    ``data_path`` and cached in ``cache_dir``."""
    if not scope.uses_template_sentences:
        return frozenset()
    t = loss.template_sentences
    found = (
        TemplateSentences.load(t.file)
        if t.file
        else mine_file(
            data_path,
            Path(cache_dir) / f"templates_{Path(data_path).stem}.json",
            min_share=t.min_share,
            min_count=t.min_count,
            top_k=t.top_k,
        )
    )
    log.info("%d template sentences masked: %s", len(found.sentences), sorted(found.sentences)[:5])
    return found.sentences


ALL_TEMPLATES_SHARE = 0.95  # template tokens / instruction tokens from which `lit` is (nearly) `vit`


def warn_if_all_template_sentences(audit, loss, n_sentences: int) -> float | None:
    """Warn once when the template sentences cover (nearly) every instruction token of a labelled set (its
    ``audit``): the ``lit`` arm then supervises the responses only, like ``vit``, and the ablation ladder has one
    rung less. Returns the share (0 without template sentences, None without instruction tokens)."""
    share = audit.template_share()
    if share is not None and share >= ALL_TEMPLATES_SHARE:
        log.warning(
            "loss=%s: the %d template sentences cover %.1f%% of the instruction tokens, so `%s` supervises "
            "(almost) only the responses, as `vit` does; raise loss.template_sentences.min_share (now %s, "
            "conf/loss/default.yaml) or set loss.template_sentences.top_k / loss.template_sentences.file",
            loss.name,
            n_sentences,
            100 * share,
            loss.name,
            loss.template_sentences.get("min_share"),
        )
    return share


def mining_params(args) -> dict:
    """``min_share``/``min_count``/``top_k`` from the ``--loss`` config, each overridden by its flag if given."""
    settings = loss_settings(args.loss)
    if "min_share" not in settings:
        raise ValueError(f"loss={args.loss} mines no templates (only loss=lit does); pass --loss lit")
    params = {k: settings.get(k) for k in ("min_share", "min_count", "top_k")}
    params.update({k: getattr(args, k) for k in params if getattr(args, k, None) is not None})
    return params


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lit.mask.mining", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("mine", help="count sentence frequencies and write the template artefact")
    p.add_argument("--data", required=True, help="LLaVA-format JSON or JSONL corpus")
    p.add_argument("--out", required=True, help="JSON artefact to write (reused if up to date)")
    p.add_argument("--loss", default="lit", help="loss config whose templates settings are the defaults (lit)")
    p.add_argument("--min-share", type=float, help="share of records (default: the loss config's)")
    p.add_argument("--min-count", type=int, help="default: the loss config's")
    p.add_argument("--top-k", type=int, help="default: the loss config's")
    p.add_argument("--show", type=int, default=20, help="how many top sentences to print")
    args = parser.parse_args(argv)
    result = mine_file(args.data, args.out, **mining_params(args))
    chosen = result.sentences
    print(f"{result.n_records} records; {len(result.template_sentences)} templates (share >= {result.min_share})")
    print(f"{'count':>9} {'share':>7}  T  sentence")
    for row in result.top[: args.show]:
        mark = "*" if row["sentence"] in chosen else " "
        print(f"{row['count']:>9} {row['share']:>7.2%}  {mark}  {row['sentence']}")
    print(f"written: {args.out}")


if __name__ == "__main__":
    _main()
