import json
from pathlib import Path

import pytest

from trainers.data import schema
from trainers.data.converters import (
    ConversionError,
    convert_car_dealer,
    convert_eto,
    convert_twenty_questions,
    load_trajectories,
    read_json_records,
    split_in_context_examples,
    split_question_answer,
    twenty_questions_category,
)

DATA = Path(__file__).parent / "data"
SHARED = Path("/work/shared/data")


def _roles(row):
    return [m["role"] for m in row["messages"]]


# ---------------------------------------------------------------- ETO / TraTree


def test_eto_sft_instruction_becomes_system_and_reward_on_last_turn():
    ds = load_trajectories(DATA / "eto_webshop_sft.json", "eto")
    assert len(ds) == 2
    first = ds[0]
    assert first["id"] == "0"
    assert _roles(first) == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert first["messages"][0]["content"].startswith("You are shopping on a web store.")
    # the "OK" acknowledgement of the instruction is not an action
    assert all(m["content"] != "OK" for m in first["messages"])
    assert first["messages"][1]["content"].startswith("Observation:\nWebShop [SEP] Instruction:")
    assert first["rewards"] == [0.0, 0.0, 1.0]
    assert ds[1]["rewards"] == [0.0, 0.0, 0.0, 0.5]
    assert schema.metadata_of(ds[1])["reward_field"] == "reward"


def test_eto_eval_outputs_folder_drops_in_context_example():
    ds = load_trajectories(DATA / "eto_outputs_webshop", "eto")
    assert [r["id"] for r in ds] == ["12", "13"]  # file stems, sorted
    twelve = ds[0]
    meta = schema.metadata_of(twelve)
    # the shared WebShop in-context example has 8 turns, ETO's offset is 2 + 8
    assert meta["in_context_turns"] == 8 and meta["reward_field"] == "meta.reward"
    assert "l'eau d'issey" not in json.dumps(twelve["messages"])  # the example's task is gone
    assert "dark roast coffee pods" in twelve["messages"][1]["content"]
    assert twelve["rewards"] == [0.0, 0.0, 1.0] and twelve["success"] is True
    thirteen = ds[1]
    assert thirteen["success"] is False and thirteen["rewards"][-1] == 0.0
    assert _roles(thirteen)[-1] == "user"  # the final observation after the last action is kept
    assert meta["terminate_reason"] == "success"


def test_eto_in_context_examples_can_be_kept_in_system_prompt():
    records = read_json_records(DATA / "eto_outputs_webshop")
    kept = convert_eto(records, in_context_examples="system")
    dropped = convert_eto(records)
    assert kept[0]["messages"][1:] == dropped[0]["messages"][1:]
    assert "l'eau d'issey" in kept[0]["messages"][0]["content"]
    assert "l'eau d'issey" not in dropped[0]["messages"][0]["content"]
    # kept as context, never as actions: same number of rewards
    assert kept[0]["rewards"] == dropped[0]["rewards"]


def test_eto_explicit_in_context_turn_count_matches_detection():
    records = read_json_records(DATA / "eto_outputs_webshop")
    assert convert_eto(records, in_context_turns=8) == convert_eto(records)
    with pytest.raises(ConversionError, match="record 0, field 'conversations'.*in_context_turns=99"):
        convert_eto(records, in_context_turns=99)


def test_eto_single_message_in_context_layout_is_split():
    ds = load_trajectories(DATA / "eto_sciworld_first_format.json", "eto")
    row = ds[0]
    assert row["id"] == "boil-3"
    assert row["messages"][0]["role"] == "system"
    assert "teleport to LOC" in row["messages"][0]["content"]
    assert "green paint" not in row["messages"][0]["content"]  # the example is dropped
    assert row["messages"][1]["content"].startswith("Task Description:\nYour task is to boil water")
    assert row["rewards"] == [0.0, 0.0, 0.25]
    kept = convert_eto(read_json_records(DATA / "eto_sciworld_first_format.json"), in_context_examples="system")
    assert "green paint" in kept[0]["messages"][0]["content"]


@pytest.mark.parametrize("env", ["webshop", "scienceworld"])
def test_eto_role_content_variant_from_shared_files(env):
    path = SHARED / env / "example_trajectory_eto_format.json"
    raw = json.loads(path.read_text())[0]
    with pytest.raises(ConversionError, match="record 0, field 'reward'.*default_reward"):
        load_trajectories(path, "eto")
    ds = load_trajectories(path, "eto", default_reward=1.0, category_of=lambda record, messages: env)
    row = ds[0]
    assert [m["content"] for m in row["messages"]] == [m["content"] for m in raw]
    n_actions = sum(m["role"] == "assistant" for m in raw)
    assert row["rewards"] == [0.0] * (n_actions - 1) + [1.0]
    assert row["category"] == env


def test_split_in_context_examples_detects_by_episode_start():
    instruction = [{"role": "user", "content": "rules"}, {"role": "assistant", "content": "OK"}]
    example = [
        {"role": "user", "content": "Your task is to melt ice."},
        {"role": "assistant", "content": "Action: look around"},
    ]
    task = [
        {"role": "user", "content": "Task Description:\nYour task is to boil water."},
        {"role": "assistant", "content": "Action: go to kitchen"},
    ]
    inst, icl, rest = split_in_context_examples(instruction + example + task)
    assert inst == "rules" and icl == example and rest == task
    # a single episode has no in-context examples
    inst, icl, rest = split_in_context_examples(instruction + task)
    assert icl == [] and rest == task


@pytest.mark.parametrize(
    "record, match",
    [
        ({"id": "a"}, "record 0, field 'conversations': missing"),
        ({"conversations": [], "reward": 1}, "record 0, field 'conversations': empty trajectory"),
        (
            {"conversations": [{"from": "robot", "value": "x"}], "reward": 1},
            r"conversations\[0\].from': unknown speaker 'robot'",
        ),
        (
            {"conversations": [{"from": "human", "value": 3}], "reward": 1},
            r"conversations\[0\].value': expected a string",
        ),
        ({"conversations": [{"from": "human", "value": "obs"}], "reward": 1}, "no assistant"),
        (
            {"conversations": [{"from": "human", "value": "o"}, {"from": "gpt", "value": "a"}], "reward": "high"},
            "field 'reward': expected a number",
        ),
        (
            {
                "conversations": [{"from": "human", "value": "o"}, {"from": "gpt", "value": "a"}],
                "meta": {"reward": None},
            },
            "field 'reward': missing",
        ),
        (
            {
                "conversations": [
                    {"from": "human", "value": "o"},
                    {"from": "gpt", "value": "a"},
                    {"from": "gpt", "value": "b"},
                ],
                "reward": 1,
            },
            "two assistant messages in a row",
        ),
        (
            {"conversations": [{"from": "human", "value": "o"}, {"from": "gpt", "value": "a"}], "reward": float("nan")},
            "finite number",
        ),
    ],
)
def test_eto_malformed_records_name_record_and_field(record, match):
    good = {"conversations": [{"from": "human", "value": "o"}, {"from": "gpt", "value": "a"}], "reward": 1.0}
    with pytest.raises(ConversionError, match=match.replace("record 0", "record 1")) as info:
        convert_eto([good, record], source_name="peer.json")
    assert info.value.index == 1 and str(info.value).startswith("peer.json: record 1")


# ---------------------------------------------------------------- twenty questions


def test_twenty_questions_boost_rewards_and_roles():
    rows = convert_twenty_questions(read_json_records(DATA / "lmrl_twenty_questions.json"))
    banana, plane, failed, partial = rows
    assert _roles(banana)[:4] == ["system", "user", "assistant", "user"]
    assert banana["messages"][2] == {"role": "assistant", "content": "Is it an animal?"}
    assert banana["messages"][3] == {"role": "user", "content": "No."}
    assert banana["messages"][-2]["content"] == "Is it a banana?"
    # BOOST: questions remaining on a correct guess (20 - 7), on the last question only
    assert banana["rewards"] == [0.0] * 6 + [13.0]
    assert plane["rewards"][-1] == 15.0 and plane["category"] == "Vehicles" and plane["task_id"] == "Airplane"
    assert banana["category"] == "Fruits" and banana["success"] and banana["done"]
    assert failed["rewards"] == [0.0] * 20 and failed["done"] and not failed["success"]
    # stopped early without a correct guess: an unfinished trajectory (LMRL-Gym semantics)
    assert partial["done"] is False and partial["rewards"] == [0.0, 0.0]


def test_twenty_questions_lmrl_original_rewards():
    rows = convert_twenty_questions(read_json_records(DATA / "lmrl_twenty_questions.json"), reward="lmrl")
    assert rows[0]["rewards"] == [-1.0] * 6 + [0.0]
    assert rows[2]["rewards"] == [-1.0] * 20
    # return = -(questions asked before the correct one) in both schemes, shifted by the budget
    assert sum(rows[0]["rewards"]) == -6


def test_twenty_questions_helpers():
    assert split_question_answer("Is it bigger than a car? No? Yes.") == ("Is it bigger than a car? No?", "Yes.")
    assert twenty_questions_category(["Pair of pliers"]) == "Tools"
    assert twenty_questions_category("TV") == "Electronics"
    assert twenty_questions_category(["unicorn"]) == ""


@pytest.mark.parametrize(
    "record, match",
    [
        ({"correct": True, "word": ["Cat"]}, "field 'lines': missing"),
        ({"lines": [], "correct": True, "word": ["Cat"]}, "field 'lines': empty trajectory"),
        (
            {"lines": ["Is it a cat Yes."], "correct": True, "word": ["Cat"]},
            r"field 'lines\[0\]': expected 'Question\? Answer.'",
        ),
        ({"lines": ["Is it a cat? Yes."], "correct": "yes", "word": ["Cat"]}, "field 'correct'"),
        ({"lines": ["Is it a cat? Yes."], "correct": True, "word": []}, "field 'word'"),
        (
            {"lines": ["Is it? No."] * 21, "correct": False, "word": ["Cat"]},
            "field 'lines': 21 questions exceed max_questions=20",
        ),
    ],
)
def test_twenty_questions_malformed(record, match):
    with pytest.raises(ConversionError, match="record 0, " + match):
        convert_twenty_questions([record])


# ---------------------------------------------------------------- car dealer


def test_car_dealer_boost_rewards_seller_is_agent():
    rows = convert_car_dealer(read_json_records(DATA / "lmrl_car_dealer.json"))
    toyota, bmw, audi = rows
    assert toyota["category"] == "Toyota" and bmw["category"] == "BMW" and audi["category"] == "Audi"
    # seller opens: a first observation precedes the seller's first line
    assert toyota["messages"][1] == {"role": "user", "content": "Beginning of Conversation"}
    assert toyota["messages"][2]["role"] == "assistant" and toyota["messages"][2]["content"].startswith("Hi there!")
    # agreement after 6 dialogue lines: 50 - 6 turns remaining
    assert toyota["rewards"] == [0.0, 0.0, 44.0] and toyota["success"]
    # two consecutive seller lines are one action
    assert bmw["rewards"] == [0.0, 0.0]
    assert (
        bmw["messages"][-2]["content"]
        == "The BMW X7 has both. It is priced at $78,000. We also have financing options available."
    )
    assert not bmw["success"] and bmw["done"]
    # buyer opens: no synthetic first observation
    assert audi["messages"][1]["content"].startswith("Hi! I've always dreamed")
    assert audi["rewards"] == [0.0, 45.0]
    assert schema.metadata_of(audi)["buyer_info"]["budget"] == 70000


def test_car_dealer_lmrl_rewards():
    records = read_json_records(DATA / "lmrl_car_dealer.json")
    toyota, bmw, audi = convert_car_dealer(records, reward="lmrl")
    assert toyota["rewards"][-1] == pytest.approx(29500 / ((30000 + 32000) / 2))
    assert bmw["rewards"][-1] == pytest.approx(-(50000 - 78000) / 78000)
    revenue = convert_car_dealer(records, reward="lmrl_revenue")
    assert [r["rewards"][-1] for r in revenue] == [29.5, 0.0, 60.0]
    short = convert_car_dealer(records, max_turns=5)
    assert short[0]["rewards"][-1] == 0.0  # past the horizon: floored at zero, not negative


def test_car_dealer_without_output_is_unfinished_not_dropped():
    record = json.loads((DATA / "lmrl_car_dealer.json").read_text())[0]
    del record["output"]
    (row,) = convert_car_dealer([record])
    assert row["done"] is False and row["rewards"][-1] == 0.0


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda r: r.pop("buyer_info"), "field 'buyer_info': missing"),
        (lambda r: r.__setitem__("lines", []), "field 'lines': empty trajectory"),
        (
            lambda r: r["lines"][1].__setitem__("role", "Mechanic"),
            r"field 'lines\[1\].role': unknown speaker 'Mechanic'",
        ),
        (lambda r: r["lines"][1].pop("text"), r"field 'lines\[1\]': each line needs"),
        (lambda r: r["output"].__setitem__("car_bought", "yes"), "field 'output.car_bought'"),
        (lambda r: r["buyer_info"].pop("preferred_brands"), "field 'buyer_info.preferred_brands'"),
        (
            lambda r: r.__setitem__("lines", [{"role": "Buyer", "text": "hi"}]),
            "field 'lines': empty trajectory: the seller never speaks",
        ),
    ],
)
def test_car_dealer_malformed(mutate, match):
    records = json.loads((DATA / "lmrl_car_dealer.json").read_text())
    mutate(records[2])
    with pytest.raises(ConversionError, match="record 2, " + match):
        convert_car_dealer(records)


def test_car_dealer_lmrl_reward_needs_price():
    records = json.loads((DATA / "lmrl_car_dealer.json").read_text())
    records[0]["output"]["buy_price"] = None
    assert convert_car_dealer(records)[0]["rewards"][-1] == 44.0  # BOOST reward does not use the price
    with pytest.raises(ConversionError, match="record 0, field 'output.buy_price'"):
        convert_car_dealer(records, reward="lmrl")


def test_read_json_records_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_json_records(tmp_path / "missing.json")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"lines": []}\n{oops\n')
    with pytest.raises(ValueError, match="bad.jsonl, line 2"):
        read_json_records(bad)
    with pytest.raises(ValueError, match="unknown format 'csv'"):
        load_trajectories(DATA / "lmrl_car_dealer.json", "csv")


def test_jsonl_input_and_validated_dataset(tmp_path):
    records = json.loads((DATA / "lmrl_twenty_questions.json").read_text())
    path = tmp_path / "20q.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    ds = load_trajectories(path, "twenty_questions", reward="lmrl")
    assert len(ds) == len(records)
    assert ds.features["rewards"] == schema.TRAJECTORY_FEATURES["rewards"]
    assert schema.validate_trajectories(ds, require_category=True) == len(records)


def test_repeated_opening_page_is_not_a_new_episode():
    # WebShop's "Back to Search" shows the opening page again: same episode, nothing dropped
    opening = "Observation:\nWebShop [SEP] Instruction: [SEP] i need red socks [SEP] Search"
    turns = [
        {"from": "human", "value": opening},
        {"from": "gpt", "value": "Thought: search.\nAction: search[red socks]"},
        {
            "from": "human",
            "value": "Observation:\nInstruction: [SEP] i need red socks [SEP] Back to Search [SEP] B01 [SEP] Socks",
        },
        {"from": "gpt", "value": "Thought: go back.\nAction: click[Back to Search]"},
        {"from": "human", "value": opening},
        {"from": "gpt", "value": "Thought: search again.\nAction: search[red cotton socks]"},
    ]
    (row,) = convert_eto([{"conversations": turns, "reward": 0.5}])
    assert len(row["messages"]) == 6 and row["rewards"] == [0.0, 0.0, 0.5]
    assert schema.metadata_of(row)["in_context_turns"] == 0
