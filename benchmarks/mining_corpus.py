"""A LLaVA-mix-665K-shaped corpus for mining benchmarks and tests: 1-10 rounds per record (mean ~2.6), ~9%
text-only, and 20% of questions multiple choice whose options come from a small vocabulary (so lines such
as ``A. red`` reach a few percent of records, as in mix-665K's A-OKVQA/ScienceQA parts)."""

from __future__ import annotations

import random

SHORT = "Answer the question using a single word or phrase."
LETTER = "Answer with the option's letter from the given choices directly."
NOUNS = ["dog", "cat", "bus", "man", "woman", "table", "sign", "tree", "car", "plate", "book", "phone"]
COLOURS = ["red", "blue", "green", "white", "black", "yellow"]


def question(rng: random.Random) -> str:
    kind = rng.random()
    noun, other = rng.choice(NOUNS), rng.choice(NOUNS)
    if kind < 0.20:  # multiple choice over a small vocabulary, in the label styles of mix-665K's sources
        options = rng.sample(COLOURS, 4)
        style = rng.choice(["{L}. {o}", "({l}) {o}", "{n}. {o}", "{L}) {o}"])
        lines = [style.format(L="ABCD"[k], l="abcd"[k], n=k + 1, o=o) for k, o in enumerate(options)]
        return "\n".join([f"What color is the {noun} next to the {other}?", *lines, LETTER])
    if kind < 0.60:
        return f"What color is the {noun} next to the {other}? {SHORT}"
    if kind < 0.75:
        topic = rng.choice(NOUNS)
        return rng.choice(
            [
                f"Who wrote this book about the {topic}?",
                f"What is the title of this book on the {topic}?",
                f"Is this book about the {topic} a comedy?",
            ]
        )
    return f"Can you describe how the {noun} interacts with the {other} in this scene, and why it matters?"


def corpus(n: int, seed: int = 0, *, ask=None, max_answer_words: int = 4) -> list[dict]:
    """``n`` conversations shaped like LLaVA mix-665K: 1-10 rounds (mean ~2.6), 91% with an image in the first
    turn; ``ask(rng)`` writes each question (default: this module's, 20% multiple choice)."""
    ask = ask or question
    rng = random.Random(seed)
    out = []
    for i in range(n):
        rounds = min(10, max(1, int(rng.expovariate(1 / 2.6)) + 1))
        image = rng.random() > 0.09
        conv = []
        for k in range(rounds):
            q = ask(rng)
            conv += [
                {"from": "human", "value": ("<image>\n" + q) if image and k == 0 else q},
                {"from": "gpt", "value": " ".join(rng.choice(NOUNS) for _ in range(rng.randint(1, max_answer_words)))},
            ]
        rec = {"id": str(i), "conversations": conv}
        if image:
            rec["image"] = f"coco/train2017/{i:012d}.jpg"
        out.append(rec)
    return out
