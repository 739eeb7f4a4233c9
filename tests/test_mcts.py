"""Offline MCTS over static trees: UCB, selection order, backup, best path."""

import math

import pytest
from test_tree import FakeEmbedder, trajectory

from trainers.data.schema import validate_trajectories
from trainers.tree import best_path_rows, build_forest, mcts_search, ranked_paths, run_mcts, select_child, ucb

INSTR = "Your task is to boil water."


def _tree(rows):
    return build_forest(rows, embedder=FakeEmbedder(), similarity_on="observation", show_progress=False)[
        rows[0]["task_id"]
    ]


def test_ucb_formula():
    assert ucb(0.0, 0, 10, 1.41) == math.inf
    assert math.isclose(ucb(3.0, 4, 10, 1.41), 0.75 + 1.41 * math.sqrt(math.log(10) / 4))
    assert ucb(2.0, 4, 10, 0.0) == 0.5


def test_selection_order_unvisited_first_then_ucb_and_backup():
    rows = [
        trajectory("t", [(INSTR, "", name)], score, id=name) for name, score in [("a", 1.0), ("b", 0.0), ("c", 0.5)]
    ]
    tree = _tree(rows)
    a, b, c = tree.nodes[0].children
    order, previous = [], [0] * len(tree.nodes)
    for iterations in range(1, 5):  # the search is deterministic: k iterations extend k - 1
        visits = mcts_search(tree, iterations=iterations).visits
        order += [child for child in (a, b, c) if visits[child] > previous[child]]
        previous = visits
    assert order == [a, b, c, a]  # unvisited in order, then the best UCB (equal bonus, highest mean)
    result = mcts_search(tree, iterations=4)
    assert result.visits[0] == 4 and [result.visits[n] for n in (a, b, c)] == [2, 1, 1]
    assert math.isclose(result.value_sums[0], 1.0 + 0.0 + 0.5 + 1.0)
    assert math.isclose(result.value_sums[a], 2.0) and math.isclose(result.value_sums[c], 0.5)


def test_select_child_prefers_higher_ucb_for_rarely_visited():
    rows = [trajectory("t", [(INSTR, "", name)], score, id=name) for name, score in [("a", 0.6), ("b", 0.5)]]
    tree = _tree(rows)
    a, b = tree.nodes[0].children
    value_sums = [0.0] * len(tree.nodes)
    visits = [0] * len(tree.nodes)
    visits[0], visits[a], visits[b] = 101, 100, 1
    value_sums[a], value_sums[b] = 60.0, 0.5
    # b: 0.5 + 1.41*sqrt(ln 101 / 1) beats a: 0.6 + 1.41*sqrt(ln 101 / 100)
    assert select_child(tree, 0, value_sums, visits, 1.41) == b
    assert select_child(tree, 0, value_sums, visits, 0.0) == a


def test_mcts_finds_the_branch_whose_best_leaf_wins():
    # X has mean 0.25 empirically (one success, three failures) but its success leaf beats Y's 0.6.
    rows = [trajectory("t", [(INSTR, "", "X"), ("room", "", "win")], 1.0, id="x1")]
    rows += [trajectory("t", [(INSTR, "", "X"), ("room", "", f"lose {i}")], 0.0, id=f"x{i + 2}") for i in range(3)]
    rows += [trajectory("t", [(INSTR, "", "Y"), ("hall", "", "ok")], 0.6, id="y")]
    tree = _tree(rows)
    x = next(n for n in tree.children(0) if n.action == "X")
    assert math.isclose(x.mean_outcome, 0.25)
    result = mcts_search(tree, iterations=1000, exploration_constant=1.41)
    assert [tree.nodes[n].action for n in result.path] == ["X", "win"]
    assert result.value == 1.0 and result.mean(x.node_id) > 0.6
    assert sum(result.visits[n] for n in tree.nodes[0].children) == 1000


def test_best_path_rows_are_schema_rows_for_sft():
    rows = [
        trajectory("t", [(INSTR, "think", "look"), ("kitchen", "", "heat water")], 1.0, id="a"),
        trajectory("t", [(INSTR, "think", "look"), ("kitchen", "", "open door")], 0.0, id="b"),
        trajectory("fail", [("other task", "", "go")], 0.0, id="c"),
    ]
    forest = build_forest(rows, embedder=FakeEmbedder(), show_progress=False)
    results = run_mcts(forest, iterations=50, show_progress=False)
    kept = best_path_rows(results)
    assert [r["task_id"] for r in kept] == ["t"]  # the all-failure task has nothing to teach
    assert validate_trajectories(kept) == 1
    assert [m["content"] for m in kept[0]["messages"]] == [
        "You are a science agent.",
        INSTR,
        "Thought: think\nAction: look",
        "kitchen",
        "Action: heat water",
    ]
    assert kept[0]["rewards"] == [0.0, 1.0] and kept[0]["source"] == "mcts" and kept[0]["success"]
    assert len(best_path_rows(results, min_path_value=None)) == 2

    # a best path that ends at partial credit is kept for SFT but not labelled a success
    partial = [
        trajectory("p", [(INSTR, "", "look"), ("kitchen", "", "heat water")], 0.5, id="d"),
        trajectory("p", [(INSTR, "", "look"), ("kitchen", "", "open door")], 0.25, id="e"),
    ]
    partial_results = run_mcts(build_forest(partial, embedder=FakeEmbedder(), show_progress=False), iterations=50)
    (row,) = best_path_rows(partial_results)
    assert row["rewards"][-1] == 0.5 and not row["success"]


def test_bad_arguments():
    tree = _tree([trajectory("t", [(INSTR, "", "a")], 1.0)])
    with pytest.raises(ValueError, match="iterations"):
        mcts_search(tree, iterations=0)
    with pytest.raises(ValueError, match="exploration_constant"):
        mcts_search(tree, exploration_constant=-1)


def _three_leaf_tree():
    rows = [trajectory("t", [(INSTR, "", "X"), ("room", "", "win")], 1.0, id="x1")]
    rows += [trajectory("t", [(INSTR, "", "X"), ("room", "", "lose")], 0.0, id="x2")]
    rows += [trajectory("t", [(INSTR, "", "Y"), ("hall", "", "ok")], 0.6, id="y")]
    rows += [trajectory("t", [(INSTR, "", "Z"), ("yard", "", "meh")], 0.2, id="z")]
    return _tree(rows)


def test_ranked_paths_best_first_then_leaves_by_outcome():
    tree = _three_leaf_tree()
    result = mcts_search(tree, iterations=200)
    actions = [[tree.nodes[n].action for n in path] for path in ranked_paths(result, 3)]
    assert actions == [["X", "win"], ["Y", "ok"], ["Z", "meh"]]
    assert len(ranked_paths(result, 10)) == 4  # every leaf once, no more
    assert ranked_paths(result, 1) == [result.path]
    with pytest.raises(ValueError, match="k must be"):
        ranked_paths(result, 0)


def test_min_path_value_filters_paths_and_paths_per_task_adds_them():
    result = mcts_search(_three_leaf_tree(), iterations=200)
    scores = lambda rows: [r["rewards"][-1] for r in rows]  # noqa: E731
    assert scores(best_path_rows([result], paths_per_task=4)) == [1.0, 0.6, 0.2]  # the 0-value path is out
    assert scores(best_path_rows([result], paths_per_task=4, min_path_value=0.5)) == [1.0, 0.6]
    assert scores(best_path_rows([result], paths_per_task=4, min_path_value=None)) == [1.0, 0.6, 0.2, 0.0]
    assert scores(best_path_rows([result], min_path_value=0.99)) == [1.0]
    assert best_path_rows([result], min_path_value=1.0) == []
    rows = best_path_rows([result], paths_per_task=2)
    assert [r["id"] for r in rows] == ["mcts-t", "mcts-t-1"] and validate_trajectories(rows) == 2
