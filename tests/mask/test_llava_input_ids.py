"""Input ids and labels equal LLaVA's own, stage 1 (``plain``) and stage 2 (``vicuna_v1``), legacy and non-legacy.

The reference below restates the *behaviour* of LLaVA's data path (haotian-liu/LLaVA at c121f04; SOURCES.md [F]),
one helper per upstream function, each naming the lines it follows:

- ``llava_tokenizer_image_token``: ``llava/mm_utils.py`` 185-204. The prompt is split at ``<image>``, every chunk
  is tokenized on its own with the tokenizer's special tokens, the image is ``IMAGE_TOKEN_INDEX`` (-200,
  ``llava/constants.py``) between chunks, and when the first chunk starts with BOS only it keeps its first token.
- ``llava_preprocess_multimodal``: ``llava/train/train.py`` 316-327 (``mm_use_im_start_end`` off, no ``mmtag``):
  a turn with the marker becomes ``"<image>\\n" + rest.strip()``, stripped again (so ``"<image>"`` alone stays).
- ``llava_preprocess_plain``: ``train.py`` 588-607 with ``conv_llava_plain`` (``llava/conversation.py`` 291-299):
  ``"<image>" + caption + "\\n"``, the first ``len(tokenizer_image_token("<image>"))`` labels masked.
- ``llava_preprocess_v1``: ``train.py`` 414-497 with ``conv_vicuna_v1`` (``conversation.py`` 242-252) and
  ``SeparatorStyle.TWO``'s ``get_prompt`` (``conversation.py`` 54-63); text-only records tokenized whole
  (``train.py`` 441-447); the pad token is ``unk`` (``train.py`` 902-904); tokenizers >= 0.14, so rounds after
  the first are one shorter with a non-legacy tokenizer (``train.py`` 50 and 477-479); a cursor that misses the
  length zeroes every label (LLaVA's "tokenization mismatch", counted here).

Records: LLaVA-Pretrain shape (``blip_laion_cc_sbu_558k.json``, linked from LLaVA ``docs/Data.md`` line 19; the
record layout of ``docs/Finetune_Custom_Data.md`` lines 9-27: ``id``, ``image``, a human turn with ``<image>``
before or after a brief-description instruction or alone, a caption), and llava_v1_5_mix665k shape (``README.md``
line 336: multi-turn, ``<image>`` first or last in the first human turn, text-only records). The brief-description
instructions are from the LLaVA paper's list (arXiv 2304.08485, Table 8). The tokenizers are transformers'
``LlamaTokenizer`` built from a SentencePiece BPE model trained here (Llama layout: <unk>=0, <s>=1, </s>=2, byte
fallback), with ``legacy=True`` and ``legacy=False`` (transformers 5's default).
"""

from __future__ import annotations

import random

import pytest

from lit.constants import IGNORE_INDEX
from lit.mask.chat_templates import LLAVA_SYSTEM, TEMPLATES, get_template
from lit.mask.render import encode, render
from lit.mask.scopes import get_scope, labels_for
from lit.mask.tokenizer import prepare_tokenizer

IMAGE_TOKEN_INDEX = -200  # llava/constants.py
IMAGE = "<image>"

BRIEF = [
    "Describe the image concisely.",
    "Provide a brief description of the given image.",
    "Offer a succinct explanation of the picture presented.",
    "Summarize the visual content of the image.",
    "Give a short and clear explanation of the subsequent image.",
    "Render a clear and concise summary of the photo.",
    "Write a terse but informative summary of the picture.",
]
CAPTION_WORDS = [
    "select",
    "luxury",
    "furniture",
    "3",
    "-",
    "inch",
    "gel",
    "memory",
    "foam",
    "mattress",
    "the",
    "a",
    "dog",
    "runs",
    "on",
    "beach",
    "at",
    "sunset",
    "city",
    "skyline",
    "night",
    "2019",
    "vintage",
    "car",
    "café",
    "über",
    "(x)",
    "\"quoted\"",
    "it's",
    "Man",
    "woman",
    "red",
    "bus",
    "stock",
    "photo",
    "—",
]
QUESTIONS = [
    "What color is the bus?",
    "What is the man holding?",
    "How many dogs are there?",
    "Is the woman smiling?",
    "Where is the cat sitting?",
    "What is written on the sign?",
    "Describe the image in detail.",
    "What is the title of this book?",
    "Who wrote this book?",
    "What is 3.5 plus 2?",
    "Why might the car be parked here?",
]
SUFFIXES = [
    "",
    " Answer the question using a single word or phrase.",
    "\nAnswer the question using a single word or phrase.",
    "\nA. red\nB. blue\nC. green\nAnswer with the option's letter from the given choices directly.",
    " Please answer yes or no.",
    "\nReference OCR token: SALE",
]
ANSWERS = [
    "Yes",
    "No",
    "red",
    "2",
    "B",
    "The man is holding a red umbrella.",
    "\"Moby Dick\"",
    "It is parked on the street because\nthe driver is shopping.",
    "3.5 plus 2 is 5.5.",
    "über café",
    " leading space",
    "trailing space ",
    "(a) the first one",
    "1. first\n2. second",
    "—",
]


def llava_pretrain_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        instruction = rng.choice(BRIEF)
        human = rng.choice([f"{IMAGE}\n{instruction}", f"{instruction}\n{IMAGE}", IMAGE, f"{IMAGE}\n"])
        caption = " ".join(rng.choice(CAPTION_WORDS) for _ in range(rng.randint(1, 14)))
        caption = rng.choice([caption, caption.capitalize(), caption + " ", caption + "."])
        rid = f"{rng.randrange(10**9):09d}"
        out.append(
            {
                "id": rid,
                "image": f"{rid[:5]}/{rid}.jpg",
                "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": caption}],
            }
        )
    return out


def llava_mix665k_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        image = rng.random() > 0.15
        where = rng.choice(["first", "first", "last", "alone"])
        turns = []
        for k in range(rng.randint(1, 4)):
            q = rng.choice(QUESTIONS) + rng.choice(SUFFIXES)
            if image and k == 0:
                q = {"first": f"{IMAGE}\n{q}", "last": f"{q}\n{IMAGE}", "alone": IMAGE}[where]
            turns += [{"from": "human", "value": q}, {"from": "gpt", "value": rng.choice(ANSWERS)}]
        record = {"id": f"{i:06d}", "conversations": turns}
        if image:
            record["image"] = f"coco/train2017/{i:012d}.jpg"
        out.append(record)
    return out


# --- LLaVA's behaviour, restated (see the module docstring for the lines) ---------------------------------------


def llava_tokenizer_image_token(prompt: str, tokenizer) -> list[int]:
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split(IMAGE)]
    ids: list[int] = []
    offset = 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        ids.append(chunks[0][0])
    for k, chunk in enumerate(chunks):
        if k:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk[offset:])
    return ids


def llava_preprocess_multimodal(turns: list[dict]) -> list[dict]:
    out = []
    for turn in turns:
        value = turn["value"]
        if IMAGE in value:
            value = (IMAGE + "\n" + value.replace(IMAGE, "").strip()).strip()
        out.append({**turn, "value": value})
    return out


def llava_preprocess_plain(turns: list[dict], tokenizer) -> tuple[list[int], list[int]]:
    assert len(turns) == 2 and IMAGE in turns[0]["value"]
    ids = llava_tokenizer_image_token(IMAGE + turns[1]["value"] + "\n", tokenizer)
    labels = list(ids)
    masked = len(llava_tokenizer_image_token(IMAGE, tokenizer))
    labels[:masked] = [IGNORE_INDEX] * masked
    return ids, labels


def llava_preprocess_v1(turns: list[dict], tokenizer, has_image: bool) -> tuple[list[int], list[int], bool]:
    """(input ids, labels, whether LLaVA's tokenization-mismatch check zeroed the labels)."""
    seps = [" ", "</s>"]
    prompt = LLAVA_SYSTEM + seps[0]
    for i, turn in enumerate(turns):
        prompt += ("USER" if turn["from"] == "human" else "ASSISTANT") + ": " + turn["value"] + seps[i % 2]

    def tok(text):
        return llava_tokenizer_image_token(text, tokenizer) if has_image else tokenizer(text).input_ids

    ids = tok(prompt)
    labels = list(ids)
    total_len = sum(t != tokenizer.unk_token_id for t in ids)  # pad token = unk
    sep = seps[0] + "ASSISTANT" + ": "
    cur_len = 1
    labels[:cur_len] = [IGNORE_INDEX]
    for i, rou in enumerate(prompt.split(seps[1])):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len, instruction_len = len(tok(rou)), len(tok(parts[0])) - 2
        if i != 0 and not tokenizer.legacy:
            round_len, instruction_len = round_len - 1, instruction_len - 1
        labels[cur_len : cur_len + instruction_len] = [IGNORE_INDEX] * len(labels[cur_len : cur_len + instruction_len])
        cur_len += round_len
    labels[cur_len:] = [IGNORE_INDEX] * len(labels[cur_len:])
    mismatch = cur_len != total_len
    if mismatch:
        labels = [IGNORE_INDEX] * len(labels)
    return ids, labels, mismatch


# --- our side --------------------------------------------------------------------------------------------------

CORPUS = [LLAVA_SYSTEM, *BRIEF, *QUESTIONS, *SUFFIXES, *ANSWERS, " ".join(CAPTION_WORDS), "USER: ASSISTANT:"]


@pytest.fixture(scope="module")
def llama_pair(tmp_path_factory) -> dict:
    """LlamaTokenizer from one SentencePiece BPE model, legacy and non-legacy, prepared as training prepares it."""
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    tmp = tmp_path_factory.mktemp("sp_llava")
    (tmp / "corpus.txt").write_text("\n".join(CORPUS * 20))
    spm.SentencePieceTrainer.train(
        input=str(tmp / "corpus.txt"),
        model_prefix=str(tmp / "tokenizer"),
        vocab_size=600,
        model_type="bpe",
        byte_fallback=True,
        bos_id=1,
        eos_id=2,
        unk_id=0,
        pad_id=-1,
        character_coverage=1.0,
        minloglevel=2,
    )
    out = {}
    for legacy in (True, False):
        tok = LlamaTokenizer.from_pretrained(str(tmp), legacy=legacy, add_bos_token=True)
        for name in ("vicuna_v1", "plain"):
            prepare_tokenizer(tok, TEMPLATES[name])
        assert tok.legacy is legacy
        out["legacy" if legacy else "nonlegacy"] = tok
    return out


def ours(record: dict, tokenizer, template: str) -> tuple[list[int], list[int]]:
    image_id = tokenizer.convert_tokens_to_ids(IMAGE)
    enc = encode(render(record, get_template(template)), tokenizer, record_id=record["id"], image_token_id=image_id)
    labels = labels_for(enc, get_scope("vit"))
    return (
        [IMAGE_TOKEN_INDEX if t == image_id else int(t) for t in enc.input_ids],
        [IGNORE_INDEX if t == image_id else int(t) for t in labels],
    )


def _agreement(records, tokenizer, reference, template):
    same_ids = same_labels = mismatches = 0
    first_diff = None
    for record in records:
        expected_ids, expected_labels, mismatch = reference(record, tokenizer)
        got_ids, got_labels = ours(record, tokenizer, template)
        mismatches += mismatch
        same_ids += got_ids == expected_ids
        same_labels += got_labels == expected_labels
        if first_diff is None and (got_ids, got_labels) != (expected_ids, expected_labels):
            first_diff = (
                record,
                tokenizer.convert_ids_to_tokens([max(t, 0) for t in got_ids]),
                tokenizer.convert_ids_to_tokens([max(t, 0) for t in expected_ids]),
            )
    return same_ids, same_labels, mismatches, first_diff


def _plain_reference(record, tokenizer):
    return (*llava_preprocess_plain(llava_preprocess_multimodal(record["conversations"]), tokenizer), False)


def _v1_reference(record, tokenizer):
    turns = record["conversations"]
    if "image" in record:
        turns = llava_preprocess_multimodal(turns)
    return llava_preprocess_v1(turns, tokenizer, "image" in record)


@pytest.mark.parametrize("setting", ["legacy", "nonlegacy"])
def test_stage1_plain_ids_and_labels_equal_llava_preprocess_plain(llama_pair, setting):
    records = llava_pretrain_records(100)
    assert sum(r["conversations"][0]["value"].strip() == IMAGE for r in records) > 10  # <image>-only turns
    same_ids, same_labels, _, diff = _agreement(records, llama_pair[setting], _plain_reference, "plain")
    assert (same_ids, same_labels) == (100, 100), diff


@pytest.mark.parametrize("setting", ["legacy", "nonlegacy"])
def test_stage2_vicuna_ids_and_labels_equal_llava_preprocess_v1(llama_pair, setting):
    records = llava_mix665k_records(400)
    kinds = {
        "image first": sum(r["conversations"][0]["value"].startswith(IMAGE + "\n") for r in records),
        "image last": sum(r["conversations"][0]["value"].endswith("\n" + IMAGE) for r in records),
        "image alone": sum(r["conversations"][0]["value"] == IMAGE for r in records),
        "text-only": sum("image" not in r for r in records),
        "multi-turn": sum(len(r["conversations"]) > 2 for r in records),
    }
    assert min(kinds.values()) >= 20, kinds
    same_ids, same_labels, mismatches, diff = _agreement(records, llama_pair[setting], _v1_reference, "vicuna_v1")
    assert mismatches == 0  # LLaVA's own labels are intact on these records, so they are comparable
    assert (same_ids, same_labels) == (400, 400), diff


def test_fixtures_see_the_difference_whole_prompt_tokenization_makes(llama_pair):
    """Tokenizing the whole prompt once (``<image>`` an added token) gives LLaVA's ids with the legacy tokenizer
    but not with the non-legacy one: the text after the image loses its word start (``▁``). So the parity tests
    above can tell a chunk-wise tokenization from a whole-prompt one."""

    def whole(record, tokenizer):
        text = "".join(s.text for s in render(record, get_template("plain")))
        ids = tokenizer(text).input_ids
        return [IMAGE_TOKEN_INDEX if t == tokenizer.convert_tokens_to_ids(IMAGE) else t for t in ids]

    records = llava_pretrain_records(100)
    for setting, expected in (("legacy", 100), ("nonlegacy", 0)):
        tok = llama_pair[setting]
        assert sum(whole(r, tok) == _plain_reference(r, tok)[0] for r in records) == expected, setting


@pytest.mark.parametrize("value", [IMAGE, IMAGE + "\n", "\n" + IMAGE + "  "])
def test_image_only_human_turn_is_accepted_as_llava_leaves_it(llama_pair, value):
    record = {
        "id": "only-image",
        "image": "x.jpg",
        "conversations": [{"from": "human", "value": value}, {"from": "gpt", "value": "a dog on a beach"}],
    }
    assert llava_preprocess_multimodal(record["conversations"])[0]["value"] == IMAGE
    spans = render(record, get_template("vicuna_v1"))
    assert "USER: <image> ASSISTANT: a dog" in "".join(s.text for s in spans)
    assert [s.text for s in spans if s.kind == "image"] == [IMAGE]
    for tok in llama_pair.values():
        expected_ids, expected_labels, mismatch = _v1_reference(record, tok)
        assert not mismatch and ours(record, tok, "vicuna_v1") == (expected_ids, expected_labels)
        assert ours(record, tok, "plain") == _plain_reference(record, tok)[:2]


@pytest.mark.parametrize("setting", ["legacy", "nonlegacy"])
def test_an_earlier_truncating_call_does_not_cut_the_next_encoding(llama_pair, setting):
    """A fast tokenizer's backend keeps the truncation of the last call that asked for it (InstructBLIP's Q-Former
    tokenizes the instruction with ``truncation=True, max_length=128``; in the tiny models it is the LM's
    tokenizer). ``encode`` must not inherit it."""
    tokenizer = llama_pair[setting]
    template = get_template("vicuna_v1")
    prepare_tokenizer(tokenizer, template)
    record = {
        "conversations": [
            {"from": "human", "value": "Describe the picture in detail please."},
            {"from": "gpt", "value": " ".join(["a red circle on a blue square"] * 20)},
        ]
    }
    spans = render(record, template, record_id="r")
    whole = encode(spans, tokenizer, record_id="r", image_token_id=None).input_ids
    side, tokenizer.truncation_side = tokenizer.truncation_side, "left"
    tokenizer("some words " * 50, truncation=True, max_length=8)
    tokenizer.truncation_side = side
    assert encode(spans, tokenizer, record_id="r", image_token_id=None).input_ids.tolist() == whole.tolist()
