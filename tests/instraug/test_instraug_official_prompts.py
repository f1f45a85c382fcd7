"""InstrAug's official generation: its meta-prompts word for word, its prompt mix as the default, its one-line
reply parser, and the strip of each instruction before filling.

Upstream: declare-lab/InstrAug at 15242ef373f5d1e2d4476d4a423dc11e01d73e95.

- ``MultiInstruct/llama/my_chat_completion.py``: line 96 (the plain rephrase system message), line 56 (the first
  five lines of ``gen_instr.txt``, read with their line breaks), lines 88-91 (``construct_prompt``), lines 104-120
  (per strategy one rephrase dialog and one strategy dialog: 10 replies per seed), lines 122-127 (the parser);
- ``MultiInstruct/llama/gen_instr.txt`` lines 1-5 (the five strategies);
- ``MultiInstruct/instruction_gen.py`` line 1035 (``.strip()`` of each drawn instruction before it is filled),
  and the seeds of lines 214 and 511-512 (the ones that end in whitespace).
"""

from __future__ import annotations

from collections import Counter

import pytest
from hydra import compose, initialize_config_dir
from tiny_runs import CONF

from instraug import build, pipeline
from instraug.backends import Sampling
from instraug.generate import jobs_for, reply_texts
from instraug.meta_prompts import OFFICIAL_MIX, OWN_MIX, load, strategy_system_prompt
from instraug.parse import candidates, official_line
from instraug.seeds import Seed

# The system messages Generator.generate sends (my_chat_completion.py line 96; gen_instr.txt lines 1-5 through
# construct_prompt, line breaks kept).
OFFICIAL_SYSTEM = {
    "official_rephrase": "Rephrase the input sentence. ",
    "official_synonyms": "Use synonyms for the input text: Replace specific words or phrases with their synonyms to "
    "convey the same meaning for the input.\n",
    "official_reorder": "Rearrange phrases for the input sentence for the input text: Reorganize sentences or phrases "
    "to improve readability or flow without changing the overall meaning.\n",
    "official_simplify": "Simplify language for the input text: Use simpler vocabulary and sentence structures to "
    "make the text more accessible and easier to understand.\n",
    "official_concise": "Remove redundancies for the input text: Eliminate unnecessary words or phrases that do not "
    "add to the meaning of the text.\n",
    "official_active_voice": "Use active voice for the input text: Convert passive sentences to active ones to make "
    "the text more engaging and easier to read.\n",
}


@pytest.mark.parametrize("name", sorted(OFFICIAL_SYSTEM))
def test_official_prompts_are_sent_word_for_word(name):
    chat = load(name).chat("Write a caption for {A}.")
    assert chat == [
        {"role": "system", "content": OFFICIAL_SYSTEM[name]},
        {"role": "user", "content": "Write a caption for {A}."},
    ]


@pytest.mark.parametrize(
    "line, expected",
    [
        ("Use synonyms: Replace words.\n", "Use synonyms for the input text: Replace words.\n"),
        ("a: b: c\n", "a for the input text: b: c\n"),  # only the first colon's part is extended
        ("no colon\n", "no colon\n for the input text"),  # no colon: appended after the line break
    ],
)
def test_strategy_system_prompt_is_construct_prompt(line, expected):
    assert strategy_system_prompt(line) == expected


def _augmentation(config: str, override: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config, overrides=[override]).augmentation


@pytest.mark.parametrize(
    "config, override",
    [
        ("augment", "augmentation=mins_plus"),
        ("augment", "augmentation=mins_plus_mt"),
        ("augment", "augmentation=mins_plus_iter"),
        ("train", "experiment=instraug_iblip7b_mins_plus"),
        ("train", "experiment=instraug_llava7b_mins_plus_mt"),
        ("train", "experiment=instraug_iblip7b_mins_plus_iter"),
    ],
)
def test_the_official_run_configs_default_to_the_official_prompts_and_parser(config, override):
    a = _augmentation(config, override)
    assert dict(a.meta_prompts) == OFFICIAL_MIX and a.reply_lines == "official" and not a.keep_placeholders_hint


def test_the_official_mix_sends_ten_chats_per_seed_as_generator_generate():
    """Five strategies x (the rephrase dialog + the strategy dialog): 5 chats with the rephrase prompt, one with
    each strategy; the seed's placeholders are lettered in the user message (Generator.preprocess)."""
    assert pipeline.AugmentConfig().meta_prompts == OFFICIAL_MIX and pipeline.AugmentConfig().reply_lines == "official"
    parent = {"id": "caption#1", "task": "caption", "text": "Write a caption for {text}.", "root_id": "caption#1"}
    jobs = jobs_for([parent], OFFICIAL_MIX, [0.6], "m")
    assert Counter(j["meta"].name for j in jobs) == Counter(OFFICIAL_MIX) and len(jobs) == 10
    assert {j["meta"].chat("x")[0]["content"] for j in jobs} == set(OFFICIAL_SYSTEM.values())
    assert OWN_MIX.keys() == {k.removeprefix("official_") for k in OFFICIAL_MIX}  # our wording stays selectable
    assert load("rephrase").chat("x")[0]["content"] != OFFICIAL_SYSTEM["official_rephrase"]


LLAMA_REPLY = (
    'Sure! Here\'s a rephrased version of the input sentence:\n\n"Write a caption for {A}."\n\nI hope it helps!'
)


@pytest.mark.parametrize(
    "reply, expected",
    [
        (LLAMA_REPLY, "Write a caption for {A}."),  # line index 2, its end quotes removed
        ("Write a caption for {A}.", "Write a caption for {A}."),  # one line: taken whole
        ('"Quoted one line."', '"Quoted one line."'),  # ... as it is, quotes included
        ("Sure:\nWrite a caption.", None),  # two lines: the official code raised IndexError
        ("Sure! Here are some:\n\n1. First.\n2. Second.", "1. First."),  # line 3 as it is, no bullet removal
        ('Sure!\n\n "Spaced" ', ' "Spaced" '),  # only quotes at the very ends are removed
        ("", ""),
    ],
)
def test_official_parser(reply, expected):
    assert official_line(reply) == expected


def test_the_official_parser_differs_from_the_lenient_one():
    assert official_line("Sure:\n\n1. First.") == "1. First." and candidates("Sure:\n\n1. First.") == ["First."]


class LlamaShapedLLM:
    """A stand-in chat model answering as Llama-2-chat does (lead-in, blank line, rewrite, note), or in two lines
    for the caption seed under the concise strategy."""

    name = "llama-shaped"

    def generate(self, chats, sampling: Sampling, seeds: list[int]):
        out = []
        for chat, seed in zip(chats, seeds):
            seed_text, system = chat[-1]["content"], chat[0]["content"]
            if system.startswith("Remove redundancies") and seed_text.startswith("Write"):
                out.append("Sure:\nA caption for {A}.")
            else:
                out.append(
                    f'Sure! Here is a rewrite:\n\n"Kindly {seed_text[0].lower()}{seed_text[1:]} ({seed % 97})"'
                    "\n\nI hope this helps!"
                )
        return out


def test_pipeline_reads_replies_with_the_official_parser(tmp_path):
    seeds = [Seed("caption#0", "caption", "Write a caption for {text}.")]
    pool, report = pipeline.run(seeds, LlamaShapedLLM(), tmp_path / "c.jsonl", pipeline.AugmentConfig(), progress=False)
    generated = [r["text"] for r in pool if r["origin"] == "generated"]
    assert generated and all(
        t.startswith("Kindly write a caption for {text}. (") and t.endswith(")") for t in generated
    )
    assert report.rejected["caption"]["unparsable_reply"] == 1  # the two-line reply
    row = {"reply": "Sure:\n\n1. Name {A} now.", "parent_text": "Name {text}.", "candidates": ["Name {text} now."]}
    assert reply_texts(row, "official") == ["1. Name {text} now."] and reply_texts(row, "first") == ["Name {text} now."]
    with pytest.raises(ValueError, match="augmentation.reply_lines must be one of official, first, all"):
        reply_texts(row, "one")


def test_each_instruction_is_stripped_before_filling_as_the_official_build():
    """instruction_gen.py lines 214 and 511-512: two seeds ending in whitespace; the official build strips them
    (line 1035) and fills them into the prompts below."""
    pool = [
        {
            "task": "visual_object_identification",
            "origin": "seed",
            "text": "Identify the name of the object, given the subject in {region[0]} and relationship: "
            "{meta_data['relation']}. ",
        },
        {
            "task": "VQA_object_recognition",
            "origin": "seed",
            "text": "In this task, you will be presented with an image. Your task is to answer a question about the "
            "type of object. Question: {question}{options_token} {split_token.join(options)}\n        ",
        },
    ]
    instances = [
        {
            "unique_id": "voi-0",
            "task_name": "visual_object_identification",
            "image_path": "x.jpg",
            "region": [[10, 20, 110, 220]],
            "meta_data": {"relation": "sitting on"},
            "target_txt": "sofa",
        },
        {
            "unique_id": "vor-0",
            "task_name": "VQA_object_recognition",
            "image_path": "x.jpg",
            "question": "what is it",
            "options": ["dog"],
            "target_txt": "dog",
        },
    ]
    prompts = [r["prompt"] for r in build.build(instances, pool)]
    assert prompts == [
        ("Identify the name of the object, given the subject in 10 20 110 220 and relationship: sitting on."),
        (
            "In this task, you will be presented with an image. Your task is to answer a question about "
            "the type of object. Question: what is it\n\n[Options]: dog"
        ),
    ]
