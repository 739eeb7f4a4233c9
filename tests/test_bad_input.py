"""Every kind of bad input gets an error that names the file, row, id and field (or the config field)."""

import json
import shutil
import warnings

import datasets
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from trainers.data.converters import ConversionError, convert_eto
from trainers.data.converters import load_trajectories as convert_file
from trainers.data.hub_io import EmptyDatasetError, load_trajectories, save_trajectories
from trainers.data.schema import TrajectoryValidationError, make_trajectory, metadata_of, to_dataset
from trainers.data.tokenization import tokenize_dataset, validate_tokenized
from trainers.modeling import IncompatibleHeadsError, load_value_guided_policy
from trainers.modeling.policy import ValueHeadPolicy
from trainers.modeling.value_heads import CorruptFileError, ValueHeads
from trainers.offline_rl_config import OfflineRLConfig
from trainers.offline_rl_trainer import OfflineRLTrainer

torch.set_num_threads(1)


NOT_A_LIST = "must be a list of {'role', 'content'} messages"


def _row(i=0, **overrides):
    row = make_trajectory(
        [{"role": "user", "content": f"is it an animal {i}"}, {"role": "assistant", "content": "yes"}],
        [1.0],
        id=f"t{i}",
    )
    row["metadata"] = {}
    row.update(overrides)
    return row


def _write(tmp_path, rows, name="rows.json"):
    path = tmp_path / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text(json.dumps(rows))
    return path


# ------------------------------------------------------------------------------ rows (at load)
@pytest.mark.parametrize(
    "overrides, field, problem",
    [
        ({"messages": "user: hi / assistant: yes"}, "messages", f"{NOT_A_LIST}, got str"),
        ({"messages": {"role": "user", "content": "hi"}}, "messages", f"{NOT_A_LIST}, got dict"),
        ({"rewards": [1e308]}, "rewards[0]", "does not fit the float32 rewards column"),
        ({"done": "false"}, "done", "must be true or false (a boolean), got 'false' (str)"),
        ({"success": "no"}, "success", "must be true or false (a boolean), got 'no' (str)"),
    ],
    ids=["messages-string", "messages-dict", "reward-overflow", "done-string", "success-string"],
)
def test_bad_row_names_file_row_id_and_field(tmp_path, overrides, field, problem):
    path = _write(tmp_path, [_row(0), _row(1, **overrides)])
    with pytest.raises(TrajectoryValidationError) as caught:
        load_trajectories(path)
    message = str(caught.value)
    assert f"row 1 (id='t1'), field '{field}'" in message and problem in message and str(path) in message


def test_duplicate_trajectory_ids(tmp_path):
    path = _write(tmp_path, [_row(0), _row(1), _row(0)], "rows.jsonl")
    duplicate = r"row 2 \(id='t0'\), field 'id': duplicate id: row 0 has the same id"
    with pytest.raises(TrajectoryValidationError, match=duplicate):
        load_trajectories(path)


def test_lone_surrogate_in_content(tmp_path):
    path = tmp_path / "rows.json"
    text = json.dumps([_row(0)]).replace('"yes"', '"yes \\ud83d"')  # half of an emoji escape pair
    path.write_text(text)
    with pytest.raises(TrajectoryValidationError) as caught:
        load_trajectories(path)
    assert "row 0 (id='t0'), field 'messages[1].content': character 4 is a lone surrogate" in str(caught.value)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("name, text", [("empty.jsonl", ""), ("empty.json", "[]"), ("blank.jsonl", "\n\n")])
def test_zero_rows(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(EmptyDatasetError, match=f"{path}: holds no trajectory rows"):
        load_trajectories(path)


def test_to_dataset_of_no_rows_is_an_empty_dataset_with_the_schema():
    empty = to_dataset([])
    assert len(empty) == 0 and set(empty.column_names) >= {"messages", "rewards", "id"}


def test_non_utf8_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(json.dumps(_row(0)).replace("yes", "caf\u00e9").encode("latin-1") + b"\n")
    with pytest.raises(ValueError, match=rf"{path}: not UTF-8 text \(byte 0xe9 at offset \d+"):
        load_trajectories(path)
    with pytest.raises(ValueError, match=rf"{path}: not UTF-8 text"):
        convert_file(path, "eto")


def test_bad_jsonl_line_is_reported_by_line_number(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(_row(0)) + "\n" + json.dumps(_row(1)) + "\n" + '{"messages": [' + "\n")
    with pytest.raises(ValueError, match=rf"{path}, line 3: not valid JSON"):
        load_trajectories(path)


@pytest.mark.parametrize("target", ["file", "folder"])
def test_truncated_parquet(tmp_path, target):
    folder = save_trajectories(to_dataset([_row(0), _row(1)]), tmp_path / "saved")
    parquet = next((folder / "data").glob("*.parquet"))
    data = parquet.read_bytes()
    parquet.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=rf"{parquet}: not a readable Parquet file .*truncated or corrupt"):
        load_trajectories(parquet if target == "file" else folder)


def test_raw_eto_file_hints_at_the_converter(tmp_path):
    record = {
        "id": "boil_1",
        "meta": {"reward": 1.0, "success": True, "steps": 3},
        "conversations": [
            {"from": "human", "value": "Your task is to boil water."},
            {"from": "gpt", "value": "look around"},
        ],
    }
    path = _write(tmp_path, [record])
    hint = rf"field 'messages': missing .*looks like the 'eto' format.*converters\.load_trajectories\('{path}', 'eto'\)"
    with pytest.raises(TrajectoryValidationError, match=hint):
        load_trajectories(path)
    # a folder of ETO output files (one record each) gets the same hint
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "7.json").write_text(json.dumps(record))
    with pytest.raises(TrajectoryValidationError, match=r"looks like the 'eto' format"):
        load_trajectories(tmp_path / "outputs")
    # the converter keeps what the format carries: the task name as category, the meta fields as metadata
    (row,) = convert_eto([record])
    assert row["category"] == "boil" and metadata_of(row)["steps"] == 3 and row["success"] is True


def test_converter_reports_duplicate_ids_with_the_file(tmp_path):
    record = {
        "id": "boil_1",
        "reward": 1.0,
        "conversations": [{"from": "human", "value": "Your task is to boil water."}, {"from": "gpt", "value": "look"}],
    }
    path = _write(tmp_path, [record, record])
    with pytest.raises(ConversionError, match=rf"{path}: record 1, field 'id': duplicate id"):
        convert_file(path, "eto")


# ------------------------------------------------------------------------------ saved models (at load / resume)
@pytest.fixture
def heads_folder(tmp_path):
    folder = tmp_path / "heads"
    ValueHeads(16, 32).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_value_heads_safetensors(heads_folder, damage):
    weights = heads_folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a safetensors file" * 4)
    expected = rf"'{weights}' is not a readable safetensors file .*truncated or corrupt"
    with pytest.raises(CorruptFileError, match=expected):
        ValueHeads.from_pretrained(str(heads_folder))


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda c: "{not json", "is not valid JSON"),
        (
            lambda c: json.dumps({**{k: v for k, v in c.items() if k != "hidden_size"}, "hiden_size": 16}),
            r"unknown field\(s\) \['hiden_size'\]",
        ),
        (lambda c: json.dumps({**c, "vocab_size": "32"}), "field 'vocab_size' must be int, got '32'"),
    ],
    ids=["not-json", "wrong-field-name", "wrong-type"],
)
def test_bad_value_heads_config_json(heads_folder, edit, problem):
    config_file = heads_folder / "config.json"
    config_file.write_text(edit(json.loads(config_file.read_text())))
    with pytest.raises(CorruptFileError, match=rf"'{config_file}'.*{problem}"):
        ValueHeads.from_pretrained(str(heads_folder))


@pytest.fixture
def full_fine_tune_folder(tmp_path, tiny_llama, tiny_tokenizer):
    folder = tmp_path / "policy"
    ValueHeadPolicy(tiny_llama, ValueHeads.for_model(tiny_llama)).save_pretrained(folder, tokenizer=tiny_tokenizer)
    return folder


def test_truncated_policy_weights_name_the_file(full_fine_tune_folder, tiny_llama):
    weights = full_fine_tune_folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(CorruptFileError, match=rf"'{weights}' is not a readable safetensors file"):
        ValueHeadPolicy.from_pretrained(full_fine_tune_folder, check_name=False)
    policy = ValueHeadPolicy(tiny_llama, ValueHeads.for_model(tiny_llama))
    with pytest.raises(CorruptFileError, match=rf"'{weights}' is not a readable safetensors file"):
        policy.load_weights_from(full_fine_tune_folder)  # what resume does


def test_policy_marker_that_is_not_json(full_fine_tune_folder):
    marker = full_fine_tune_folder / "offline_rl_policy.json"
    marker.write_text("{oops")
    with pytest.raises(ValueError, match=rf"'{marker}' is not valid JSON"):
        ValueHeadPolicy.from_pretrained(full_fine_tune_folder, check_name=False)


def test_base_model_given_for_a_full_fine_tune_is_checked(tmp_path, full_fine_tune_folder, tiny_llama_path):
    other = tmp_path / "other-base"
    small = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, vocab_size=100
    )
    small.save_pretrained(other)
    with pytest.raises(IncompatibleHeadsError, match=r"full fine-tune.*hidden_size 32 != 64; vocab_size 100 != "):
        load_value_guided_policy(str(full_fine_tune_folder), base_model=str(other), check_name=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_value_guided_policy(str(full_fine_tune_folder), base_model=tiny_llama_path, check_name=False)
    assert loaded is not None and any("base_model=" in str(w.message) and "not used" in str(w.message) for w in caught)


# ------------------------------------------------------------------------------ datasets (at trainer construction)
def _trainer(tmp_path, tiny_llama_path, tokenizer, dataset):
    args = OfflineRLConfig(output_dir=str(tmp_path / "out"), max_steps=1, report_to=[], use_cpu=True, bf16=False)
    return OfflineRLTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_llama_path), args, train_dataset=dataset, processing_class=tokenizer
    )


@pytest.mark.parametrize(
    "weights, message",
    [
        ([1.0, -0.5, 1.0, 1.0], r"row 1 \(id='t1'\), field 'weight': must be a finite number >= 0, got -0.5"),
        ([0.0, 0.0, 0.0, 0.0], r"field 'weight': every one of the 4 rows has weight 0"),
        ([1.0, 1.0, float("nan"), 1.0], r"row 2 \(id='t2'\), field 'weight': must be a finite number >= 0, got nan"),
    ],
    ids=["negative", "all-zero", "nan"],
)
def test_weight_column_is_checked_before_training(tmp_path, tiny_llama_path, tiny_tokenizer, weights, message):
    dataset = to_dataset([_row(i, weight=w) for i, w in enumerate(weights)])
    with pytest.raises(ValueError, match=rf"train dataset: {message}"):
        _trainer(tmp_path, tiny_llama_path, tiny_tokenizer, dataset)


def test_short_action_mask_in_a_pretokenized_dataset(tmp_path, tiny_llama_path, tiny_tokenizer):
    tokenized = tokenize_dataset(to_dataset([_row(i) for i in range(3)]), tiny_tokenizer)
    rows = tokenized.to_list()
    rows[1]["action_mask"] = rows[1]["action_mask"][:-2]
    broken = datasets.Dataset.from_list(rows)
    expected = r"train dataset: row 1 \(id='t1'\), field 'action_mask': \d+ values for \d+ input_ids"
    with pytest.raises(ValueError, match=expected):
        _trainer(tmp_path, tiny_llama_path, tiny_tokenizer, broken)
    validate_tokenized(tokenized)  # the intact dataset passes


def test_empty_training_dataset(tmp_path, tiny_llama_path, tiny_tokenizer):
    with pytest.raises(ValueError, match="train dataset has no rows"):
        _trainer(tmp_path, tiny_llama_path, tiny_tokenizer, to_dataset([]))


def test_mcts_distill_over_an_empty_forest(tmp_path, tiny_llama_path, tiny_tokenizer):
    from trainers.mcts_distill_config import MCTSDistillConfig
    from trainers.mcts_distill_trainer import MCTSDistillTrainer, NoBestPathsError
    from trainers.tree import TrajectoryForest

    args = MCTSDistillConfig(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, bf16=False)
    with pytest.raises(NoBestPathsError, match="the forest has no trees") as caught:
        MCTSDistillTrainer(tiny_llama_path, args, processing_class=tiny_tokenizer, forest=TrajectoryForest())
    assert "failed" not in str(caught.value)


def test_weight_zero_rows_train_when_others_carry_weight(tmp_path, tiny_llama_path, tiny_tokenizer):
    # a batch drawn only from weight-0 rows teaches nothing but must not stop the run
    dataset = to_dataset([_row(i, weight=1.0 if i == 0 else 0.0) for i in range(8)])
    args = OfflineRLConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=4,
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
    )
    trainer = OfflineRLTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_llama_path),
        args,
        train_dataset=dataset,
        processing_class=tiny_tokenizer,
    )
    trainer.train()
    assert trainer.state.global_step == 4
    shutil.rmtree(tmp_path / "out", ignore_errors=True)


@pytest.mark.parametrize(
    "edit, problem",
    [
        (lambda c: "{not json", "is not valid JSON"),
        (
            lambda c: json.dumps(
                {**{k: v for k, v in c.items() if k != "hidden_size"}, "hiden_size": c["hidden_size"]}
            ),
            r"hidden_size 4096 != 64 recorded in the value heads; unknown field\(s\) \['hiden_size'\]",
        ),
        (lambda c: json.dumps({**c, "num_hidden_layers": "two"}), "num_hidden_layers"),
    ],
    ids=["not-json", "wrong-field-name", "wrong-type"],
)
def test_bad_policy_config_json(full_fine_tune_folder, edit, problem):
    config_file = full_fine_tune_folder / "config.json"
    config_file.write_text(edit(json.loads(config_file.read_text())))
    with pytest.raises(CorruptFileError, match=rf"(?s)'{config_file}'.*{problem}"):
        ValueHeadPolicy.from_pretrained(full_fine_tune_folder, check_name=False)


def test_integer_ids_are_accepted_and_compared_as_stored(tmp_path):
    assert load_trajectories(_write(tmp_path, [_row(0, id=7), _row(1, id=8)]))["id"] == ["7", "8"]
    with pytest.raises(TrajectoryValidationError, match=r"row 1 \(id='7'\), field 'id': duplicate id"):
        load_trajectories(_write(tmp_path, [_row(0, id=7), _row(1, id="7")]))


def test_truncated_base_model_weights_are_named_when_the_trainer_loads_them(tmp_path, tiny_llama_path, tiny_tokenizer):
    folder = shutil.copytree(tiny_llama_path, tmp_path / "model")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    args = OfflineRLConfig(output_dir=str(tmp_path / "out"), max_steps=1, report_to=[], use_cpu=True, bf16=False)
    with pytest.raises(CorruptFileError, match=rf"'{weights}' is not a readable safetensors file"):
        OfflineRLTrainer(str(folder), args, train_dataset=to_dataset([_row(0)]), processing_class=tiny_tokenizer)


def test_an_empty_split_beside_others_loads_but_an_empty_dataset_does_not(tmp_path):
    folder = save_trajectories({"train": to_dataset([_row(0)]), "eval": to_dataset([])}, tmp_path / "saved")
    assert len(load_trajectories(folder)["eval"]) == 0
    with pytest.raises(EmptyDatasetError, match=r"split 'eval': holds no trajectory rows"):
        load_trajectories(folder, split="eval")
