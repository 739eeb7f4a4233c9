"""Divergence-point preference pairs on hand-built trees with known answers."""

import pytest
from test_tree import FakeEmbedder, trajectory

from trainers.tree import NoPreferencePairsError, build_forest, mine_pairs

SYS = "You are a science agent."
INSTR = "Your task is to boil water."


def _forest(rows):
    return build_forest(rows, embedder=FakeEmbedder(), similarity_on="observation", show_progress=False)


def _known_rows():
    # look -> kitchen -> heat (1.0) | look -> kitchen -> open (0.0) | look -> bedroom (0.0)
    return [
        trajectory(
            "t",
            [(INSTR, "", "look around"), ("hallway", "go", "go to kitchen"), ("kitchen", "", "heat water")],
            1.0,
            id="A",
        ),
        trajectory(
            "t",
            [(INSTR, "", "look around"), ("hallway", "go", "go to kitchen"), ("kitchen", "", "open door")],
            0.0,
            id="B",
        ),
        trajectory("t", [(INSTR, "", "look around"), ("hallway", "", "go to bedroom")], 0.0, id="C"),
    ]


def test_known_pairs_with_path_continuation():
    result = mine_pairs(_forest(_known_rows()), continuation="path")
    assert result.counts == {"t": 2}
    first, second = result.pairs
    # divergence after "look around": kitchen (mean 0.5, best path goes on to heat water) vs bedroom (0.0)
    assert first["prompt"] == [
        {"role": "system", "content": SYS},
        {"role": "user", "content": INSTR},
        {"role": "assistant", "content": "Action: look around"},
        {"role": "user", "content": "hallway"},
    ]
    assert first["chosen"] == [
        {"role": "assistant", "content": "Thought: go\nAction: go to kitchen"},
        {"role": "user", "content": "kitchen"},
        {"role": "assistant", "content": "Action: heat water"},
    ]
    assert first["rejected"] == [{"role": "assistant", "content": "Action: go to bedroom"}]
    assert (first["chosen_outcome"], first["rejected_outcome"]) == (0.5, 0.0)
    # divergence in the kitchen: heat water (1.0) vs open door (0.0)
    assert second["prompt"][-1] == {"role": "user", "content": "kitchen"}
    assert second["prompt"][-2] == {"role": "assistant", "content": "Thought: go\nAction: go to kitchen"}
    assert second["chosen"] == [{"role": "assistant", "content": "Action: heat water"}]
    assert second["rejected"] == [{"role": "assistant", "content": "Action: open door"}]


def test_rejected_path_follows_the_worst_branch():
    rows = _known_rows()
    # make bedroom better than kitchen so that the kitchen branch is rejected and its worst leaf is followed
    rows[2] = trajectory("t", [(INSTR, "", "look around"), ("hallway", "", "go to bedroom")], 0.9, id="C")
    first = mine_pairs(_forest(rows), continuation="path").pairs[0]
    assert first["chosen"] == [{"role": "assistant", "content": "Action: go to bedroom"}]
    assert [m["content"] for m in first["rejected"]] == [
        "Thought: go\nAction: go to kitchen",
        "kitchen",
        "Action: open door",
    ]


def test_step_continuation_and_margin():
    forest = _forest(_known_rows())
    steps = mine_pairs(forest, continuation="step")
    assert [p["chosen"] for p in steps.pairs] == [
        [{"role": "assistant", "content": "Thought: go\nAction: go to kitchen"}],
        [{"role": "assistant", "content": "Action: heat water"}],
    ]
    strict = mine_pairs(forest, margin=0.6)
    assert len(strict) == 1 and strict.pairs[0]["chosen"][0]["content"] == "Action: heat water"


def test_all_pairs_vs_best_vs_worst():
    rows = [trajectory("t", [(INSTR, "", f"act {i}")], score, id=str(i)) for i, score in enumerate([0.0, 0.5, 1.0])]
    forest = _forest(rows)
    assert len(mine_pairs(forest, pairing="all")) == 3
    (only,) = mine_pairs(forest, pairing="best_vs_worst").pairs
    assert only["chosen"][0]["content"] == "Action: act 2" and only["rejected"][0]["content"] == "Action: act 0"


def test_siblings_from_different_states_are_not_paired():
    rows = [
        trajectory("t", [(INSTR, "", "look"), ("a lit room", "", "take key")], 1.0, id="a"),
        trajectory("t", [(INSTR, "", "look"), ("a dark room", "", "take key")], 0.0, id="b"),
    ]
    result = mine_pairs(_forest(rows))
    assert len(result) == 0 and "no sibling outcomes differ" in result.reasons["t"]


def test_single_trajectory_and_no_divergence_give_zero_pairs_with_a_message():
    single = mine_pairs(_forest([trajectory("solo", [(INSTR, "", "look")], 1.0, id="x")]))
    assert len(single) == 0 and "single path" in single.reasons["solo"]
    with pytest.raises(NoPreferencePairsError, match="No divergence point"):
        single.to_dataset()
    tied = mine_pairs(_forest([trajectory("tie", [(INSTR, "", f"act {i}")], 0.5, id=str(i)) for i in range(2)]))
    assert tied.counts == {"tie": 0} and "margin=0.0" in tied.reasons["tie"]


def test_counts_per_task_and_dataset_format():
    rows = _known_rows() + [trajectory("u", [("other", "", f"x{i}")], float(i), id=f"u{i}") for i in range(2)]
    result = mine_pairs(_forest(rows))
    assert result.counts == {"t": 2, "u": 1}
    assert "task 'u': 1 pairs" in result.explain()
    dataset = result.to_dataset()
    assert {"prompt", "chosen", "rejected"} <= set(dataset.column_names) and len(dataset) == 3
    from trl.data_utils import is_conversational

    assert is_conversational(dataset[0])


def _rows_with_a_no_effect_branch(no_effect_score=1.0, other_score=0.5):
    # from the instruction: open door (answered "already open", then succeeds) | go to kitchen | focus on dog
    return [
        trajectory(
            "t",
            [(INSTR, "", "open door"), ("The door is already open.", "", "focus on cat")],
            no_effect_score,
            id="A",
        ),
        trajectory(
            "t", [(INSTR, "", "go to kitchen"), ("You move to the kitchen.", "", "focus on cat")], other_score, id="B"
        ),
        trajectory("t", [(INSTR, "", "focus on dog")], 0.0, id="C"),
    ]


def test_a_branch_whose_action_had_no_effect_is_never_chosen():
    forest = _forest(_rows_with_a_no_effect_branch())
    plain = mine_pairs(forest, continuation="step", pairing="best_vs_worst")
    assert [p["chosen"][0]["content"] for p in plain.pairs] == ["Action: open door"]
    filtered = mine_pairs(forest, continuation="step", pairing="best_vs_worst", no_effect_pattern="already open")
    # the next-best sibling that did something is chosen against the same worst branch
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in filtered.pairs] == [
        ("Action: go to kitchen", "Action: focus on dog")
    ]
    every = mine_pairs(forest, continuation="step", pairing="all", no_effect_pattern="already open")
    assert all(p["chosen"][0]["content"] != "Action: open door" for p in every.pairs)
    assert len(every.pairs) == 1  # open door may still be the rejected side, but here it is the best


def test_no_pair_is_left_when_only_the_no_effect_branch_did_better():
    forest = _forest(_rows_with_a_no_effect_branch(no_effect_score=1.0, other_score=0.0))
    result = mine_pairs(forest, continuation="step", pairing="best_vs_worst", no_effect_pattern="already open")
    assert len(result) == 0
    assert "had no effect" in result.reasons["t"]
