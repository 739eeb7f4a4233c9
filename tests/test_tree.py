"""Tests of trajectory trees. The row builder and fake embedder here are shared by the pair, MCTS and trainer tests."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from trainers.data.schema import make_trajectory
from trainers.tree import TrajectoryForest, TrajectoryTree, build_forest, parse_steps, render_tree, trajectory_outcome


def trajectory(task_id, steps, score, *, id="", system="You are a science agent.", final_observation=None):
    """steps: list of (observation, thought, action); the first observation is the instruction."""
    messages = [{"role": "system", "content": system}] if system else []
    for observation, thought, action in steps:
        messages.append({"role": "user", "content": observation})
        content = f"Thought: {thought}\nAction: {action}" if thought else f"Action: {action}"
        messages.append({"role": "assistant", "content": content})
    if final_observation is not None:
        messages.append({"role": "user", "content": final_observation})
    rewards = [0.0] * (len(steps) - 1) + [score]
    return make_trajectory(messages, rewards, id=id, task_id=task_id, source="weak", metadata={"score": score})


class FakeEmbedder:
    """Vectors from a table; any other string gets its own orthogonal direction. Counts calls."""

    def __init__(self, table=None, dim=64):
        self.table = {k: np.asarray(v, dtype=np.float32) for k, v in (table or {}).items()}
        self.dim = dim
        self.calls = []
        self._next = 16  # directions below 16 are reserved for the table's hand-made vectors

    def _vector(self, text):
        if text in self.table:
            vector = np.zeros(self.dim, dtype=np.float32)
            vector[: len(self.table[text])] = self.table[text]
            return vector
        vector = np.zeros(self.dim, dtype=np.float32)
        vector[self._next % self.dim] = 1.0
        self._next += 1
        return vector

    def encode(self, texts, show_progress_bar=False):
        self.calls.append(list(texts))
        return np.stack([self._vector(t) for t in texts])


def cosine_pair(cos):
    """Two unit 2-d vectors with the given cosine."""
    return [1.0, 0.0], [cos, float(np.sqrt(max(0.0, 1 - cos * cos)))]


# ----------------------------------------------------------------------------------------- tests
INSTR = "Your task is to boil water."


def _build(rows, table=None, threshold=0.9, on="observation"):
    embedder = FakeEmbedder(table)
    return build_forest(
        rows, embedder=embedder, similarity_threshold=threshold, similarity_on=on, show_progress=False
    ), embedder


def test_parse_steps_splits_thought_and_action():
    row = trajectory("t", [(INSTR, "I should look.", "look around"), ("You see a stove.", "", "go to kitchen")], 1.0)
    system, instruction, steps = parse_steps(row["messages"])
    assert system == "You are a science agent."
    assert instruction == INSTR
    assert [(s.observation, s.thought, s.action) for s in steps] == [
        (INSTR, "I should look.", "look around"),
        ("You see a stove.", "", "go to kitchen"),
    ]
    assert steps[0].content == "Thought: I should look.\nAction: look around"


def test_exact_merge_counts_and_outcomes():
    rows = [
        trajectory("t", [(INSTR, "look", "look around"), ("kitchen here", "heat", "heat water")], 1.0, id="a"),
        trajectory("t", [(INSTR, "look", "look around"), ("kitchen here", "open", "open door")], 0.0, id="b"),
        trajectory("t", [(INSTR, "look", "look around"), ("kitchen here", "heat", "heat water")], 0.5, id="c"),
    ]
    forest, _ = _build(rows)
    tree = forest["t"]
    assert len(tree) == 4  # root, look, heat, open
    root = tree.root
    assert root.visits == 3 and math.isclose(root.total_outcome, 1.5) and math.isclose(root.mean_outcome, 0.5)
    (look,) = tree.children(0)
    assert look.action == "look around" and look.visits == 3 and look.trajectory_ids == ["a", "b", "c"]
    heat, open_ = tree.children(look.node_id)
    assert (heat.action, heat.visits, heat.trajectory_ids) == ("heat water", 2, ["a", "c"])
    assert math.isclose(heat.mean_outcome, 0.75) and math.isclose(open_.mean_outcome, 0.0)
    assert heat.state_group == open_.state_group  # same observation, different action
    assert tree.summary()["leaves"] == 2 and tree.depth == 2


def test_similar_observation_merges_different_does_not():
    a, b = cosine_pair(0.95)
    table = {"You see a red stove.": a, "You see the red stove.": b}
    rows = [
        trajectory("t", [(INSTR, "", "look around"), ("You see a red stove.", "", "heat water")], 1.0, id="a"),
        trajectory("t", [(INSTR, "", "look around"), ("You see the red stove.", "", "heat water")], 0.0, id="b"),
        trajectory("t", [(INSTR, "", "look around"), ("Totally different room.", "", "heat water")], 0.0, id="c"),
    ]
    forest, _ = _build(rows, table)
    tree = forest["t"]
    look = tree.children(0)[0]
    children = tree.children(look.node_id)
    assert len(children) == 2
    merged = children[0]
    assert merged.observation == "You see a red stove." and merged.trajectory_ids == ["a", "b"]
    assert children[1].trajectory_ids == ["c"]
    assert children[0].state_group != children[1].state_group  # different states: never paired


def test_different_action_never_merges_even_with_identical_observation():
    rows = [
        trajectory("t", [(INSTR, "same thought", "look around")], 1.0, id="a"),
        trajectory("t", [(INSTR, "same thought", "look  around")], 0.0, id="b"),  # one extra space
    ]
    forest, _ = _build(rows)
    assert len(forest["t"].children(0)) == 2


@pytest.mark.parametrize(
    "cos,threshold,merged", [(0.9, 0.9, True), (0.899, 0.9, False), (0.9, 0.95, False), (0.96, 0.95, True)]
)
def test_threshold_edge(cos, threshold, merged):
    a, b = cosine_pair(cos)
    table = {"obs one": a, "obs two": b}
    rows = [
        trajectory("t", [(INSTR, "", "look"), ("obs one", "", "take")], 1.0, id="a"),
        trajectory("t", [(INSTR, "", "look"), ("obs two", "", "take")], 0.0, id="b"),
    ]
    forest, _ = _build(rows, table, threshold=threshold)
    look = forest["t"].children(0)[0]
    assert len(look.children) == (1 if merged else 2)


def test_similarity_on_observation_plus_thought():
    # identical observations, unrelated thoughts: merged on "observation", split on "observation+thought"
    rows = [
        trajectory("t", [(INSTR, "boil it", "look")], 1.0, id="a"),
        trajectory("t", [(INSTR, "something unrelated", "look")], 0.0, id="b"),
    ]
    obs_forest, _ = _build(rows, on="observation")
    both_forest, _ = _build(rows, on="observation+thought")
    assert len(obs_forest["t"].children(0)) == 1
    assert len(both_forest["t"].children(0)) == 2


def test_one_batched_embedding_pass_over_unique_strings():
    rows = [
        trajectory(
            f"task{k}",
            [(f"instr {k}", "", "look"), ("same room", "", "take"), (f"room {i}", "", "go")],
            float(i % 2),
            id=f"{k}-{i}",
        )
        for k in range(3)
        for i in range(4)
    ]
    forest, embedder = _build(rows)
    assert len(embedder.calls) == 1
    texts = embedder.calls[0]
    assert len(texts) == len(set(texts))
    assert set(texts) == {"instr 0", "instr 1", "instr 2", "same room", "room 0", "room 1", "room 2", "room 3"}
    assert len(forest) == 3 and forest.num_trajectories == 12
    assert forest.build_stats["embedded_strings"] == 8


def test_outcome_from_metadata_or_rewards_and_errors():
    row = trajectory("t", [(INSTR, "", "look")], 0.25)
    assert trajectory_outcome(row) == 0.25  # "score" in [0, 1]
    row["metadata"] = json.dumps({"final_score": 0.5, "normalized_score": 0.9, "score": 0.1})
    assert trajectory_outcome(row) == 0.5  # what exploration writes comes first
    row["metadata"] = json.dumps({"normalized_score": 0.9, "score": 90})
    assert trajectory_outcome(row) == 0.9  # ScienceWorld: raw 0-100 score skipped
    row["metadata"] = json.dumps({"score": 90})
    row["rewards"] = [0.75]
    assert trajectory_outcome(row) == 0.75  # out-of-range score: fall back to the rewards
    row["id"] = "bad"
    row["metadata"] = json.dumps({"final_score": "nan"})
    with pytest.raises(ValueError, match=r"row 3 \(id='bad'\), field 'metadata.final_score'"):
        trajectory_outcome(row, index=3)


def test_wrong_task_and_bad_rows_are_named():
    tree = TrajectoryTree("t", similarity_threshold=0.9)
    with pytest.raises(ValueError, match="does not belong in the tree of task 't'"):
        tree.add_trajectory(trajectory("other", [(INSTR, "", "look")], 1.0, id="x"), FakeEmbedder())
    bad = trajectory("t", [(INSTR, "", "look")], 1.0, id="y")
    bad["rewards"] = [1.0, 2.0]
    with pytest.raises(ValueError, match="rewards length mismatch"):
        build_forest([bad], embedder=FakeEmbedder(), show_progress=False)


def test_add_trajectory_incrementally_matches_build_forest():
    rows = [
        trajectory("t", [(INSTR, "", "look"), ("a room", "", "take")], 1.0, id="a"),
        trajectory("t", [(INSTR, "", "look"), ("a room", "", "drop")], 0.0, id="b"),
    ]
    tree = TrajectoryTree("t")
    embedder = FakeEmbedder()
    for row in rows:
        tree.add_trajectory(row, embedder)
    forest, _ = _build(rows)
    assert tree.to_rows() == forest["t"].to_rows()


def test_save_load_roundtrip(tmp_path):
    rows = [
        trajectory("t1", [(INSTR, "look first", "look"), ("a room", "", "take")], 1.0, id="a"),
        trajectory("t1", [(INSTR, "look first", "look"), ("a room", "", "drop")], 0.0, id="b"),
        trajectory("t2", [("other task", "", "go north")], 0.5, id="c"),
    ]
    forest, _ = _build(rows, threshold=0.85)
    target = tmp_path / "trees"
    forest.save_to_disk(target)
    assert (target / "README.md").read_text().count("Trajectory trees") >= 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folders left
    loaded = TrajectoryForest.load_from_disk(target)
    assert loaded.similarity_threshold == 0.85
    assert sorted(loaded.trees) == ["t1", "t2"]
    for task_id in forest.trees:
        assert loaded[task_id].to_rows() == forest[task_id].to_rows()
    # the loaded tree keeps merging like the original one
    more = trajectory("t1", [(INSTR, "look first", "look"), ("a room", "", "take")], 0.0, id="d")
    loaded["t1"].add_trajectory(more, FakeEmbedder())
    assert len(loaded["t1"]) == len(forest["t1"]) and loaded["t1"].nodes[2].visits == 2


def test_load_from_wrong_folder_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved trajectory forest"):
        TrajectoryForest.load_from_disk(tmp_path)


def test_render_png(tmp_path):
    rows = [trajectory("t", [(INSTR, "", "look"), ("room", "", f"act {i}")], i / 3, id=str(i)) for i in range(4)]
    forest, _ = _build(rows)
    path = render_tree(forest["t"], tmp_path / "tree.png", highlight=[1, 2])
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


@pytest.mark.slow
def test_real_minilm_merges_paraphrases_only():
    from trainers.embeddings import EmbeddingCache

    rows = [
        trajectory(
            "t",
            [
                (INSTR, "", "look around"),
                ("This room is called the kitchen. In it, you see: a stove, a sink, a fridge.", "", "open fridge"),
            ],
            1.0,
            id="a",
        ),
        trajectory(
            "t",
            [
                (INSTR, "", "look around"),
                ("This room is called the kitchen. In it, you see: a stove, a sink and a fridge.", "", "open fridge"),
            ],
            0.0,
            id="b",
        ),
        trajectory(
            "t",
            [(INSTR, "", "look around"), ("You are in a greenhouse full of flower pots and seeds.", "", "open fridge")],
            0.0,
            id="c",
        ),
    ]
    forest = build_forest(rows, embedder=EmbeddingCache(), similarity_on="observation", show_progress=False)
    look = forest["t"].children(0)[0]
    ids = [child.trajectory_ids for child in forest["t"].children(look.node_id)]
    assert ids == [["a", "b"], ["c"]]
