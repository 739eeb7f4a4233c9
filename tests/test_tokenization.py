import logging

import pytest
import torch
from transformers import AutoTokenizer

from trainers.data.schema import make_trajectory, to_dataset
from trainers.data.tokenization import (
    PLAIN_CHAT_TEMPLATE,
    TOKENIZED_COLUMNS,
    TrajectoryCollator,
    TrajectoryTooLongError,
    prepare_tokenizer,
    tokenize_dataset,
    tokenize_trajectory,
)

MESSAGES = [
    {"role": "system", "content": "Guess the object."},
    {"role": "user", "content": "Questions:"},
    {"role": "assistant", "content": "Is it an animal?"},
    {"role": "user", "content": "No."},
    {"role": "assistant", "content": "Is it a vehicle?"},
    {"role": "user", "content": "Yes."},
    {"role": "assistant", "content": "Is it a car?"},
    {"role": "user", "content": "Yes."},
]
REWARDS = [0.0, -1.0, 17.0]


@pytest.fixture
def plain_tokenizer(tiny_tokenizer):
    """A base-model tokenizer: no chat template and no pad token."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer.name_or_path)
    tokenizer.chat_template = None
    tokenizer.pad_token = None
    return tokenizer


def _decode_actions(tokenizer, encoded):
    turns = {}
    for token, turn in zip(encoded["input_ids"], encoded["turn_ids"]):
        if turn >= 0:
            turns.setdefault(turn, []).append(token)
    return {turn: tokenizer.decode(ids) for turn, ids in turns.items()}


def _check_invariants(encoded, rewards, done=True):
    n = len(encoded["input_ids"])
    for key in TOKENIZED_COLUMNS:
        assert len(encoded[key]) == n, key
    mask = encoded["action_mask"]
    assert all((t >= 0) == bool(m) for t, m in zip(encoded["turn_ids"], mask))
    # rewards only on action tokens, one per kept turn, in order
    reward_positions = [i for i, r in enumerate(encoded["token_rewards"]) if r != 0.0]
    assert all(mask[i] == 1 for i in reward_positions)
    assert sum(encoded["token_dones"]) == (1 if done else 0)


def test_chatml_masks_and_reward_placement(tiny_tokenizer):
    encoded = tokenize_trajectory(MESSAGES, REWARDS, tiny_tokenizer)
    _check_invariants(encoded, REWARDS)
    # the whole sequence equals the template's rendering
    rendered = tiny_tokenizer.apply_chat_template(MESSAGES, tokenize=False)
    assert tiny_tokenizer.decode(encoded["input_ids"]) == rendered
    # actions are the content plus the end-of-turn marker, without role header or trailing newline
    assert _decode_actions(tiny_tokenizer, encoded) == {
        0: "Is it an animal?<|im_end|>",
        1: "Is it a vehicle?<|im_end|>",
        2: "Is it a car?<|im_end|>",
    }
    im_end = tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    for turn, reward in enumerate(REWARDS):
        positions = [i for i, t in enumerate(encoded["turn_ids"]) if t == turn]
        last = positions[-1]
        assert encoded["input_ids"][last] == im_end
        assert encoded["token_rewards"][last] == reward
        assert all(encoded["token_rewards"][i] == 0.0 for i in positions[:-1])
        assert positions == list(range(positions[0], last + 1))  # contiguous
    last_action = max(i for i, m in enumerate(encoded["action_mask"]) if m)
    assert encoded["token_dones"][last_action] == 1
    assert encoded["dropped_turns"] == 0


def test_unfinished_trajectory_has_no_done(tiny_tokenizer):
    encoded = tokenize_trajectory(MESSAGES, REWARDS, tiny_tokenizer, done=False)
    _check_invariants(encoded, REWARDS, done=False)
    assert encoded["token_rewards"].count(17.0) == 1


def test_plain_template_for_base_tokenizer(plain_tokenizer):
    with pytest.raises(ValueError, match="no chat template.*chat_template='plain'"):
        prepare_tokenizer(plain_tokenizer)
    tokenizer = prepare_tokenizer(plain_tokenizer, "plain")
    assert tokenizer.chat_template == PLAIN_CHAT_TEMPLATE
    assert tokenizer.pad_token == tokenizer.eos_token  # filled in for padding
    encoded = tokenize_trajectory(MESSAGES, REWARDS, tokenizer)
    _check_invariants(encoded, REWARDS)
    text = tokenizer.decode(encoded["input_ids"])
    assert text.startswith("Guess the object.\n\nEnvironment: Questions:\nAgent: Is it an animal?")
    eos = tokenizer.eos_token
    assert _decode_actions(tokenizer, encoded) == {
        # the space after "Agent:" belongs to the action, as the model generates it after the prompt
        0: f" Is it an animal?{eos}",
        1: f" Is it a vehicle?{eos}",
        2: f" Is it a car?{eos}",
    }
    last = max(i for i, t in enumerate(encoded["turn_ids"]) if t == 2)
    assert encoded["input_ids"][last] == tokenizer.eos_token_id and encoded["token_rewards"][last] == 17.0
    # context tokens include the "Agent:" header, which is not an action
    context = tokenizer.decode([t for t, m in zip(encoded["input_ids"], encoded["action_mask"]) if not m])
    assert "Agent:" in context and "Environment: Yes." in context
    # what the model sees at inference (the generation prompt) is a token prefix of what it trains on
    for turn, message in enumerate(MESSAGES):
        if message["role"] == "assistant":
            prompt = tokenizer.apply_chat_template(MESSAGES[:turn], add_generation_prompt=True, tokenize=False)
            full = tokenizer.apply_chat_template(MESSAGES[: turn + 1], tokenize=False)
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            assert tokenizer(full, add_special_tokens=False)["input_ids"][: len(prompt_ids)] == prompt_ids


def test_tokenizer_without_pad_or_eos_is_a_clear_error(plain_tokenizer):
    plain_tokenizer.eos_token = None
    with pytest.raises(ValueError, match="neither a pad nor an eos token"):
        prepare_tokenizer(plain_tokenizer, "plain")


def test_truncation_drops_oldest_turns_and_keeps_final_reward(tiny_tokenizer):
    full = tokenize_trajectory(MESSAGES, REWARDS, tiny_tokenizer)
    # room for everything but the trailing observation
    no_tail = tokenize_trajectory(MESSAGES[:-1], REWARDS, tiny_tokenizer)
    cut = tokenize_trajectory(MESSAGES, REWARDS, tiny_tokenizer, max_length=len(no_tail["input_ids"]))
    assert cut["input_ids"] == no_tail["input_ids"] and cut["dropped_turns"] == 0
    # one token less: the oldest (action, observation) pair goes
    cut = tokenize_trajectory(MESSAGES, REWARDS, tiny_tokenizer, max_length=len(no_tail["input_ids"]) - 1)
    assert cut["dropped_turns"] == 1
    assert len(cut["input_ids"]) < len(full["input_ids"])
    actions = _decode_actions(tiny_tokenizer, cut)
    # turn ids keep the original numbering; turn 1 lost the observation it answered (dropped with turn 0),
    # so it stays as context but is no action to learn
    assert set(actions) == {2}
    assert actions[2] == "Is it a car?<|im_end|>"
    kept_rewards = [r for r in cut["token_rewards"] if r != 0.0]
    assert kept_rewards == [17.0]
    text = tiny_tokenizer.decode(cut["input_ids"])
    assert MESSAGES[4]["content"] in text  # turn 1's words are still there, as context
    assert text.startswith("<|im_start|>system\nGuess the object.<|im_end|>\n<|im_start|>user\nQuestions:<|im_end|>")
    assert "animal" not in text
    _check_invariants(cut, REWARDS)


def test_truncation_never_cuts_the_last_turn(tiny_tokenizer):
    minimal = [MESSAGES[0], MESSAGES[1], MESSAGES[6]]
    need = len(tokenize_trajectory(minimal, [17.0], tiny_tokenizer)["input_ids"])
    ok = tokenize_trajectory(MESSAGES, REWARDS, tiny_tokenizer, max_length=need)
    assert ok["dropped_turns"] == 2 and len(ok["input_ids"]) == need
    assert ok["token_rewards"][max(i for i, m in enumerate(ok["action_mask"]) if m)] == 17.0
    with pytest.raises(TrajectoryTooLongError, match=rf"row ep-9: {need} tokens.*max_length={need - 1}"):
        tokenize_trajectory(MESSAGES, REWARDS, tiny_tokenizer, max_length=need - 1, row="ep-9")


def _dataset(n=6):
    rows = []
    for i in range(n):
        messages = MESSAGES[: 4 + 2 * (i % 3)]
        rows.append(make_trajectory(messages, REWARDS[: 1 + i % 3], id=f"t{i}", done=i % 2 == 0, category="c"))
    ds = to_dataset(rows)
    return ds.add_column("weight", [0.5 + i for i in range(n)])


def test_tokenize_dataset_and_collator(tiny_tokenizer):
    ds = _dataset()
    tokenized = tokenize_dataset(ds, tiny_tokenizer)
    assert set(tokenized.column_names) == {*TOKENIZED_COLUMNS, "dropped_turns", "id", "source", "weight"}
    for i, row in enumerate(tokenized):
        direct = tokenize_trajectory(ds[i]["messages"], ds[i]["rewards"], tiny_tokenizer, done=ds[i]["done"])
        assert row["input_ids"] == direct["input_ids"]
        assert sum(row["token_dones"]) == (1 if ds[i]["done"] else 0)
    collator = TrajectoryCollator(pad_token_id=tiny_tokenizer.pad_token_id, pad_to_multiple_of=8)
    batch = collator([tokenized[i] for i in range(3)])
    length = max(len(tokenized[i]["input_ids"]) for i in range(3))
    assert batch["input_ids"].shape[1] == -(-length // 8) * 8
    assert batch["token_rewards"].dtype == torch.float32
    short = len(tokenized[0]["input_ids"])
    assert (batch["input_ids"][0, short:] == tiny_tokenizer.pad_token_id).all()
    assert (batch["attention_mask"][0, short:] == 0).all() and (batch["turn_ids"][0, short:] == -1).all()
    labels = batch["labels"]
    assert ((labels != -100) == (batch["action_mask"] == 1)).all()
    assert torch.equal(labels[batch["action_mask"] == 1], batch["input_ids"][batch["action_mask"] == 1])
    assert batch["weights"].tolist() == [0.5, 1.5, 2.5]


def test_tokenize_dataset_errors_name_the_row(tiny_tokenizer, caplog):
    ds = _dataset()
    with pytest.raises(TrajectoryTooLongError, match=r"row 0 \(id='t0'\)"):
        tokenize_dataset(ds, tiny_tokenizer, max_length=5)
    need = max(len(r["input_ids"]) for r in tokenize_dataset(ds.select([0, 3]), tiny_tokenizer))
    with caplog.at_level(logging.WARNING, logger="trainers.data.tokenization"):
        tokenized = tokenize_dataset(ds, tiny_tokenizer, max_length=need)
    assert max(len(ids) for ids in tokenized["input_ids"]) <= need
    assert sum(tokenized["dropped_turns"]) > 0
    assert "exceeded max_length" in caplog.text
    with pytest.raises(ValueError, match=r"dataset lacks \['rewards'\]"):
        tokenize_dataset(ds.remove_columns("rewards"), tiny_tokenizer)


def test_num_proc_gives_identical_result(tiny_tokenizer):
    ds = to_dataset([make_trajectory(MESSAGES, REWARDS, id=f"t{i}") for i in range(40)])
    one = tokenize_dataset(ds, tiny_tokenizer)
    two = tokenize_dataset(ds, tiny_tokenizer, num_proc=2)
    assert one["input_ids"][:] == two["input_ids"][:] and one["token_rewards"][:] == two["token_rewards"][:]


@pytest.mark.slow
def test_smollm2_tokenizer_masks_and_default_system_prompt():
    from trainers.models import load_tokenizer, smollm2_gguf_file

    tokenizer = prepare_tokenizer(load_tokenizer(str(smollm2_gguf_file())))
    messages = MESSAGES[1:]  # no system message: SmolLM2's template inserts its default one
    encoded = tokenize_trajectory(messages, REWARDS, tokenizer)
    _check_invariants(encoded, REWARDS)
    text = tokenizer.decode(encoded["input_ids"])
    assert text == tokenizer.apply_chat_template(messages, tokenize=False)
    assert text.startswith("<|im_start|>system\n")  # the default system prompt is context
    assert _decode_actions(tokenizer, encoded) == {
        0: "Is it an animal?<|im_end|>",
        1: "Is it a vehicle?<|im_end|>",
        2: "Is it a car?<|im_end|>",
    }
    last = max(i for i, m in enumerate(encoded["action_mask"]) if m)
    assert encoded["input_ids"][last] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert encoded["token_rewards"][last] == 17.0 and encoded["token_dones"][last] == 1
