"""CHAIR object extraction by lmms-eval's ``coco_cap_chair`` rules (lmms_eval/tasks/coco_cap_chair/utils.py,
0.7.3: ``caption_to_words``; its synonym table, two-word names and the toilet-seat rule), with a registry
lemmatiser in place of NLTK WordNet. Expected object sets were derived by hand from those tables."""

from __future__ import annotations

import pytest

from lit.eval.tasks.scoring import chair_objects, chair_scores

CASES = [
    # irregular plurals
    ("Three mice sit on the desk.", {"mouse", "dining table"}),
    ("Two men and three women stand near a bus.", {"person", "bus"}),
    ("The children feed the geese at the lake.", {"person", "bird"}),
    ("A drawer full of knives and forks.", {"knife", "fork"}),
    ("Oxen pull a cart down the road.", {"cow"}),
    ("People are waiting for the buses.", {"person", "bus"}),
    ("Several sheep graze beside the calves.", {"sheep", "cow"}),
    ("Ponies and puppies play in the yard.", {"horse", "dog"}),
    ("Two kittens sleep on a sofa; kitties is no COCO word.", {"cat", "couch"}),
    ("Sandwiches and doughnuts on the plates.", {"sandwich", "donut"}),
    ("Boxes of broccoli next to the benches.", {"broccoli", "bench"}),
    ("The ladies hold umbrellas in the rain.", {"person", "umbrella"}),
    ("Skiers carry their skis up the hill.", {"person", "skis"}),
    ("Scissors lie beside two toothbrushes.", {"scissors", "toothbrush"}),
    ("Giraffes and zebras walk past the elephants.", {"giraffe", "zebra", "elephant"}),
    # two-word names (DOUBLE_WORD_DICT), plural second word
    ("Two wine glasses on a table.", {"wine glass", "dining table"}),
    ("A fire hydrant next to a stop sign.", {"fire hydrant", "stop sign"}),
    ("Traffic lights above a parking meter.", {"traffic light", "parking meter"}),
    ("Hot dogs on a grill.", {"hot dog"}),
    ("A girl hugs her teddy bears.", {"person", "teddy bear"}),
    ("A boy with a baseball bat and a baseball glove.", {"person", "baseball bat", "baseball glove"}),
    ("A tennis racket and a sports ball.", {"tennis racket", "sports ball"}),
    ("Potted plants on the windowsill.", {"potted plant"}),
    ("A hair drier on the counter.", {"hair drier"}),
    ("A man talks on his cell phone.", {"person", "cell phone"}),
    ("Mobile phones on a desk.", {"cell phone", "dining table"}),
    ("A baby dog sleeps beside a baby elephant.", {"dog", "elephant"}),
    ("A passenger jet over a passenger train.", {"airplane", "train"}),
    ("An air plane flies over the city.", {"airplane"}),
    ("A guy in a bow tie.", {"person", "tie"}),
    ("Two computer mice and a keyboard.", {"laptop", "mouse", "keyboard"}),
    ("A laptop computer on a bed.", {"laptop", "bed"}),
    # synonyms
    ("A puppy chases a kitten.", {"dog", "cat"}),
    ("A motorbike parked by a van.", {"motorcycle", "car"}),
    ("The television is on the monitor stand.", {"tv"}),
    ("Milk in the fridge next to the stove.", {"refrigerator", "oven"}),
    ("A skateboard and a surfboard lean on a wall.", {"skateboard", "surfboard"}),
    ("A purse and some luggage at the station.", {"handbag", "suitcase"}),
    ("A jet lands while a ship sails by.", {"airplane", "boat"}),
    ("A lamb and a stallion in a field.", {"sheep", "horse"}),
    ("A seagull and a duck by the water.", {"bird"}),
    ("A taxi behind a truck.", {"car", "truck"}),
    ("A kid throws a frisbee to a dog.", {"person", "frisbee", "dog"}),
    ("A smartphone on a couch.", {"cell phone", "couch"}),
    # the toilet-seat rule, and "seat" alone is a chair
    ("A toilet seat in a small bathroom.", {"toilet"}),
    ("The seat of the toilet is up.", {"toilet"}),
    ("A bus with an empty seat.", {"bus", "chair"}),
    # negations are not parsed (as in lmms-eval): a negated object is still mentioned
    ("There is no dog in the picture.", {"dog"}),
    ("The kitchen has no microwave and no oven.", {"microwave", "oven"}),
    ("Not a single car is on the road.", {"car"}),
    ("I don't see any cats.", {"cat"}),
    # words near object names that are no objects, punctuation between words
    ("The sky is blue and the grass is green.", set()),
    ("A hot, dog-friendly day.", set()),
    ("A glass of wine and a bottle.", {"bottle"}),
    ("Train tracks run beside a home plate.", set()),
    ("A cake, a pizza, and an apple.", {"cake", "pizza", "apple"}),
    ("An orange cat on a chair.", {"orange", "cat", "chair"}),
    ("Bananas, carrots and a bowl of apples.", {"banana", "carrot", "bowl", "apple"}),
]


def test_at_least_fifty_hand_checked_captions():
    assert len(CASES) >= 50


@pytest.mark.parametrize("caption,expected", CASES, ids=[c for c, _ in CASES])
def test_objects_follow_lmms_eval_coco_cap_chair(caption, expected):
    assert set(chair_objects(caption)) == expected


def test_each_mention_counts_for_chair_i():
    assert chair_objects("A dog and another dog near a cat.") == ["dog", "dog", "cat"]
    rows = [
        {"mentioned": chair_objects("Two mice and a cat."), "truth": ["mouse"]},
        {"mentioned": chair_objects("Three wine glasses."), "truth": ["wine glass", "person"]},
    ]
    s = chair_scores(rows)
    assert s == pytest.approx({"chair_s": 50.0, "chair_i": 100 / 3, "recall": 200 / 3})
