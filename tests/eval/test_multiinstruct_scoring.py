"""How the lit_multiinstruct tasks score, as InstrAug's LAVIS evaluation does.

Upstream (declare-lab/InstrAug, commit 15242ef):
- ``IBLIP/lavis/projects/iblip/eval/{dc,gvqa,nlvr,visnli,vsr}_eval.yaml`` (``run.task: instrcls``) and
  ``commonsensevqa_eval.yaml``; ``IBLIP/lavis/tasks/instrcls.py`` lines 62-77 (``valid_step``: only
  ``model.predict_class(samples, candidates=options)``, the top-ranked option is the prediction) and 93-102
  (accuracy: prediction and target, both stripped, equal); ``IBLIP/lavis/tasks/commonsensevqa.py`` lines 63-83
  and 104-111 (the ranked option is the accuracy's prediction).
- ``IBLIP/lavis/models/blip2_models/blip2_vicuna_instruct.py`` lines 648-806 (``_predict_class``: each candidate
  appended to the prompt, its tokens the only targets, the loss per candidate taken with ``reduction="none"``,
  candidates ranked by ``argsort`` of the loss) with ``IBLIP/lavis/models/blip2_models/modeling_llama.py``
  lines 712-719 (``reduction="none"``: the token losses, zero at ignored positions, averaged over the whole
  padded length, which is the same for every candidate of an instance, so the ranking is that of the summed
  log-probability).
- ``IBLIP/lavis/projects/iblip/eval/{tvqa,visdial,vte}_eval.yaml`` (``num_beams: 5``, ``max_len: 30``,
  ``min_len: 5``, VTE ``min_len: 1``), ``IBLIP/lavis/tasks/tvqa.py`` lines 63-70 (``generate`` with them) and
  ``blip2_vicuna_instruct.py`` lines 242-253 (``generate``'s defaults: ``repetition_penalty=1.5``,
  ``length_penalty=1``) and 345-371 (generation from ``inputs_embeds``, so lengths and the penalty see only
  the new tokens).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_runs import ROOT

TASKS = ROOT / "lit" / "eval" / "tasks" / "lit_multiinstruct"
RANKED = ("cvqa", "dc", "gvqa", "nlvr", "ve", "vsr")
GENERATED = {"tvqa": 5, "visdial": 5, "vte": 1}  # min_len of the task's *_eval.yaml
DC_OPTIONS = ["flood", "fire", "earthquake"]


def _yaml(name: str) -> dict:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    return yaml.load((TASKS / f"lit_mi_{name}.yaml").read_text(), Loader=Loader)


def _pair(resp) -> tuple[float, bool]:
    value = ast.literal_eval(resp) if isinstance(resp, str) else resp
    return float(value[0]), bool(value[1])


def test_classification_tasks_rank_options_and_generation_tasks_use_lavis_beam_settings():
    for name in RANKED:
        cfg = _yaml(name)
        assert cfg["output_type"] == "multiple_choice" and cfg["doc_to_choice"] == "utils.doc_to_choice"
        assert cfg["process_results"] == "utils.process_results_ranked" and "generation_kwargs" not in cfg
    for name, min_len in GENERATED.items():
        cfg = _yaml(name)
        assert cfg["output_type"] == "generate_until"
        assert cfg["generation_kwargs"] == {
            "max_new_tokens": 30,
            "min_new_tokens": min_len,
            "num_beams": 5,
            "repetition_penalty": 1.5,
            "length_penalty": 1.0,
            "temperature": 0,
            "do_sample": False,
        }


def test_ranked_prediction_is_the_likeliest_option_compared_stripped():
    from importlib import import_module

    utils = import_module("lit.eval.tasks.lit_multiinstruct.utils")
    doc = {"doc_index": 0, "instruction_id": 3, "options": ["fire", "flood ", "earthquake"], "target_txt": "flood"}
    got = utils.process_results_ranked(doc, [(-4.0, False), (-1.5, True), (-2.0, False)])
    assert got["multiinstruct"] == {"instruction_id": 3, "score": 100.0, "prediction": "flood "}
    got = utils.process_results_ranked(doc, [(-4.0, False), (-3.5, False), (-2.0, False)])
    assert got["multiinstruct"]["score"] == 0.0 and got["multiinstruct"]["prediction"] == "earthquake"
    as_text = [str(r) for r in [(-4.0, False), (-1.5, True), (-2.0, False)]]  # as lmms-eval 0.7.3 hands them on
    assert utils.process_results_ranked(doc, as_text)["multiinstruct"]["prediction"] == "flood "
    with pytest.raises(ValueError, match="no options"):
        utils.doc_to_choice({**doc, "options": []})


def test_repetition_penalty_counts_generated_tokens_only():
    """Equal to transformers' CTRL penalty applied to the generated part alone; prompt tokens untouched."""
    from transformers import RepetitionPenaltyLogitsProcessor

    from lit.eval.lmms_model import NewTokenRepetitionPenalty

    torch.manual_seed(0)
    scores = torch.randn(2, 11)
    ids = torch.tensor([[3, 4, 5, 7, 7], [3, 9, 5, 1, 2]])  # prompt of 3, then 2 generated tokens
    got = NewTokenRepetitionPenalty(1.5, 3)(ids, scores.clone())
    want = RepetitionPenaltyLogitsProcessor(1.5)(ids[:, 3:], scores.clone())
    assert torch.equal(got, want)
    assert got[0, 3] == scores[0, 3] and got[0, 7] != scores[0, 7]  # prompt token 3 kept, generated 7 penalised
    assert torch.equal(NewTokenRepetitionPenalty(1.5, 5)(ids, scores.clone()), scores)


def _eval_data(root: Path) -> None:
    mi = root / "multiinstruct"
    (mi / "images").mkdir(parents=True)
    Image.new("RGB", (32, 32), (220, 40, 40)).save(mi / "images" / "red.png")
    Image.new("RGB", (32, 32), (40, 80, 220)).save(mi / "images" / "blue.png")
    instructions = {
        "medic_disaster_types": [f"Instruction {k}: which disaster is shown?{{options_str}}" for k in range(5)],
        "text_vqa": [f"Read the text. {{question}} (variant {k})" for k in range(5)],
    }
    (mi / "instructions.yaml").write_text(json.dumps(instructions))
    rows = {
        "medic_disaster_types": [
            {
                "unique_id": f"dc-{i}",
                "task_name": "medic_disaster_types",
                "image_path": f"images/{'red' if i % 2 else 'blue'}.png",
                "options": DC_OPTIONS,
                "target_txt": DC_OPTIONS[i % 3],
            }
            for i in range(6)
        ],
        "text_vqa": [
            {
                "unique_id": f"tvqa-{i}",
                "task_name": "text_vqa",
                "image_path": "images/red.png",
                "question": "What does the sign say?",
                "target_txt": "stop here",
            }
            for i in range(2)
        ],
    }
    for task, lines in rows.items():
        (mi / task).mkdir()
        (mi / task / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def _samples(out: Path, task: str) -> list[dict]:
    return [json.loads(line) for line in (out / "samples" / f"{task}.jsonl").read_text().splitlines()]


@pytest.mark.integration
def test_option_ranking_differs_from_greedy_matching_and_equals_hand_computed_log_probs(trained, tmp_path):
    from transformers import AutoModelForImageTextToText, LogitsProcessorList

    from lit.eval.evaluate import evaluate
    from lit.eval.lmms_model import LitLlava, NewTokenRepetitionPenalty
    from lit.eval.spec import EvalSpec
    from lit.eval.tasks.scoring import normalise_answer

    cfg, run_dir, _ = trained
    ckpt = run_dir / "checkpoint"
    data = tmp_path / "data"
    _eval_data(data)
    scores = evaluate(
        ckpt,
        EvalSpec(("lit_mi_dc", "lit_mi_tvqa"), str(data)),
        tmp_path / "eval",
        chat_template=cfg.model.chat_template,
    )
    docs = _samples(tmp_path / "eval", "lit_mi_dc")
    assert len(docs) == 6 * 5

    # by hand: the prompt as generation sees it, the option's tokens appended, the HF model's log-probs summed
    lit = LitLlava(str(ckpt), chat_template=cfg.model.chat_template)
    hf = AutoModelForImageTextToText.from_pretrained(ckpt, dtype=torch.float32).eval()
    images = {p: Image.open(data / "multiinstruct" / p).convert("RGB") for p in ("images/red.png", "images/blue.png")}
    ranked_right, greedy_right = [], []
    for row in docs:
        doc = row["doc"]
        inputs = lit.prompt_inputs(doc["prompt"], images[doc["image_path"]])
        n = inputs["input_ids"].shape[1]
        hand = []
        for option in doc["options"]:
            cont = torch.tensor([lit.tokenizer(" " + option, add_special_tokens=False).input_ids])
            with torch.no_grad():
                logits = hf(
                    input_ids=torch.cat([inputs["input_ids"], cont], 1),
                    pixel_values=inputs["pixel_values"],
                    attention_mask=torch.ones(1, n + cont.shape[1], dtype=torch.long),
                ).logits[0]
            hand.append(float(torch.log_softmax(logits[n - 1 : -1].float(), -1).gather(1, cont[0][:, None]).sum()))
        assert [_pair(r)[0] for r in row["filtered_resps"]] == pytest.approx(hand, abs=1e-4)
        best = doc["options"][max(range(len(hand)), key=hand.__getitem__)]
        assert row["multiinstruct"]["prediction"] == best
        ranked_right.append(best == doc["target_txt"])
        with torch.no_grad():
            out = hf.generate(**inputs, max_new_tokens=30, do_sample=False, pad_token_id=lit.tokenizer.pad_token_id)
        text = lit.tokenizer.decode(out[0, n:], skip_special_tokens=True).split("\n\n")[0].strip()
        greedy_right.append(normalise_answer(text) == normalise_answer(doc["target_txt"]))
    ranked = 100 * sum(ranked_right) / len(docs)  # every instruction has the same number of documents
    greedy = 100 * sum(greedy_right) / len(docs)
    assert scores["lit_mi_dc"]["multiinstruct/score"] == pytest.approx(ranked)
    assert ranked != greedy, (ranked, greedy)

    # generation tasks: LAVIS's beam search (5 beams, 5 to 30 new tokens, penalty on generated tokens only)
    for row in _samples(tmp_path / "eval", "lit_mi_tvqa"):
        doc = row["doc"]
        inputs = lit.prompt_inputs(doc["prompt"], images[doc["image_path"]])
        n = inputs["input_ids"].shape[1]
        with torch.no_grad():
            out = hf.generate(
                **inputs,
                num_beams=5,
                max_new_tokens=30,
                min_new_tokens=5,
                length_penalty=1.0,
                do_sample=False,
                pad_token_id=lit.tokenizer.pad_token_id,
                logits_processor=LogitsProcessorList([NewTokenRepetitionPenalty(1.5, n)]),
            )
        assert out.shape[1] - n >= 5
        text = lit.tokenizer.decode(out[0, n:], skip_special_tokens=True).split("\n\n")[0].strip()
        assert row["filtered_resps"][0] == text
