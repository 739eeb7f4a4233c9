"""trainers.data.hub_io: every input format loads and validates; saves are atomic and carry a card."""

import json
import uuid

import datasets
import pytest
from huggingface_hub import DatasetCard

from trainers.data.hub_io import load_trajectories, load_weights, push_trajectories, save_trajectories, save_weights
from trainers.data.schema import TrajectoryValidationError, make_trajectory, to_dataset
from trainers.hub import HubPushError


def _rows(n=4):
    return [
        make_trajectory(
            [
                {"role": "system", "content": "buy a mug"},
                {"role": "user", "content": f"page {i}"},
                {"role": "assistant", "content": f"click[{i}]"},
            ],
            [0.5 * i],
            id=f"t{i}",
            task_id=f"task{i % 2}",
            category=f"cat{i % 3}",
            source="real" if i % 2 else "synthetic",
            metadata={"seed": i},
        )
        for i in range(n)
    ]


@pytest.fixture
def ds():
    return to_dataset(_rows())


def test_save_then_load_hub_layout_keeps_rows_and_features(ds, tmp_path):
    folder = save_trajectories(
        ds, tmp_path / "traj", {"pretty_name": "Mugs", "license": "mit", "split_protocol": "all train"}
    )
    assert (folder / "data" / "train-00000-of-00001.parquet").exists()
    back = load_trajectories(folder, split="train")
    assert back.features == ds.features
    assert back.to_list() == ds.to_list()
    card = DatasetCard.load(folder / "README.md")
    assert card.data.license == "mit" and card.data.size_categories == ["n<1K"]
    assert "**Rows:** 4 (train: 4)" in card.text
    assert "real: 2, synthetic: 2" in card.text and "all train" in card.text


def test_dataset_dict_splits_round_trip(ds, tmp_path):
    parts = datasets.DatasetDict({"train": ds.select([0, 1, 2]), "validation": ds.select([3])})
    save_trajectories(parts, tmp_path / "split")
    loaded = load_trajectories(tmp_path / "split")
    assert {name: len(part) for name, part in loaded.items()} == {"train": 3, "validation": 1}
    assert list(load_trajectories(tmp_path / "split", split="validation")["id"]) == ["t3"]
    # the plain datasets loader reads the same layout (this is what the Hub serves); a unique folder
    # name because its cache keys local folders by name and modification time
    unique = tmp_path / f"split-{uuid.uuid4().hex}"
    save_trajectories(parts, unique)
    assert list(datasets.load_dataset(str(unique), split="validation")["id"]) == ["t3"]


def test_save_to_disk_folders_load(ds, tmp_path):
    ds.save_to_disk(str(tmp_path / "disk"))
    assert list(load_trajectories(tmp_path / "disk")["id"]) == ["t0", "t1", "t2", "t3"]
    datasets.DatasetDict({"eval": ds}).save_to_disk(str(tmp_path / "dict"))
    assert len(load_trajectories(tmp_path / "dict", split="eval")) == 4
    with pytest.raises(KeyError, match="no split 'train'; available: eval"):
        load_trajectories(tmp_path / "dict", split="train")


def test_json_jsonl_parquet_files(ds, tmp_path):
    rows = _rows()
    for row in rows:
        row["metadata"] = json.loads(row["metadata"])  # people write metadata as an object
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    ds.to_parquet(str(tmp_path / "c.parquet"))
    for name in ("a.json", "b.jsonl", "c.parquet"):
        loaded = load_trajectories(tmp_path / name)
        assert list(loaded["id"]) == ["t0", "t1", "t2", "t3"], name
        assert json.loads(loaded[2]["metadata"]) == {"seed": 2}, name


def test_bad_row_names_file_row_and_field(tmp_path):
    rows = _rows()
    rows[2]["rewards"] = [1.0, float("nan")]
    (tmp_path / "bad.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(TrajectoryValidationError, match=r"row 2 \(id='t2'\), field 'rewards'.*mismatch.*bad\.jsonl"):
        load_trajectories(tmp_path / "bad.jsonl")


def test_bad_row_in_parquet_names_split(tmp_path):
    rows = _rows()
    rows[1]["messages"] = [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]
    to_dataset(rows, validate=False).to_parquet(str(tmp_path / "bad.parquet"))
    with pytest.raises(TrajectoryValidationError, match=r"row 1 .*messages\[0\]\.role.*out of order.*split 'train'"):
        load_trajectories(tmp_path / "bad.parquet", split="train")


def test_require_category(tmp_path):
    rows = _rows()
    rows[0]["category"] = ""
    to_dataset(rows).to_parquet(str(tmp_path / "nocat.parquet"))
    assert len(load_trajectories(tmp_path / "nocat.parquet")) == 4
    with pytest.raises(TrajectoryValidationError, match="field 'category'"):
        load_trajectories(tmp_path / "nocat.parquet", require_category=True)


def test_unknown_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        load_trajectories(tmp_path / "missing.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"unsupported file type '\.csv'"):
        load_trajectories(tmp_path / "x.csv")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        load_trajectories(tmp_path / "broken.json")


def test_saving_invalid_rows_keeps_previous_folder(ds, tmp_path):
    save_trajectories(ds, tmp_path / "traj")
    bad = to_dataset([{**_rows()[0], "rewards": [1.0, 2.0]}], validate=False)
    with pytest.raises(TrajectoryValidationError, match="rewards length mismatch"):
        save_trajectories(bad, tmp_path / "traj")
    assert len(load_trajectories(tmp_path / "traj", split="train")) == 4


def test_weights_round_trip_and_statistics(tmp_path):
    folder = save_weights({"t0": 0.5, "t1": 1.5}, tmp_path / "w", {"trajectories_repo": "me/traj"})
    assert load_weights(folder) == {"t0": 0.5, "t1": 1.5}
    card = DatasetCard.load(folder / "README.md")
    assert "https://huggingface.co/datasets/me/traj" in card.text
    assert "| effective sample size | 1.6 |" in card.text  # (0.5 + 1.5)^2 / (0.25 + 2.25)
    (tmp_path / "w.json").write_text(json.dumps({"a": 1.0}))
    assert load_weights(tmp_path / "w.json") == {"a": 1.0}


@pytest.mark.parametrize(
    "weights, problem",
    [({"t0": float("nan")}, "finite number >= 0"), ({"t0": -1.0}, "finite number >= 0")],
)
def test_bad_weights_are_refused(tmp_path, weights, problem):
    with pytest.raises(ValueError, match=rf"row 0 \(id='t0'\), field 'weight': must be a {problem}"):
        save_weights(weights, tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_weights_need_both_columns_and_unique_ids(tmp_path):
    with pytest.raises(ValueError, match="missing column 'weight'"):
        save_weights(datasets.Dataset.from_dict({"id": ["a"]}), tmp_path / "w")
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        save_weights(datasets.Dataset.from_dict({"id": ["a", "a"], "weight": [1.0, 2.0]}), tmp_path / "w")


def test_failed_push_keeps_the_saved_folder(ds, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(HubPushError, match="is intact") as info:
        push_trajectories(ds, "me/traj", {"license": "mit"}, local_dir=tmp_path / "out")
    assert info.value.folder == tmp_path / "out"
    assert list(load_trajectories(tmp_path / "out", split="train")["id"]) == ["t0", "t1", "t2", "t3"]
    assert 'load_dataset("me/traj"' in (tmp_path / "out" / "README.md").read_text()
