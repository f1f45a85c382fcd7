"""InstrAug on the official artefacts' formats: the official seed file's structure, MultiInstruct instances as
the preprocessing writes them, one MIns+ set per arm, the official sampling, retries of the chat API.

``fixtures/instraug/instruction_gen.py`` mirrors declare-lab/InstrAug MultiInstruct/instruction_gen.py
(lines 1-836: task lists, extend calls, commented-out tasks) with the official task names, seed counts and
placeholders, reworded. Instances below follow VT-NLP/MultiInstruct's preprocessed JSON lines (boxes as
number lists; ``meta_data.object_regions``, ``meta_data.dialog_hist``; see its test.jsonl).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from instraug import build
from instraug.multiinstruct import DROPPED_TASKS, prepare
from instraug.placeholders import fill
from instraug.seeds import SeedFileError, load_seeds, summary
from lit.files import file_sha256

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "instraug"
OFFICIAL = FIXTURES / "instruction_gen.py"
ROOT = Path(__file__).resolve().parents[2]
BOX = re.compile(r"^-?\d+(\.\d+)? -?\d+(\.\d+)? -?\d+(\.\d+)? -?\d+(\.\d+)?$")


def raw_instance(task: str, i: int = 0, history: bool = True) -> dict:
    """A MultiInstruct instance in the preprocessing's format, with every field any task may carry."""
    box = [[10.5, 20, 110.25, 220], [30, 40.5, 130, 240]]
    inst = {
        "unique_id": f"{task}-{i}",
        "task_name": task,
        "image_path": f"images/{i % 2}.png",
        "text": "a dog on a sofa",
        "question": "what colour is the dog",
        "answer": "brown",
        "options": [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]
        if task in build_region_options()
        else ["brown", "black", "white"],
        "region": box,
        "target_txt": "brown",
        # wikihow_next_step: the history steps; multimodal_factual_checking: the evidence text
        "context": ["open the box", "take out the cake"] if task == "wikihow_next_step" else "the dog sleeps",
        "meta_data": {
            "relation": "sitting on",
            "method": "bake a cake",
            "object_regions": {"subject": [box[0]], "object": [box[1]], "given_region": [box[0]], "person 1": [box[1]]},
            "dialog_hist": [{"q": "is it indoors", "a": "yes"}] if history else [],
        },
    }
    return inst


def build_region_options():
    from instraug.multiinstruct import OPTIONS_REGION_TASKS

    return OPTIONS_REGION_TASKS


def test_official_seed_file_is_read_as_it_is_never_run():
    seeds = load_seeds(OFFICIAL)  # the fixture imports a module that does not exist: running it would fail
    assert summary(seeds, "official")["tasks"] == 75 and len(seeds) == 378
    assert (summary(seeds, "official")["augmentable_tasks"], summary(seeds, "official")["augmentable_seeds"]) == (
        66,
        333,
    )
    assert (summary(seeds)["augmentable_tasks"], summary(seeds)["augmentable_seeds"]) == (63, 318)  # paper's 9 held out
    counts = Counter(s.task for s in seeds)
    assert counts["region_generation"] == 7 and counts["visual_object_region"] == 6 and counts["VQA"] == 5
    assert {"visual_dialog_has_hist", "visual_dialog_no_hist"} <= set(counts) and "ok_vqa" not in counts
    assert "purpose_driven_affordance" not in counts
    assert any("{split_token. join(options)}" in s.text for s in seeds)
    assert any("\n" in s.text for s in seeds)


def test_seed_files_without_seeds_are_errors_naming_file_and_formats(tmp_path):
    empty = tmp_path / "instruction_gen.py"
    empty.write_text("def save_raw_instruction():\n    df_dicts = list()\n    options = ['next']\n")
    with pytest.raises(
        SeedFileError,
        match=r"instruction_gen\.py: no seed instructions found; accepted formats: "
        r"official instruction_gen\.py",
    ):
        load_seeds(empty)
    task_without = tmp_path / "gen.py"
    task_without.write_text(
        "def f():\n    df_dicts = []\n    instructs = []\n"
        "    df_dicts.extend(dict(task_name='VG', instructions=i) for i in instructs)\n"
    )
    with pytest.raises(SeedFileError, match=r"gen\.py:4: task 'VG' has no seed instructions"):
        load_seeds(task_without)
    (tmp_path / "s.yaml").write_text("VG: []\n")
    with pytest.raises(SeedFileError, match="task 'VG' has no seed"):
        load_seeds(tmp_path / "s.yaml")
    (tmp_path / "s.tsv").write_text("task\ttext\nVG\tx\n")
    with pytest.raises(SeedFileError, match="task_name, instructions.*Accepted formats"):
        load_seeds(tmp_path / "s.tsv")


def test_every_seed_of_every_task_fills_on_an_instance_of_its_task():
    """All 378 seeds (training and evaluation tasks) fill on a raw-format instance; no Python reprs leak."""
    by_task: dict[str, list[str]] = {}
    for s in load_seeds(OFFICIAL):
        by_task.setdefault(s.task, []).append(s.text)
    filled = 0
    for task, texts in by_task.items():
        if task in DROPPED_TASKS:
            continue
        base = "visual_dialog" if task.startswith("visual_dialog_") else task
        prepared = prepare(raw_instance(base, history=task.endswith("has_hist")), random.Random(0))
        assert prepared.instruction_task == task
        for text in texts:
            prompt = fill(text, prepared.fields)
            assert "{" not in prompt and "['" not in prompt and "[[" not in prompt and "[1" not in prompt, (
                task,
                prompt,
            )
            filled += 1
    assert filled == 378 - sum(len(v) for k, v in by_task.items() if k in DROPPED_TASKS) > 300


def test_fields_are_derived_as_the_official_build():
    rng = random.Random(0)
    cvqa = {
        "unique_id": "vcr_val-0",
        "task_name": "commonsense_VQA",
        "image_path": "x.jpg",
        "question": "How is person 1 feeling ?",
        "options": ["sad .", "happy ."],
        "target_txt": "sad .",
        "meta_data": {"object_regions": {"person 1": [955.5, 52.25, 1551, 789], "person 3": [902, 111, 1035, 701]}},
    }
    p = prepare(cvqa, rng)
    assert p.fields["region_info"] == "person 1 is in 955.5 52.25 1551 789. person 3 is in 902 111 1035 701."
    assert p.fields["options_str"] == "\n\n[Options]: " + "||||".join(p.fields["options"])
    assert sorted(p.fields["options"]) == ["happy .", "sad ."] and cvqa["options"] == ["sad .", "happy ."]
    gvqa = {
        "unique_id": "v7w",
        "task_name": "grounded_VQA",
        "image_path": "x.jpg",
        "question": "Which chair?",
        "region": [[144, 358, 318, 598]],
        "options": [[3, 8, 43, 537], [144, 358, 318, 598]],
        "target_txt": "ignored for region-output tasks",
    }
    p = prepare(gvqa, rng)
    assert p.target == "144 358 318 598" and sorted(p.fields["options"]) == ["144 358 318 598", "3 8 43 537"]
    dial = {
        "unique_id": "vd",
        "task_name": "visual_dialog",
        "image_path": "x.jpg",
        "question": "is it red",
        "target_txt": "yes",
        "meta_data": {"caption": "c", "dialog_hist": [{"q": "a cat?", "a": "no"}, {"q": "a dog?", "a": "yes"}]},
    }
    p = prepare(dial, rng)
    assert p.instruction_task == "visual_dialog_has_hist"
    assert fill("{' '.join(dial_history)}|{dial_history[-1]}", p.fields) == "a cat?, no; a dog?, yes;|a dog?, yes;"
    assert prepare({**dial, "meta_data": {"dialog_hist": []}}, rng).instruction_task == "visual_dialog_no_hist"
    inst = raw_instance("visual_subject_region")
    assert prepare(inst, rng).fields["region"] == "30 40.5 130 240"  # the object's box (MultiInstruct's templates)
    assert prepare(raw_instance("visual_object_region"), rng).fields["region"] == "10.5 20 110.25 220"
    p = prepare(raw_instance("select_overlap_most_region"), rng)
    assert p.fields["given_region"] == "10.5 20 110.25 220" and BOX.match(p.target.split(" 30")[0])
    assert prepare(raw_instance("wikihow_next_step"), rng).fields["context"] == "open the box\ntake out the cake"
    assert prepare({**raw_instance("wikihow_next_step"), "context": []}, rng).fields["context"] == '"nothing"'
    assert sorted(prepare(raw_instance("wikihow_text_image_step_order"), rng).fields["options"]) == ["next", "previous"]
    assert (
        fill("{region_split_token.join(region)}", prepare(raw_instance("GC"), rng).fields)
        == "10.5 20 110.25 220||||30 40.5 130 240"
    )


def _pool(tmp_path: Path, n_generated: int) -> Path:
    rows = [
        {
            "id": f"VQA_color#{k}",
            "task": "VQA_color",
            "text": f"Seed {k}: {{question}}{{options_str}}",
            "origin": "seed",
            "root_id": f"VQA_color#{k}",
        }
        for k in range(5)
    ]
    rows += [
        {
            "id": f"g{k}",
            "task": "VQA_color",
            "text": f"Rewrite {k}: {{question}}{{options_str}}",
            "origin": "generated",
            "root_id": f"VQA_color#{k % 5}",
        }
        for k in range(n_generated)
    ]
    path = tmp_path / f"pool{n_generated}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _instances(tmp_path: Path, n: int = 400) -> Path:
    path = tmp_path / "train.jsonl"
    rows = [raw_instance("VQA_color", i) for i in range(n)] + [raw_instance("image_generation", 0)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_official_sampling_is_uniform_over_seeds_and_rewrites(tmp_path):
    pool = [json.loads(line) for line in _pool(tmp_path, 45).read_text().splitlines()]
    rows = build.build([raw_instance("VQA_color", i) for i in range(2000)], pool, sampling="official", seed=1)
    share = Counter(r["instruction_origin"] for r in rows)["seed"] / len(rows)
    assert 0.07 < share < 0.13  # 5 of 50
    eps = build.build([raw_instance("VQA_color", i) for i in range(2000)], pool, sampling="epsilon", epsilon=0.5)
    assert 0.45 < Counter(r["instruction_origin"] for r in eps)["seed"] / len(eps) < 0.55
    with pytest.raises(ValueError, match="epsilon in \\[0, 1\\]"):
        build.build(rows[:1], pool, sampling="epsilon")


def test_two_arms_get_different_files_that_record_their_inputs(tmp_path):
    instances = _instances(tmp_path)
    a = build.build_dataset(instances, _pool(tmp_path, 45), tmp_path / "a", variant="mins_plus")
    b = build.build_dataset(instances, _pool(tmp_path, 10), tmp_path / "b", variant="mins_plus_mt")
    assert a["llava"].read_text() != b["llava"].read_text()
    ma, mb = (json.loads(p["manifest"].read_text()) for p in (a, b))
    assert ma["inputs"]["pool_sha256"] != mb["inputs"]["pool_sha256"]
    assert ma["inputs"]["instances_sha256"] == file_sha256(instances) and ma["inputs"]["variant"] == "mins_plus"
    assert ma["inputs"]["sampling"] == "official" and ma["skipped_dropped_tasks"] == {"image_generation": 1}
    assert ma["n_rows"] == 400
    first = a["llava"].stat().st_mtime_ns
    build.build_dataset(instances, _pool(tmp_path, 45), tmp_path / "a", variant="mins_plus")  # same inputs: kept
    assert a["llava"].stat().st_mtime_ns == first
    with pytest.raises(build.DatasetMismatch, match="pool_sha256.*Refusing"):
        build.build_dataset(instances, _pool(tmp_path, 10), tmp_path / "a", variant="mins_plus")
    with pytest.raises(build.DatasetMismatch, match="sampling"):
        build.build_dataset(
            instances, _pool(tmp_path, 45), tmp_path / "a", variant="mins_plus", sampling="epsilon", epsilon=0.5
        )
    assert not list((tmp_path / "a").glob(".*.tmp"))
    row = json.loads(a["multiinstruct"].read_text().splitlines()[0])
    assert sorted(row["prompt"].split("\n\n[Options]: ")[1].split("||||")) == sorted(row["options"])


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_each_arm_composes_its_own_data_path_and_the_recipes_build_it_first(tmp_path):
    from functools import cache

    from hydra import compose, initialize_config_dir

    from lit import recipes

    @cache
    def path_of(*overrides: str) -> str:
        return compose("train", overrides=list(overrides)).data.path

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        _arms_and_recipes(tmp_path, recipes, path_of, compose)


def _arms_and_recipes(tmp_path, recipes, path_of, compose):
    root = "data.root=/data/mi/59k"
    paths = {
        v: path_of(f"experiment=instraug_llava7b_{v}", root)
        for v in ("mins", "mins_plus", "mins_plus_iter", "mins_plus_mt")
    }
    assert len(set(paths.values())) == 4
    assert path_of("experiment=instraug_iblip7b_mins_plus_mt", root) == paths["mins_plus_mt"]
    assert compose("train", overrides=["experiment=instraug_llava7b_mins_plus"]).data.mins_plus.sampling == "official"
    for name in ("instraug_t1", "instraug_t2", "instraug_t4", "instraug_eps"):
        jobs = {j.id: j for j in recipes.jobs(recipes.load(name), tmp_path)}
        trained_on = set()
        for job in jobs.values():
            if job.kind != "train" or not any("experiment=instraug_" in o for o in job.overrides):
                continue
            builders = [jobs[a] for a in job.after if jobs[a].kind == "mins_plus"]
            assert len(builders) == 1, job.id
            mine = [o for o in job.overrides if not o.startswith("model.pretrained")]
            path = path_of(*mine)
            assert path_of(*builders[0].overrides) == path, job.id
            trained_on.add((job.id.split("_", 1)[0], path))
        arms = {p for _, p in trained_on}
        assert len(arms) == len({j.id for j in jobs.values() if j.kind == "mins_plus"}), name


def test_training_refuses_a_missing_or_foreign_set(tmp_path):
    from instraug.arm import build_for, require

    instances, pool = _instances(tmp_path, 20), _pool(tmp_path, 5)
    cfg = _compose(
        "experiment=instraug_llava7b_mins_plus",
        f"data.root={tmp_path}",
        f"data.mins_plus.pool={pool}",
        f"data.mins_plus.instances={instances}",
    )
    with pytest.raises(FileNotFoundError, match="does not exist: training does not build it.*build_mins_plus.py"):
        require(cfg.data)
    build_for(cfg.data)
    require(cfg.data)
    pool.write_text(pool.read_text().replace("Rewrite 0", "Rewrite zero"))
    with pytest.raises(build.DatasetMismatch, match="pool_sha256.*python build_mins_plus.py"):
        require(cfg.data)


def test_the_refusal_names_the_runs_overrides(tmp_path):
    """The refusal gives the command that builds the arm's set: build_mins_plus.py with the training run's
    overrides, as the caller passes them or, under train.py, as Hydra parsed them (not the process's argv)."""
    import subprocess
    import sys

    from instraug.arm import require

    instances, pool = _instances(tmp_path, 20), _pool(tmp_path, 5)
    overrides = [
        "data=mins_plus",
        "augmentation=mins_plus",
        f"data.root={tmp_path}",
        f"data.mins_plus.pool={pool}",
        f"data.mins_plus.instances={instances}",
        "logger=none",
    ]
    cfg = _compose(*overrides)
    command = "with: python build_mins_plus.py experiment=x 'data.root=a b'"
    with pytest.raises(FileNotFoundError, match=re.escape(command)):
        require(cfg.data, overrides=["experiment=x", "data.root=a b"])
    done = subprocess.run(
        [sys.executable, "train.py", *overrides, f"hydra.run.dir={tmp_path}/run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "Build it first with: python build_mins_plus.py " + " ".join(overrides) + "\n" in done.stderr, done.stderr


def test_openai_backend_retries_transient_failures_and_stops_on_others(chat_server):
    from instraug.backends import OpenAIBackend, Sampling
    from lit.chat_api import ChatAPIError

    url, fast = chat_server.url, {"backoff": 0.01, "max_backoff": 0.02}
    backend = OpenAIBackend("m", base_url=url, concurrency=1, max_retries=3, **fast)
    chat = [{"role": "system", "content": "Rewrite."}, {"role": "user", "content": "Describe {A}."}]
    chat_server.script = [503, 429]
    assert backend.generate([chat], Sampling(), [7]) == ["Rewritten {A}."] and len(chat_server.requests) == 3
    chat_server.requests.clear()
    chat_server.script = [400]
    with pytest.raises(ChatAPIError, match=r"answered 400 \(not retried\) to request \(seed 7\) 'Describe \{A\}.'"):
        backend.generate([chat], Sampling(), [7])
    assert len(chat_server.requests) == 1
    chat_server.requests.clear()
    chat_server.script = [500, 500]
    with pytest.raises(ChatAPIError, match="answered 500 \\(transient, retries exhausted"):
        OpenAIBackend("m", base_url=url, max_retries=1, **fast).generate([chat], Sampling(), [1])
    assert len(chat_server.requests) == 2


def test_judge_retries_through_the_same_client(chat_server, monkeypatch):
    from lit.eval.judge import ChatJudge

    monkeypatch.setenv("TEST_JUDGE_KEY", "k")
    chat_server.script = [502]
    judge = ChatJudge(
        api_url=chat_server.completions_url, model="m", api_key_env="TEST_JUDGE_KEY", retries=2, backoff=0.01
    )
    assert judge._ask("grade") == "Rewritten {A}." and len(chat_server.requests) == 2


def test_multiinstruct_eval_documents_use_the_same_fields(tmp_path):
    """lit_multiinstruct: each test instance becomes 5 documents (its task's original instructions), filled
    with instraug.multiinstruct's fields; one option order per instance; visual_dialog by its history."""
    import importlib.util
    import shutil

    import datasets

    task_dir = tmp_path / "task"
    task_dir.mkdir()
    shutil.copy(ROOT / "lit" / "eval" / "tasks" / "lit_multiinstruct" / "utils.py", task_dir / "utils.py")
    (task_dir / "settings.json").write_text(json.dumps({"data_dir": str(tmp_path)}))
    (tmp_path / "multiinstruct").mkdir()
    shutil.copy(OFFICIAL, tmp_path / "multiinstruct" / "instructions.py")
    spec = importlib.util.spec_from_file_location("mi_utils_under_test", task_dir / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)

    def dataset(rows):  # as lmms-eval loads a task: datasets' json builder over <task_name>/test.jsonl
        folder = tmp_path / "multiinstruct" / rows[0]["task_name"]
        folder.mkdir(exist_ok=True)
        (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return datasets.load_dataset("json", data_files=str(folder / "test.jsonl"), split="train")

    cvqa = {
        "unique_id": "c0",
        "task_name": "commonsense_VQA",
        "image_path": "x.png",
        "question": "Who ?",
        "options": ["a .", "b .", "c ."],
        "target_txt": "a .",
        "meta_data": {"object_regions": {"person 1": [1.5, 2, 20, 30]}},
    }
    docs = list(
        utils.expand_instructions(
            dataset([cvqa, {**cvqa, 'unique_id': 'c1', 'meta_data': {'object_regions': {'person 2': [1, 1, 2, 2]}}}])
        )
    )
    assert len(docs) == 10 and [d["instruction_id"] for d in docs][:5] == list(range(5))
    with_info = [d["prompt"] for d in docs if "person 1 is in 1.5 2 20 30." in d["prompt"]]
    assert len(with_info) == 2  # the two commonsense_VQA seeds with {region_info}
    assert len({d["prompt"].split("[Options]: ")[1].split("\n")[0] for d in docs[:5]}) == 1
    dial = [
        {
            "unique_id": f"v{i}",
            "task_name": "visual_dialog",
            "image_path": "x.png",
            "question": "is it red",
            "target_txt": "yes",
            "meta_data": {"dialog_hist": [{"q": "a cat?", "a": "no"}] if i else []},
        }
        for i in range(2)
    ]
    docs = list(utils.expand_instructions(dataset(dial)))
    assert sum("a cat?, no;" in d["prompt"] for d in docs) >= 3 and all("{" not in d["prompt"] for d in docs)
    gvqa = {
        "unique_id": "g0",
        "task_name": "grounded_VQA",
        "image_path": "x.png",
        "question": "Which?",
        "region": [[0, 0, 31, 31]],
        "options": [[0, 0, 31, 31], [1, 1, 5, 5]],
        "target_txt": "0 0 31 31",
    }
    docs = list(utils.expand_instructions(dataset([gvqa])))
    assert all(d["target_txt"] == "0 0 31 31" and "1 1 5 5" in d["prompt"] for d in docs)


def test_official_tsv_files_as_pandas_writes_them(tmp_path):
    """raw_instructions.tsv (save_raw_instruction) and gen_instructions.tsv (after filter_instructions), written
    with pandas' to_csv(sep='\\t') as the official code does: quoted fields with line breaks and quotes."""
    import pandas as pd

    seeds = load_seeds(OFFICIAL)
    raw = tmp_path / "raw_instructions.tsv"
    pd.DataFrame([{"task_name": s.task, "instructions": s.text} for s in seeds]).to_csv(raw, index=False, sep="\t")
    assert [(s.task, s.text) for s in load_seeds(raw)] == [(s.task, s.text) for s in seeds]
    vqa = [s for s in seeds if s.task == "VQA_color"]
    rows = [{"task_name": s.task, "instructions": s.text, "origin": -1, "length": len(s.text.split())} for s in vqa]
    rows += [
        {
            "task_name": "VQA_color",
            "instructions": f'Say "which" {k}: {{question}}{{options_token}} {{split_token.join(options)}}',
            "origin": k,
            "length": 5,
        }
        for k in range(3)
    ]
    gen = tmp_path / "gen_instructions.tsv"
    frame = pd.DataFrame(rows)
    frame["is_preserved"] = [True] * len(vqa) + [True, False, True]
    frame.to_csv(gen, index=False, sep="\t")
    pool = build.pool_from_official_tsv(gen)
    assert Counter(r["origin"] for r in pool) == {"seed": len(vqa), "generated": 2}
    assert [s.text for s in load_seeds(gen)] == [s.text for s in vqa]  # as a seed file: the origin == -1 rows
    out = build.build_dataset(_instances(tmp_path, 30), gen, tmp_path / "set", variant="official_tsv")
    assert json.loads(out["manifest"].read_text())["n_rows"] == 30


def test_collect_multiinstruct_files_checks_every_instance(tmp_path):
    from instraug.multiinstruct import InstanceError, collect

    src = tmp_path / "training_data_1K"
    for task in ("VQA_color", "GC", "image_generation"):
        (src / task).mkdir(parents=True)
        (src / task / "train.jsonl").write_text("".join(json.dumps(raw_instance(task, i)) + "\n" for i in range(3)))
    counts = collect(src, tmp_path / "out" / "train.jsonl")
    assert counts == {"instances": 6, "per_task": {"GC": 3, "VQA_color": 3}, "dropped": {"image_generation": 3}}
    assert len((tmp_path / "out" / "train.jsonl").read_text().splitlines()) == 6
    bad = raw_instance("visual_dialog")
    del bad["meta_data"]["dialog_hist"]
    (src / "GC" / "train.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(InstanceError, match=r"GC/train.jsonl:1: .*meta_data.dialog_hist is missing"):
        collect(src, tmp_path / "out" / "train.jsonl")
