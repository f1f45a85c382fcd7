"""InstrAug: placeholders, parsing, the filter rules, resumable generation, MT/Iter, the ε builder."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from instraug import build, pipeline
from instraug import filter as rule_filter
from instraug.backends import Sampling, vllm_sampling_kwargs
from instraug.generate import jobs_for, read_cache, run_jobs
from instraug.parse import candidates
from instraug.placeholders import UnsafePlaceholder, fill, protect, restore
from instraug.seeds import Seed, load_seeds, summary

SHAPES = [
    "{text}",
    "{split_token.join(options)}",
    "{split_token. join(options)}",
    "{meta_data['relation']}",
    "{region[0]}",
    "{dial_history[-1]}",
    "{' '.join(dial_history)}",
    "{options_token}",
    "{region_token}",
]
FIELDS = {
    "text": "a dog",
    "options": ["yes", "no"],
    "meta_data": {"relation": "left of"},
    "region": ["1 2 3 4", "5"],
    "dial_history": ["hi", "there"],
}


@pytest.mark.parametrize("shape", SHAPES)
def test_placeholder_round_trip_and_fill(shape):
    text = f"Look at {shape} and again {shape}, then {{text}}."
    protected, mapping = protect(text)
    assert protected.count("{A}") == (3 if shape == "{text}" else 2) and protected.endswith(".")
    assert restore(protected, mapping) == text
    filled = fill(text, FIELDS)
    assert "{" not in filled


def test_fill_values():
    assert (
        fill("{split_token.join(options)}|{meta_data['relation']}|{region[0]}|{dial_history[-1]}", FIELDS)
        == "yes||||no|left of|1 2 3 4|there"
    )
    assert fill("{options_token}", {}) == "\n\n[Options]:"


@pytest.mark.parametrize(
    "evil",
    [
        "{__import__('os').system('echo pwned')}",
        "{text.__class__}",
        "{open('x')}",
        "{(lambda: 1)()}",
        "{text + text}",
        "{options}",
        "{nope}",
        "{text[}",
    ],
)
def test_fill_never_evaluates(evil):
    with pytest.raises(UnsafePlaceholder):
        fill(f"Do it: {evil}", FIELDS)


def test_parse_replies():
    assert candidates('Sure! Here\'s a rephrased version:\n\n"Describe {A} briefly."') == ["Describe {A} briefly."]
    assert candidates("1. First way.\n2) Second way.\n- Third way.\nNote: I kept the braces.") == [
        "First way.",
        "Second way.",
        "Third way.",
    ]
    assert candidates("Only one line") == ["Only one line"]
    assert candidates("Sure, here it is:\n") == []


def test_filter_rules_one_by_one():
    seeds = {"t#0": "Describe {text} in the picture please"}
    parent = seeds["t#0"]
    cases = {
        "empty": "",
        "too_long": "word " * 12 + "{text}",
        "placeholders": "Describe the picture please",
        "same_as_parent": "describe {text}  in the picture please",
        "duplicate": "Tell me about {text} now",
        "near_duplicate": "Describe {text} in the picture, please!",
        "contraction": "You'd describe {text}",
    }
    rows = [{"task": "t", "text": "Tell me about {text} now", "parent_text": parent, "root_id": "t#0"}]
    rows += [{"task": "t", "text": txt, "parent_text": parent, "root_id": "t#0"} for txt in cases.values()]
    report = rule_filter.FilterReport()
    kept = rule_filter.apply(rows, seeds, rule_filter.FilterConfig(forbid_contractions=True, near_dup=0.9), report)
    assert [r["text"] for r in kept] == ["Tell me about {text} now"]
    assert report.rejected["t"] == Counter({rule: 1 for rule in cases})
    assert report.kept["t"] == 1


def test_duplicates_per_seed_as_the_official_code_or_per_task():
    """Official: a rewrite is dropped only if the same seed already produced it; dedup=task also checks the
    task's other seeds and their rewrites."""
    seeds = {"t#0": "Describe {text} in the picture please", "t#1": "Tell me about {text} now please"}
    rows = [
        {
            "task": "t",
            "text": "Tell me about {text} now please",
            "parent_text": seeds["t#0"],
            "parent_id": "t#0",
            "root_id": "t#0",
        },
        {"task": "t", "text": "Say what {text} is", "parent_text": seeds["t#0"], "parent_id": "t#0", "root_id": "t#0"},
        {"task": "t", "text": "Say what {text} is", "parent_text": seeds["t#1"], "parent_id": "t#1", "root_id": "t#1"},
        {"task": "t", "text": "say what  {text} is", "parent_text": seeds["t#1"], "parent_id": "t#1", "root_id": "t#1"},
    ]
    official = rule_filter.apply(rows, seeds, rule_filter.FilterConfig())
    assert [r["parent_id"] for r in official] == ["t#0", "t#0", "t#1"]
    per_task = rule_filter.apply(rows, seeds, rule_filter.FilterConfig(dedup="task"))
    assert [r["text"] for r in per_task] == ["Say what {text} is"]


class FakeLLM:
    """A deterministic chat backend: rewrites the user message in a way that depends on the sampling."""

    name = "fake-llm"

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.fail_after = fail_after

    def generate(self, chats, sampling: Sampling, seeds: list[int]):
        out = []
        for chat, seed in zip(chats, seeds):
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise KeyboardInterrupt("killed")
            self.calls += 1
            text = chat[-1]["content"]
            word = random.Random(f"{text}|{chat[0]['content']}|{sampling.temperature}|{seed}").choice(
                ["Kindly", "Please", "Now", "Carefully", "Quickly"]
            )
            out.append(f"Sure! Here's a rephrased version:\n\n\"{word}, {text[0].lower()}{text[1:]}\"")
        return out


SEEDS = [
    Seed("caption#0", "caption", "Describe the image."),
    Seed("caption#1", "caption", "Write a caption for {text}."),
    Seed("vqa#0", "vqa_color", "Answer {question}{options_token}{split_token.join(options)}"),
    Seed("vsr#0", "visual_spatial_reasoning", "Is {text} true?"),
]


def test_generation_resumes_after_a_kill_without_loss_or_duplicates(tmp_path):
    cache = tmp_path / "cache.jsonl"
    parents = [{"id": s.seed_id, "task": s.task, "text": s.text, "root_id": s.seed_id} for s in SEEDS]
    jobs = jobs_for(parents, {"rephrase": 3, "synonyms": 3}, [0.6], "fake-llm")
    with pytest.raises(KeyboardInterrupt):
        run_jobs(jobs, FakeLLM(fail_after=7), cache, Sampling(), batch_size=4, progress=False)
    partial = read_cache(cache)
    assert len(partial) == 4  # the first full batch was written before the kill
    with open(cache, "a") as fh:
        fh.write('{"key": "torn')  # a line cut by the kill
    backend = FakeLLM()
    rows = run_jobs(jobs, backend, cache, Sampling(), batch_size=4, progress=False)
    assert backend.calls == len(jobs) - 4
    keys = [json.loads(line)["key"] for line in cache.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == len(jobs) and [r["key"] for r in rows] == [j["key"] for j in jobs]
    fresh = run_jobs(jobs, FakeLLM(), tmp_path / "other.jsonl", Sampling(), batch_size=4, progress=False)
    assert [r["reply"] for r in fresh] == [r["reply"] for r in rows]


def test_variants_bookkeeping(tmp_path):
    base_pool, base_report = pipeline.run(
        SEEDS,
        FakeLLM(),
        tmp_path / "b.jsonl",
        pipeline.AugmentConfig(meta_prompts=["rephrase", "synonyms"], samples=2, reply_lines="all"),
        progress=False,
    )
    generated = [r for r in base_pool if r["origin"] == "generated"]
    assert {r["task"] for r in generated} == {"caption", "vqa_color"}  # held-out test task not augmented
    for r in generated:
        assert rule_filter.multiset(r["text"]) == rule_filter.multiset(
            dict((s.seed_id, s.text) for s in SEEDS)[r["root_id"]]
        )
    mt_pool, _ = pipeline.run(
        SEEDS,
        FakeLLM(),
        tmp_path / "mt.jsonl",
        pipeline.AugmentConfig(variant="mt", meta_prompts=["rephrase"], temperatures=[0.5, 0.75, 1.0], samples=1),
        progress=False,
    )
    assert {r["temperature"] for r in mt_pool if r["origin"] == "generated"} <= {0.5, 0.75, 1.0}
    it_pool, _ = pipeline.run(
        SEEDS,
        FakeLLM(),
        tmp_path / "it.jsonl",
        pipeline.AugmentConfig(variant="iter", meta_prompts=["rephrase"], samples=1, rounds=1),
        progress=False,
    )
    second = [r for r in it_pool if r.get("round") == 1]
    assert second and all(r["parent_id"] != r["root_id"] for r in second)  # parents are round-0 outputs
    assert all(r["root_id"] in {s.seed_id for s in SEEDS} for r in second)


INSTANCES = [
    {"task_name": "caption", "image_path": f"img/{i}.jpg", "text": "a dog", "target_txt": f"t{i}"} for i in range(40)
]
INSTANCES += [
    {
        "task_name": "vqa_color",
        "image_path": "img/x.jpg",
        "question": "What color?",
        "options": ["red", "blue", "green"],
        "target_txt": "red",
    }
] * 20


def test_epsilon_one_is_the_original_dataset_and_zero_never_uses_seeds(tmp_path):
    pool, _ = pipeline.run(SEEDS, FakeLLM(), tmp_path / "c.jsonl", pipeline.AugmentConfig(samples=2), progress=False)
    seeds_only = [r for r in pool if r["origin"] == "seed"]

    def eps(instances, rows, e, seed):
        return build.build(instances, rows, sampling="epsilon", epsilon=e, seed=seed)

    assert eps(INSTANCES, pool, 1.0, 3) == eps(INSTANCES, seeds_only, 1.0, 3)
    zero = eps(INSTANCES, pool, 0.0, 3)
    assert {r["instruction_origin"] for r in zero} == {"generated"}
    half = Counter(r["instruction_origin"] for r in eps(INSTANCES * 10, pool, 0.5, 0))
    assert 0.4 < half["seed"] / sum(half.values()) < 0.6
    vqa = [r for r in zero if r["task_name"] == "vqa_color"]
    assert len({r["prompt"] for r in vqa}) > 1 and all("[Options]:" in r["prompt"] for r in vqa)
    paths = build.write(zero, tmp_path / "mins_plus")
    llava = json.loads(paths["llava"].read_text())
    assert llava[0]["conversations"][0]["value"].startswith("<image>\n") and llava[0]["image"] == "img/0.jpg"


def test_builder_rejects_code_in_an_instruction():
    pool = [{"task": "caption", "text": "{__import__('os').system('id')}", "origin": "seed"}]
    with pytest.raises(UnsafePlaceholder, match="caption-0"):
        build.build(INSTANCES[:1], pool)


def test_seed_formats_and_summary(tmp_path):
    (tmp_path / "s.jsonl").write_text(
        "".join(json.dumps({"task": s.task, "instruction": s.text}) + "\n" for s in SEEDS)
    )
    (tmp_path / "raw_instructions.tsv").write_text(
        "task_name\tinstructions\n" + "".join(f"{s.task}\t{s.text}\n" for s in SEEDS)
    )
    extend = "    df_dicts.extend(dict(task_name='{}', instructions=instruct) for instruct in instructs)\n"
    (tmp_path / "instruction_gen.py").write_text(
        "def save_raw_instruction():\n    df_dicts = list()\n"
        "    instructs = ['Describe the image.', 'Write a caption for {text}.']\n"
        + extend.format("caption")
        + "    instructs = ['Answer {question}{options_token}{split_token.join(options)}']\n"
        + extend.format("vqa_color")
        + "    instructs = [f'Is {text} true?']\n"
        + extend.format("visual_spatial_reasoning")
        + "    raise SystemExit('never run')\n"
    )
    for name in ("s.jsonl", "raw_instructions.tsv", "instruction_gen.py"):
        seeds = load_seeds(tmp_path / name)
        assert [(s.task, s.text) for s in seeds] == [(s.task, s.text) for s in SEEDS], name
    info = summary(SEEDS)
    assert info["seeds"] == 4 and info["augmentable_seeds"] == 3 and info["augmentable_tasks"] == 2
    assert info["placeholders"]["{text}"] == 2


def test_vllm_sampling_params_are_built_from_the_config():
    assert vllm_sampling_kwargs(Sampling(temperature=0.55, top_p=0.9, max_new_tokens=64), 7) == {
        "temperature": 0.55,
        "top_p": 0.9,
        "max_tokens": 64,
        "seed": 7,
    }


@pytest.mark.integration
def test_transformers_backend_end_to_end(tiny_chat_model, tmp_path):
    from instraug.backends import TransformersBackend

    backend = TransformersBackend(str(tiny_chat_model), batch_size=4)
    pool, report = pipeline.run(
        SEEDS,
        backend,
        tmp_path / "c.jsonl",
        pipeline.AugmentConfig(meta_prompts=["rephrase"], samples=2, max_new_tokens=6),
        progress=False,
    )
    rows = read_cache(tmp_path / "c.jsonl")
    assert len(rows) == 3 * 2 and all(isinstance(r["reply"], str) for r in rows.values())
    # random weights write gibberish: whatever was kept passed the rules, the rest is counted by rule
    generated = sum(r["origin"] == "generated" for r in pool)
    assert generated == sum(report.kept.values())
    assert sum(report.kept.values()) + sum(sum(c.values()) for c in report.rejected.values()) >= len(rows)


@pytest.mark.integration
def test_openai_backend_against_a_local_transformers_server(tiny_chat_model):
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    import httpx

    from instraug.backends import OpenAIBackend

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = str(Path(sys.executable).with_name("transformers"))  # the venv's console script, PATH or not
    server = subprocess.Popen(
        [cli, "serve", "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        backend = OpenAIBackend(str(tiny_chat_model), base_url=f"http://127.0.0.1:{port}/v1", concurrency=2)
        chats = [
            [{"role": "system", "content": "Rewrite it."}, {"role": "user", "content": f"Describe {{A}} {i}."}]
            for i in range(3)
        ]
        replies = backend.generate(chats, Sampling(max_new_tokens=4), seeds=[1, 2, 3])
        assert len(replies) == 3 and all(isinstance(r, str) for r in replies)
    finally:
        server.kill()
        server.wait()


@pytest.mark.integration
def test_augment_cli_builds_pool_and_report(tiny_chat_model, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"task": s.task, "instruction": s.text}) + "\n" for s in SEEDS))
    instances = tmp_path / "instances.jsonl"
    instances.write_text("".join(json.dumps(i) + "\n" for i in INSTANCES))
    out = tmp_path / "run"
    subprocess.run(
        [
            sys.executable,
            "augment.py",
            f"augmentation.seeds={seeds}",
            "~augmentation.meta_prompts",
            "+augmentation.meta_prompts={official_rephrase: 1}",
            "augmentation.max_new_tokens=6",
            "augmentation.backend.kind=transformers",
            f"augmentation.backend.args.model={tiny_chat_model}",
            "~augmentation.backend.args.tensor_parallel_size",
            f"augmentation.cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={out}",
        ],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    )
    pool = [json.loads(line) for line in (out / "pool.jsonl").read_text().splitlines()]
    assert sum(r["origin"] == "seed" for r in pool) == len(SEEDS)
    assert (out / "lengths.png").exists() and "| **all** | 4 |" in (out / "pool_summary.md").read_text()
    report = json.loads((out / "filter_report.json").read_text())
    assert sum(report["kept"].values()) == sum(r["origin"] == "generated" for r in pool)
    manifest = build.build_dataset(instances, out / "pool.jsonl", tmp_path / "set", variant="mins_plus")["manifest"]
    assert json.loads(manifest.read_text())["n_rows"] == len(INSTANCES)


def test_seeds_cli_summarises_the_demo_seed_set():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "instraug.seeds", "instraug/demo/seeds.yaml", "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    info = json.loads(out)
    assert info == {
        "tasks": 4,
        "seeds": 8,
        "augmentable_tasks": 4,
        "augmentable_seeds": 8,
        "placeholders": {"{shape}": 4, "{colour}": 2},
    }


def test_demo_pool_from_files_checks_placeholders(tmp_path):
    from instraug.build import pool_from_files

    pool = pool_from_files("instraug/demo/seeds.yaml", "instraug/demo/paraphrases.yaml", provenance="test")
    generated = [r for r in pool if r["origin"] == "generated"]
    assert len(pool) - len(generated) == 8 and len(generated) == 19
    assert all(r["root_id"].startswith(r["task"] + "#") for r in generated)
    bad = tmp_path / "bad.yaml"
    bad.write_text("colour_vqa:\n  - 'What colour is the {colour}?'\n")
    with pytest.raises(ValueError, match="same placeholders"):
        pool_from_files("instraug/demo/seeds.yaml", bad, provenance="test")
