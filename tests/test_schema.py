import json
import math

import datasets
import numpy as np
import pytest

from trainers.data.schema import (
    TRAJECTORY_FEATURES,
    TrajectoryValidationError,
    make_trajectory,
    metadata_of,
    to_dataset,
    validate_row,
    validate_trajectories,
)


def _messages(n_turns=2, system=True):
    messages = [{"role": "system", "content": "rules"}] if system else []
    for i in range(n_turns):
        messages += [
            {"role": "user", "content": f"obs {i}"},
            {"role": "assistant", "content": f"Thought: t\nAction: a{i}"},
        ]
    return messages


def _row(**overrides):
    row = make_trajectory(_messages(), [0.0, 1.0], id="ep-1", task_id="t", category="Fruits", metadata={"seed": 3})
    row.update(overrides)
    return row


def test_make_trajectory_fills_every_column():
    row = _row()
    assert set(row) == set(TRAJECTORY_FEATURES)
    assert row["success"] is True and row["done"] is True and row["source"] == "real"
    assert metadata_of(row) == {"seed": 3}
    failed = make_trajectory(_messages(1), [0.0])
    assert failed["success"] is False
    assert metadata_of({"metadata": ""}) == {} and metadata_of({"metadata": {"a": 1}}) == {"a": 1}


def test_valid_rows_pass():
    assert validate_trajectories([_row(), _row(id="ep-2")]) == 2
    # an observation after the last action is fine, numpy rewards too
    messages = _messages() + [{"role": "user", "content": "final page"}]
    validate_row(_row(messages=messages, rewards=np.array([0.0, 1.0], dtype=np.float32)))
    validate_row(_row(messages=_messages(system=False)))


@pytest.mark.parametrize(
    "overrides, field, problem",
    [
        ({"messages": []}, "messages", "empty trajectory"),
        (
            {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "o"}], "rewards": []},
            "messages",
            "no assistant turn",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": "b"},
                    {"role": "assistant", "content": "c"},
                ],
                "rewards": [1.0],
            },
            "messages[1].role",
            "two user messages in a row",
        ),
        (
            {"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}], "rewards": [1.0]},
            "messages[1].role",
            "first turn after the system prompt must be a user",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "o"},
                    {"role": "assistant", "content": "a"},
                    {"role": "assistant", "content": "b"},
                ],
                "rewards": [0.0, 1.0],
            },
            "messages[2].role",
            "two assistant messages in a row",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "o"},
                    {"role": "system", "content": "s"},
                    {"role": "assistant", "content": "a"},
                ],
                "rewards": [1.0],
            },
            "messages[1].role",
            "system message may only come first",
        ),
        (
            {"messages": [{"role": "user", "content": "o"}, {"role": "tool", "content": "t"}]},
            "messages[1].role",
            "unknown role 'tool'",
        ),
        (
            {"messages": [{"role": "user", "content": "o"}, {"role": "assistant", "content": 5}]},
            "messages[1].content",
            "content must be a string",
        ),
        ({"messages": [{"role": "user"}]}, "messages[0]", "needs 'role' and 'content'"),
        ({"rewards": [1.0]}, "rewards", "rewards length mismatch: 1 rewards for 2 assistant turns"),
        ({"rewards": [0.0, 1.0, 2.0]}, "rewards", "3 rewards for 2 assistant turns"),
        ({"rewards": [0.0, float("nan")]}, "rewards[1]", "finite number"),
        ({"rewards": [float("inf"), 0.0]}, "rewards[0]", "finite number"),
        ({"rewards": [None, 0.0]}, "rewards[0]", "finite number"),
        ({"rewards": 1.0}, "rewards", "must be a list"),
        ({"rewards": None}, "rewards", "missing"),
    ],
)
def test_each_validation_error_names_row_and_field(overrides, field, problem):
    rows = [_row(id="ok"), _row(**overrides)]
    with pytest.raises(TrajectoryValidationError) as info:
        validate_trajectories(rows)
    error = info.value
    assert error.index == 1 and error.row_id == "ep-1" and error.field == field
    assert problem in str(error)
    assert str(error).startswith(f"row 1 (id='ep-1'), field '{field}'")


def test_missing_category_only_when_required():
    row = _row(category="")
    validate_row(row)
    with pytest.raises(TrajectoryValidationError, match=r"row 0 \(id='ep-1'\), field 'category': missing category"):
        validate_trajectories([row], require_category=True)


def test_to_dataset_validates_and_defaults():
    with pytest.raises(TrajectoryValidationError, match="row 1"):
        to_dataset([_row(), _row(rewards=[math.nan, 1.0])])
    minimal = [
        {"messages": _messages(1), "rewards": [2.0]},
        {"messages": _messages(1), "rewards": [0.0], "metadata": {"parent_id": "x"}},
    ]
    ds = to_dataset(minimal)
    assert ds.features["messages"] == TRAJECTORY_FEATURES["messages"]
    assert list(ds["id"]) == ["traj-0", "traj-1"] and list(ds["success"]) == [True, False]
    assert metadata_of(ds[1]) == {"parent_id": "x"}


def test_extra_columns_are_kept():
    rows = [dict(_row(), weight=None), dict(_row(id="b"), weight=0.25)]
    ds = to_dataset(rows)
    assert ds.features["weight"].dtype in ("float64", "double")
    assert list(ds["weight"]) == [None, 0.25]


def _check_roundtrip(original, loaded):
    assert len(loaded) == len(original)
    validate_trajectories(loaded)
    for a, b in zip(original, loaded):
        assert a["messages"] == b["messages"]
        assert a["rewards"] == pytest.approx(b["rewards"])
        assert metadata_of(a) == metadata_of(b)
        assert (a["id"], a["category"], a["source"], a["done"], a["success"]) == (
            b["id"],
            b["category"],
            b["source"],
            b["done"],
            b["success"],
        )


def test_save_to_disk_roundtrip(tmp_path):
    ds = to_dataset(
        [_row(), _row(id="ep-2", rewards=[0.5, -1.25], source="synthetic", metadata=json.dumps({"parent_id": "ep-1"}))]
    )
    ds.save_to_disk(str(tmp_path / "trajectories"))
    loaded = datasets.load_from_disk(str(tmp_path / "trajectories"))
    assert loaded.features == ds.features
    _check_roundtrip(ds, loaded)


def test_json_roundtrip(tmp_path):
    ds = to_dataset([_row(), _row(id="ep-2", rewards=[0.5, -1.25], done=False, success=False)])
    path = tmp_path / "trajectories.jsonl"
    ds.to_json(str(path))
    loaded = datasets.load_dataset("json", data_files=str(path), split="train")
    _check_roundtrip(ds, loaded)
    # re-applying the schema features gives back the exact Arrow schema
    assert loaded.cast(TRAJECTORY_FEATURES).features == TRAJECTORY_FEATURES
