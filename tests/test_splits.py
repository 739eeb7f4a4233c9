import json
from pathlib import Path

import pytest

from trainers.data.converters import convert_car_dealer, convert_twenty_questions, read_json_records
from trainers.data.schema import TrajectoryValidationError, make_trajectory, to_dataset
from trainers.data.splits import (
    EmptySplitError,
    attach_synthetic,
    split_by_category,
)

DATA = Path(__file__).parent / "data"


def _row(i, category, source="real", parent=None):
    meta = {"parent_id": parent} if parent is not None else {}
    return make_trajectory(
        [{"role": "user", "content": f"task {i}"}, {"role": "assistant", "content": f"act {i}"}],
        [float(i % 3)],
        id=f"{source}-{i}",
        task_id=f"t{i}",
        category=category,
        source=source,
        metadata=meta,
    )


@pytest.fixture(scope="module")
def dataset():
    # 10 categories with 5..14 trajectories each
    rows = []
    n = 0
    for c in range(10):
        for _ in range(5 + c):
            rows.append(_row(n, f"cat{c}"))
            n += 1
    return to_dataset(rows)


def test_no_category_leaks_and_everything_is_assigned(dataset):
    splits, report = split_by_category(dataset, seed=3, return_report=True)
    train_cats = set(list(splits["train"]["category"]))
    val_cats, eval_cats = set(list(splits["val"]["category"])), set(list(splits["eval"]["category"]))
    assert train_cats.isdisjoint(val_cats | eval_cats)
    # val and eval come from the same held-out categories (every held-out category has >= 5 rows)
    assert val_cats == eval_cats == set(report.heldout_categories)
    assert len(train_cats) == 6 and len(report.heldout_categories) == 4  # round(0.6 * 10)
    ids = list(splits["train"]["id"]) + list(splits["val"]["id"]) + list(splits["eval"]["id"])
    assert sorted(ids) == sorted(dataset["id"]) and len(set(ids)) == len(ids)
    # val_split of each held-out category
    for category in report.heldout_categories:
        total = report.per_category[category]["val"] + report.per_category[category]["eval"]
        assert report.per_category[category]["val"] == round(0.3 * total)
    assert report.sizes == {name: len(splits[name]) for name in ("train", "val", "eval")}
    assert splits.split_report is report


def test_seed_stability_and_input_order_independence(dataset):
    a = split_by_category(dataset, seed=7)
    b = split_by_category(dataset, seed=7)
    shuffled = split_by_category(dataset.shuffle(seed=123), seed=7)
    for name in ("train", "val", "eval"):
        assert list(a[name]["id"]) == list(b[name]["id"])
        assert sorted(list(a[name]["id"])) == sorted(list(shuffled[name]["id"]))
    other = split_by_category(dataset, seed=8)
    assert any(sorted(list(a[n]["id"])) != sorted(list(other[n]["id"])) for n in ("train", "val", "eval"))


def test_low_data_subsamples_train_only(dataset):
    full = split_by_category(dataset, seed=1)
    low, report = split_by_category(dataset, seed=1, low_data_fraction=0.1, return_report=True)
    assert len(low["train"]) == round(0.1 * len(full["train"]))
    assert set(list(low["train"]["id"])) <= set(list(full["train"]["id"]))
    assert list(low["val"]["id"]) == list(full["val"]["id"]) and list(low["eval"]["id"]) == list(full["eval"]["id"])
    assert report.train_size_before_low_data == len(full["train"])
    assert sum(c["train"] for c in report.per_category.values()) == len(low["train"])
    again = split_by_category(dataset, seed=1, low_data_fraction=0.1)
    assert list(again["train"]["id"]) == list(low["train"]["id"])


def test_report_prints_a_table(dataset):
    _, report = split_by_category(dataset, seed=0, return_report=True)
    text = str(report)
    assert "6 train categories, 4 held-out categories" in text
    for category in report.heldout_categories:
        assert category in text
    assert json.loads(report.to_json())["sizes"] == report.sizes


def test_missing_category_names_the_row(dataset):
    rows = [dict(r) for r in dataset]
    rows[4]["category"] = ""
    with pytest.raises(TrajectoryValidationError, match=r"row 4 \(id='real-4'\), field 'category': missing category"):
        split_by_category(to_dataset(rows))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"train_category_fraction": 0.01}, "train would be empty"),
        ({"train_category_fraction": 0.99}, "val/eval would be empty"),
        ({"val_split": 0.01}, "the val split is empty"),
        ({"val_split": 0.99}, "the eval split is empty"),
    ],
)
def test_empty_splits_are_clear_errors(kwargs, match):
    rows = [_row(i, f"cat{i % 4}") for i in range(8)]  # 2 rows per category
    with pytest.raises(EmptySplitError, match=match):
        split_by_category(to_dataset(rows), **kwargs)


def test_single_category_and_bad_fractions():
    with pytest.raises(EmptySplitError, match="at least 2 categories"):
        split_by_category(to_dataset([_row(i, "only") for i in range(5)]))
    rows = to_dataset([_row(i, f"c{i % 3}") for i in range(9)])
    with pytest.raises(ValueError, match="val_split must be in"):
        split_by_category(rows, val_split=1.5)
    with pytest.raises(ValueError, match="low_data_fraction must be in"):
        split_by_category(rows, low_data_fraction=0)


def test_synthetic_rows_are_refused_by_the_split():
    rows = [_row(i, f"c{i % 3}") for i in range(9)] + [_row(99, "c0", source="synthetic", parent="real-0")]
    with pytest.raises(ValueError, match=r"row 9 \(id='synthetic-99'\) is synthetic"):
        split_by_category(to_dataset(rows))


def test_attach_synthetic_only_from_train(dataset):
    splits = split_by_category(dataset, seed=0)
    train_id = list(splits["train"]["id"])[0]
    val_id = list(splits["val"]["id"])[0]
    good = to_dataset([_row(1000, list(splits["train"]["category"])[0], source="real", parent=train_id)])
    merged = attach_synthetic(splits["train"], good)
    assert len(merged) == len(splits["train"]) + 1
    assert merged[-1]["source"] == "synthetic" and merged[-1]["id"] == "real-1000"
    leak = to_dataset(
        [_row(1001, "x", source="synthetic", parent=train_id), _row(1002, "x", source="synthetic", parent=val_id)]
    )
    with pytest.raises(
        TrajectoryValidationError, match=rf"row 1 \(id='synthetic-1002'\), field 'metadata.parent_id'.*{val_id}"
    ):
        attach_synthetic(splits["train"], leak)
    orphan = to_dataset([_row(1003, "x", source="synthetic")])
    with pytest.raises(TrajectoryValidationError, match="does not record the train trajectory"):
        attach_synthetic(splits["train"], orphan)


def test_split_on_converted_lmrl_data():
    # categories come from the converters: 20Q word classes and car brands
    records = read_json_records(DATA / "lmrl_twenty_questions.json")
    rows = convert_twenty_questions(records) + convert_car_dealer(read_json_records(DATA / "lmrl_car_dealer.json"))
    # each row three times (ids made unique) so that held-out categories have several rows
    ds = to_dataset([{**row, "id": f"{row['id']}-copy{k}"} for k in range(3) for row in rows])
    splits = split_by_category(ds, train_category_fraction=0.5, val_split=0.34, seed=0)
    assert set(list(splits["train"]["category"])).isdisjoint(list(splits["eval"]["category"]))
    assert len(splits["train"]) + len(splits["val"]) + len(splits["eval"]) == len(ds)


def test_report_plot_writes_png(dataset, tmp_path):
    _, report = split_by_category(dataset, seed=0, low_data_fraction=0.5, return_report=True)
    path = report.plot(tmp_path / "plots" / "split.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert [p.name for p in path.parent.iterdir()] == ["split.png"]  # no temporary file left
