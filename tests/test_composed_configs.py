"""Every composed training config is key for key what ``tests/fixtures/composed_configs.json`` recorded before the
``schedule`` group existed, apart from the deliberate changes listed here.

The fixture (``scripts/snapshot_configs.py``) holds ``model=<m>`` for every model option, ``experiment=<e>``
for every experiment, and every recipe job (overrides, dependencies, resources, and the composed config of its
``train`` / ``mins_plus`` job), unresolved. A git-ignored ``conf/local/default.yaml`` changes what composes,
so the comparison assumes there is none. After a further deliberate change: rerun the script, review the diff of the
fixture, and empty the lists below (they map the recorded configs onto today's).
"""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import snapshot_configs  # noqa: E402  (lives in scripts/, found through the path set above)

FIXTURE = json.loads(snapshot_configs.FIXTURE.read_text())

# Deliberate changes, each applied to the recorded config before the comparison:
# 1. the schedule's root knobs moved into the schedule group: <key> -> schedule.<key>.
MOVED_TO_SCHEDULE = ("stage", "resume", "global_batch_size", "group_by_modality_length")
# 2. the label cache's root knobs moved into the data group (conf/data/default.yaml): <key> -> data.<key>.
MOVED_TO_DATA = ("label_cache_dir", "label_workers")
# 3. renamed within their node: the mined template sentences (the chat format is model.chat_template).
RENAMED = {"loss.templates": "loss.template_sentences"}
# 4. the schedule group is a new choice; the model (or demo experiment) names it, else `default`.
SCHEDULE_OF_MODEL = {
    "llava7b": "llava15_sft",
    "llava13b": "llava15_sft",
    "llava7b_stage1": "llava15_pretrain",
    "llava13b_stage1": "llava15_pretrain",
    "llava_next7b": "llava_next_sft",
    "llava_next7b_stage1": "llava_next_pretrain",
    "tinyllava05b": "tinyllava_sft",
    "tinyllava05b_stage1": "tinyllava_pretrain",
    "tinyllava3b": "tinyllava_fp16_sft",
    "tinyllava3b_stage1": "tinyllava_fp16_pretrain",
    "instructblip7b": "lavis_instructblip",
    "tiny": "default",
    "tiny_iblip": "default",
    "tiny_next": "default",
}
# 5. the demo's schedule moved from the experiment option demo/schedule to the schedule option demo.
REMOVED_EXPERIMENTS = ("demo/schedule",)
# 3. model families added since (lit/model/families/), composed on their own in tests/model/test_qwen2_vl.py.
ADDED_MODELS = (
    "auto",
    "tiny_qwen2_vl",
    "tiny_qwen2_5_vl",
    "tiny_idefics3",
    "tiny_smolvlm",
    "tiny_llava_onevision",
    "tiny_qwen3_vl",
    "tiny_internvl",
)
# 6. settings added since, with the value every recorded config now composes with (off: the recorded behaviour).
ADDED_TO_TRAIN = {"padding_free": False}  # train.padding_free (docs/training.md, "Padding-free training")
# 7. every loss scope composes conf/loss/default.yaml: weighted spans (off) and the template-sentence settings that
#    only `lit` had (used by any scope that weighs template sentences apart, docs/training.md "Weighted spans").
ADDED_TO_LOSS = {"weights": None, "normalization": "tokens"}
# 8. the site says its GPUs' memory, for the preflight (lit/preflight.py; null: not checked), the margin on a
#    training job's planned time and the warning signal before its limit (lit/slurm.py, docs/cluster.md).
ADDED_TO_SITE = {"gpu_mem_gb": None, "time_margin": 1.25, "signal_s": 600}
TEMPLATE_SENTENCES_DEFAULT = {"file": None, "min_share": 0.05, "min_count": 2, "top_k": None}
DEMO_EXPERIMENTS = ("demo_lit", "demo_lit_all", "demo_lit_nosys", "demo_mins_plus", "demo_vit")


def expected(recorded: dict) -> dict:
    """The recorded config with the deliberate changes applied."""
    cfg = json.loads(json.dumps(recorded))
    cfg["schedule"] = {key: cfg.pop(key) for key in MOVED_TO_SCHEDULE}
    cfg["data"].update({key: cfg.pop(key) for key in MOVED_TO_DATA})
    cfg["train"].update(ADDED_TO_TRAIN)
    cfg["loss"].update(ADDED_TO_LOSS)
    if "site" in cfg:
        cfg["site"].update(ADDED_TO_SITE)
    for old, new in RENAMED.items():
        *parent, key = old.split(".")
        node = cfg
        for part in parent:
            node = node[part]
        if key in node:
            node[new.rsplit(".", 1)[-1]] = node.pop(key)
    cfg["loss"].setdefault("template_sentences", dict(TEMPLATE_SENTENCES_DEFAULT))
    choices = cfg["hydra"]["choices"]
    experiment = choices.get("experiment")
    choices["schedule"] = "demo" if experiment in DEMO_EXPERIMENTS else SCHEDULE_OF_MODEL[choices["model"]]
    return cfg


def differences(want, got, path: str = "") -> list[str]:
    if isinstance(want, dict) and isinstance(got, dict):
        key = (lambda k: f"{path}.{k}") if path else str
        out = [f"{key(k)}: missing" for k in want if k not in got]
        out += [f"{key(k)}: new ({got[k]!r})" for k in got if k not in want]
        for k in want.keys() & got.keys():
            out += differences(want[k], got[k], key(k))
        return out
    # a type change (1 vs 1.0, a list vs a dict) counts: json keeps int and float apart
    return [] if want == got and type(want) is type(got) else [f"{path}: {want!r} -> {got!r}"]


def _check(recorded: dict, overrides: list[str]) -> None:
    diff = differences(expected(recorded), snapshot_configs.compose(overrides))
    assert not diff, "\n".join(diff[:20])


@pytest.mark.parametrize("model", sorted(FIXTURE["model"]))
def test_every_model_composes_as_recorded(model):
    _check(FIXTURE["model"][model], [f"model={model}"])


@pytest.mark.parametrize("experiment", sorted(set(FIXTURE["experiment"]) - set(REMOVED_EXPERIMENTS)))
def test_every_experiment_composes_as_recorded(experiment):
    _check(FIXTURE["experiment"][experiment], [f"experiment={experiment}"])


def test_the_experiments_are_those_recorded_less_the_removed():
    assert snapshot_configs.options("experiment") == sorted(set(FIXTURE["experiment"]) - set(REMOVED_EXPERIMENTS))
    assert snapshot_configs.options("model") == sorted([*FIXTURE["model"], *ADDED_MODELS])


@pytest.mark.parametrize("recipe", sorted(FIXTURE["recipe"]))
def test_every_recipe_job_composes_as_recorded(recipe):
    from lit import recipes

    got = recipes.jobs(recipes.load(recipe), snapshot_configs.OUTPUT_ROOT)
    want = FIXTURE["recipe"][recipe]
    assert [j.id for j in got] == [j["id"] for j in want]
    for job, rec in zip(got, want):
        assert (job.kind, job.overrides, job.after, job.resources) == (
            rec["kind"],
            rec["overrides"],
            rec["after"],
            rec["resources"],
        ), job.id
        if "config" in rec:
            _check(rec["config"], job.overrides)


def test_the_comparison_sees_a_changed_value():
    recorded = FIXTURE["model"]["llava7b"]
    changed = json.loads(json.dumps(expected(recorded)))
    changed["train"]["learning_rate"] = 1.0
    assert differences(expected(recorded), changed) == ["train.learning_rate: 2e-05 -> 1.0"]
    assert differences({"a": 1}, {"a": 1.0}) and differences({"a": 1}, {"b": 1})


@pytest.mark.parametrize("recipe", sorted(FIXTURE["recipe_table"]))
def test_every_recipe_table_is_as_recorded(recipe):
    from lit import recipes

    assert recipes.load(recipe).get("table") == FIXTURE["recipe_table"][recipe]


def test_a_model_names_its_schedule_and_the_command_line_picks_another():
    assert snapshot_configs.compose(["model=llava13b"])["hydra"]["choices"]["schedule"] == "llava15_sft"
    cfg = snapshot_configs.compose(["model=llava13b", "schedule=llava15_pretrain"])
    assert cfg["hydra"]["choices"]["schedule"] == "llava15_pretrain" and cfg["schedule"]["stage"] == "pretrain"
    assert cfg["model"]["name"] == "llava13b" and cfg["train"]["learning_rate"] == 1e-3
