"""TreeDPOTrainer: equals TRL's DPO where it should, masks observations, scores a foreign-tokenizer reference."""

import math

import pytest
import torch
from test_tree import FakeEmbedder, trajectory
from transformers import AutoModelForCausalLM

from trainers.data.tokenization import tokenize_trajectory
from trainers.tree import NoPreferencePairsError, build_forest, mine_pairs
from trainers.tree_dpo_config import TreeDPOConfig
from trainers.tree_dpo_trainer import TreeDPOTrainer, assistant_token_mask, calibrate_reference_logps

INSTR = "task : heat water"


def _forest():
    rows = [
        trajectory(
            "t",
            [
                (INSTR, "look", "look around"),
                ("kitchen stove water", "", "go to kitchen"),
                ("stove", "heat", "heat water"),
            ],
            1.0,
            id="A",
        ),
        trajectory(
            "t",
            [(INSTR, "look", "look around"), ("kitchen stove water", "", "go to kitchen"), ("stove", "", "open door")],
            0.0,
            id="B",
        ),
        trajectory(
            "t",
            [
                (INSTR, "look", "look around"),
                ("kitchen stove water", "", "pick up thermometer"),
                ("thermometer", "", "focus on thermometer"),
            ],
            0.25,
            id="C",
        ),
    ]
    return build_forest(rows, embedder=FakeEmbedder(), similarity_on="observation", show_progress=False)


def _pairs(continuation):
    return mine_pairs(_forest(), continuation=continuation, log=False).to_dataset()


def _arg_values(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=2,
        max_length=256,
        report_to="none",
        use_cpu=True,
        bf16=False,
        save_strategy="no",
        logging_steps=1,
        seed=0,
    )
    values.update(overrides)
    return values


def _args(tmp_path, **overrides):
    return TreeDPOConfig(**_arg_values(tmp_path, **overrides))


def _batch(trainer, n=2):
    return trainer.data_collator([trainer.train_dataset[i] for i in range(n)])


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory):
    from trainers.testing import build_tiny_tokenizer

    return build_tiny_tokenizer(tmp_path_factory.mktemp("tiny-tokenizer-400"), vocab_size=400)


@pytest.fixture(scope="module")
def foreign_gpt2_path(tmp_path_factory, small_tokenizer):
    from trainers.testing import build_tiny_model

    directory = tmp_path_factory.mktemp("tiny-gpt2-400")
    build_tiny_model(directory, small_tokenizer, "gpt2", seed=1)
    return str(directory)


def _dpo_losses(tmp_path, tiny_tokenizer, tiny_llama_path, tiny_gpt2_path, continuation, mask):
    from trl import DPOConfig, DPOTrainer

    pairs = _pairs(continuation)
    tree = TreeDPOTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_llama_path),
        ref_model=AutoModelForCausalLM.from_pretrained(tiny_gpt2_path),
        args=_args(tmp_path, mask_continuation_observations=mask),
        train_dataset=pairs,
        processing_class=tiny_tokenizer,
    )
    plain_args = DPOConfig(**_arg_values(tmp_path), learning_rate=2e-5)
    plain = DPOTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_llama_path),
        ref_model=AutoModelForCausalLM.from_pretrained(tiny_gpt2_path),
        args=plain_args,
        train_dataset=pairs,
        processing_class=tiny_tokenizer,
    )
    tree_batch, plain_batch = _batch(tree), _batch(plain)
    assert torch.equal(tree_batch["input_ids"], plain_batch["input_ids"])
    with torch.no_grad():
        return (
            tree.compute_loss(tree.model, tree_batch),
            plain.compute_loss(plain.model, plain_batch),
            tree_batch,
            plain_batch,
        )


@pytest.mark.slow
def test_loss_equals_trl_dpo_with_shared_tokenizer(tmp_path, tiny_tokenizer, tiny_llama_path, tiny_gpt2_path):
    tree_loss, plain_loss, tree_batch, plain_batch = _dpo_losses(
        tmp_path, tiny_tokenizer, tiny_llama_path, tiny_gpt2_path, "step", True
    )
    # one-step continuations: the assistant mask is the whole completion, so the loss is TRL's exactly
    assert torch.equal(tree_batch["completion_mask"], plain_batch["completion_mask"])
    assert torch.allclose(tree_loss, plain_loss, atol=1e-6)
    assert math.isfinite(tree_loss.item()) and tree_loss.item() > 0


@pytest.mark.slow
def test_multistep_masking_differs_from_plain_dpo_only_when_enabled(
    tmp_path, tiny_tokenizer, tiny_llama_path, tiny_gpt2_path
):
    unmasked, plain, _, _ = _dpo_losses(tmp_path, tiny_tokenizer, tiny_llama_path, tiny_gpt2_path, "path", False)
    assert torch.allclose(unmasked, plain, atol=1e-6)
    masked, plain, tree_batch, plain_batch = _dpo_losses(
        tmp_path, tiny_tokenizer, tiny_llama_path, tiny_gpt2_path, "path", True
    )
    assert tree_batch["completion_mask"].sum() < plain_batch["completion_mask"].sum()
    assert not torch.allclose(masked, plain, atol=1e-4)


def test_loss_mask_covers_assistant_turns_only(tmp_path, tiny_tokenizer, tiny_llama):
    pairs = _pairs("path")
    trainer = TreeDPOTrainer(
        tiny_llama,
        ref_model=None,
        args=_args(tmp_path, precompute_ref_log_probs=True),
        train_dataset=pairs,
        processing_class=tiny_tokenizer,
    )
    example = next(e for e in trainer.train_dataset if len(e["chosen"]) > 1)
    batch = trainer.data_collator([example])
    ids, mask = batch["input_ids"][0], batch["completion_mask"][0]
    trained = tiny_tokenizer.decode(ids[mask.bool()])
    expected = "".join(m["content"] + "<|im_end|>\n" for m in example["chosen"] if m["role"] == "assistant")
    assert trained == expected
    observation = next(m["content"] for m in example["chosen"] if m["role"] == "user")
    assert observation not in trained
    # the observation is still in the input (as context), just not trained on
    assert observation in tiny_tokenizer.decode(ids)


def _oracle_mask(tokenizer, prompt, continuation):
    """Independent assistant mask from the project's segment-wise tokenizer."""
    messages = prompt + continuation
    n_prompt_turns = sum(m["role"] == "assistant" for m in prompt)
    oracle = tokenize_trajectory(messages, [0.0] * sum(m["role"] == "assistant" for m in messages), tokenizer)
    ids = oracle["input_ids"]
    expected = [int(a == 1 and t >= n_prompt_turns) for a, t in zip(oracle["action_mask"], oracle["turn_ids"])]
    # the template's separator after an assistant's end-of-turn token belongs to the turn here, as in TRL's
    # completion (the project's segment tokenizer counts it as context)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for i in range(1, len(ids)):
        if expected[i - 1] and ids[i - 1] == end_of_turn and tokenizer.decode([ids[i]]) == "\n":
            expected[i] = 1
    return ids, expected


def test_assistant_token_mask_matches_segment_tokenization(tiny_tokenizer):
    pair = _pairs("path")[0]
    ids, mask = assistant_token_mask(tiny_tokenizer, pair["prompt"], pair["chosen"])
    oracle_ids, expected = _oracle_mask(tiny_tokenizer, pair["prompt"], pair["chosen"])
    assert ids == oracle_ids and mask == expected
    assert 0 < sum(expected) < len(ids)


def _oracle_logp(model, tokenizer, prompt, continuation):
    ids, mask = _oracle_mask(tokenizer, prompt, continuation)
    ids = torch.tensor([ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    return sum(logprobs[t - 1, ids[0, t]].item() for t in range(1, ids.shape[1]) if mask[t])


def _oracle_count(tokenizer, prompt, continuation):
    return sum(_oracle_mask(tokenizer, prompt, continuation)[1][1:])


def test_reference_with_its_own_tokenizer(tmp_path, tiny_tokenizer, tiny_llama, small_tokenizer, foreign_gpt2_path):
    assert len(small_tokenizer) != len(tiny_tokenizer)
    ref = AutoModelForCausalLM.from_pretrained(foreign_gpt2_path)
    pairs = _pairs("path")
    args = _args(tmp_path, foreign_ref_calibration="none")
    trainer = TreeDPOTrainer(
        tiny_llama,
        ref_model=ref,
        args=args,
        train_dataset=pairs,
        processing_class=tiny_tokenizer,
        ref_processing_class=small_tokenizer,
    )
    assert trainer.args.precompute_ref_log_probs and trainer.ref_model is None
    oracle_ref = AutoModelForCausalLM.from_pretrained(foreign_gpt2_path)
    for row in trainer.train_dataset:
        assert math.isclose(
            row["ref_chosen_logps"],
            _oracle_logp(oracle_ref, small_tokenizer, row["prompt"], row["chosen"]),
            rel_tol=1e-4,
            abs_tol=1e-3,
        )
        assert math.isclose(
            row["ref_rejected_logps"],
            _oracle_logp(oracle_ref, small_tokenizer, row["prompt"], row["rejected"]),
            rel_tol=1e-4,
            abs_tol=1e-3,
        )
    # the policy's own tokenization is untouched: its ids decode with the policy tokenizer
    assert tiny_tokenizer.decode(trainer.train_dataset[0]["prompt_ids"]).startswith("<|im_start|>system")


def test_calibrate_reference_logps_by_hand():
    # per-token reference -2 and -4 (mean -10/3); policy mean -12/9 = -4/3: shift +2 per token
    assert calibrate_reference_logps([-10.0, -40.0], [5, 10], [-6.0, -6.0], [6, 3]) == pytest.approx([0.0, -6.0])
    # a reference already at the policy's level and token count is unchanged
    assert calibrate_reference_logps([-3.0, -9.0], [3, 3], [-5.0, -7.0], [3, 3]) == pytest.approx([-3.0, -9.0])
    # truncation left the first continuation no reference token: the reference's average (-2) stands in
    assert calibrate_reference_logps([0.0, -4.0], [0, 2], [-3.0, -3.0], [1, 3]) == pytest.approx([-1.5, -4.5])
    with pytest.raises(ValueError, match="no scored tokens"):
        calibrate_reference_logps([0.0], [0], [-1.0], [1])


def test_foreign_reference_is_calibrated_to_the_policy(
    tmp_path, tiny_tokenizer, tiny_llama_path, small_tokenizer, foreign_gpt2_path
):
    policy = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    ref = AutoModelForCausalLM.from_pretrained(foreign_gpt2_path)
    trainer = TreeDPOTrainer(
        policy,
        ref_model=ref,
        args=_args(tmp_path),
        train_dataset=_pairs("path"),
        processing_class=tiny_tokenizer,
        ref_processing_class=small_tokenizer,
    )
    assert trainer.args.foreign_ref_calibration == "per_token"
    oracle_policy = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    ref_sums, ref_counts, policy_sums, policy_counts = [], [], [], []
    for row in trainer.train_dataset:
        for side in ("chosen", "rejected"):
            ref_sums.append(_oracle_logp(ref, small_tokenizer, row["prompt"], row[side]))
            ref_counts.append(_oracle_count(small_tokenizer, row["prompt"], row[side]))
            policy_sums.append(_oracle_logp(oracle_policy, tiny_tokenizer, row["prompt"], row[side]))
            policy_counts.append(_oracle_count(tiny_tokenizer, row["prompt"], row[side]))
    assert ref_counts != policy_counts  # the two tokenizers cut the text differently
    expected = calibrate_reference_logps(ref_sums, ref_counts, policy_sums, policy_counts)
    stored = [v for row in trainer.train_dataset for v in (row["ref_chosen_logps"], row["ref_rejected_logps"])]
    assert stored == pytest.approx(expected, rel=1e-4, abs=1e-3)
    # the policy's log-probs against calibrated ones: mean gap per policy token is 0 over the dataset,
    # where the raw reference sat at another level entirely
    gap = sum(p - r for p, r in zip(policy_sums, stored)) / sum(policy_counts)
    raw_gap = (sum(policy_sums) - sum(ref_sums)) / sum(policy_counts)
    assert abs(gap) < 0.25 * abs(raw_gap)


def test_pair_no_effect_pattern_reaches_the_mining(tmp_path, tiny_tokenizer, tiny_llama):
    # "go to kitchen" is answered "stove": called a no-effect answer here, its branch is never chosen
    args = _args(tmp_path, pair_no_effect_pattern="^stove$")
    trainer = TreeDPOTrainer(tiny_llama, args=args, forest=_forest(), processing_class=tiny_tokenizer)
    options = dict(continuation=args.pair_continuation, pairing=args.pair_strategy, log=False)
    expected = mine_pairs(_forest(), no_effect_pattern="^stove$", **options)
    plain = mine_pairs(_forest(), **options)
    assert [p["chosen"] for p in expected.pairs] != [p["chosen"] for p in plain.pairs]
    assert [p["chosen"] for p in trainer.pair_mining.pairs] == [p["chosen"] for p in expected.pairs]


@pytest.mark.slow
def test_train_save_and_reload(tmp_path, tiny_tokenizer, tiny_llama, small_tokenizer, foreign_gpt2_path):
    ref = AutoModelForCausalLM.from_pretrained(foreign_gpt2_path)
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    trainer = TreeDPOTrainer(
        tiny_llama,
        ref_model=ref,
        args=_args(tmp_path, max_steps=3, learning_rate=1e-3),
        forest=_forest(),
        processing_class=tiny_tokenizer,
        ref_processing_class=small_tokenizer,
    )
    assert trainer.pair_mining.counts == {"t": len(trainer.train_dataset)}
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    out = tmp_path / "saved"
    trainer.save_model(str(out))
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    trained = trainer.model.state_dict()
    assert any(not torch.equal(before[k], trained[k]) for k in before)
    for key, value in reloaded.state_dict().items():
        assert torch.equal(value, trained[key]), key


@pytest.mark.slow
def test_lora_adapter_saves_and_loads(tmp_path, tiny_tokenizer, tiny_llama_path, tiny_gpt2_path):
    from peft import LoraConfig, PeftModel

    trainer = TreeDPOTrainer(
        AutoModelForCausalLM.from_pretrained(tiny_llama_path),
        ref_model=AutoModelForCausalLM.from_pretrained(tiny_gpt2_path),
        args=_args(tmp_path, max_steps=2, learning_rate=1e-2),
        train_dataset=_pairs("step"),
        processing_class=tiny_tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    trainer.train()
    out = tmp_path / "adapter"
    trainer.save_model(str(out))
    assert (out / "adapter_config.json").exists()
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_path), out)
    ids = torch.tensor([[1, 5, 9, 20]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, trainer.model(ids).logits, atol=1e-5)


def test_zero_pairs_is_a_clear_error(tmp_path, tiny_tokenizer, tiny_llama):
    single = build_forest(
        [trajectory("solo", [(INSTR, "", "look around")], 1.0, id="x")], embedder=FakeEmbedder(), show_progress=False
    )
    with pytest.raises(NoPreferencePairsError, match="No divergence point"):
        TreeDPOTrainer(tiny_llama, args=_args(tmp_path), forest=single, processing_class=tiny_tokenizer)
    empty = _pairs("step").select([])
    with pytest.raises(NoPreferencePairsError, match="empty"):
        TreeDPOTrainer(tiny_llama, args=_args(tmp_path), train_dataset=empty, processing_class=tiny_tokenizer)


def test_pairs_whose_prompt_fills_max_length_are_reported(tmp_path, tiny_tokenizer, tiny_llama, caplog):
    pairs = _pairs("step")
    full = TreeDPOTrainer(tiny_llama, args=_args(tmp_path), train_dataset=pairs, processing_class=tiny_tokenizer)
    lengths = sorted(len(row["prompt_ids"]) for row in full.train_dataset)
    assert len(lengths) == len(pairs) and lengths[0] < lengths[-1]
    with caplog.at_level("WARNING", logger="trainers.tree_dpo_trainer"):
        cut = TreeDPOTrainer(
            tiny_llama,
            args=_args(tmp_path, max_length=lengths[-1]),
            train_dataset=pairs,
            processing_class=tiny_tokenizer,
        )
    dropped = sum(n >= lengths[-1] for n in lengths)
    assert len(cut.train_dataset) == len(pairs) - dropped
    assert f"{dropped} of {len(pairs)} train pairs dropped" in caplog.text
    with pytest.raises(NoPreferencePairsError, match=f"{len(pairs)} of {len(pairs)} train pairs dropped"):
        TreeDPOTrainer(
            tiny_llama,
            args=_args(tmp_path, max_length=lengths[0]),
            train_dataset=pairs,
            processing_class=tiny_tokenizer,
        )


def test_calibration_survives_a_reference_truncated_to_no_tokens(
    tmp_path, tiny_tokenizer, tiny_llama, small_tokenizer, foreign_gpt2_path
):
    # another tokenizer can need more tokens for the same prefix: cut the reference's sequences at the
    # start of the latest continuation, so that one has nothing left to score (the WebShop case)
    pairs = _pairs("path")
    starts = [
        assistant_token_mask(small_tokenizer, row["prompt"], row[side])[1].index(1)
        for row in pairs
        for side in ("chosen", "rejected")
    ]
    assert min(starts) < max(starts)
    ref = AutoModelForCausalLM.from_pretrained(foreign_gpt2_path)
    trainer = TreeDPOTrainer(
        tiny_llama,
        ref_model=ref,
        args=_args(tmp_path, ref_max_length=max(starts)),
        train_dataset=pairs,
        processing_class=tiny_tokenizer,
        ref_processing_class=small_tokenizer,
    )
    values = [v for row in trainer.train_dataset for v in (row["ref_chosen_logps"], row["ref_rejected_logps"])]
    assert len(values) == 2 * len(pairs) and all(math.isfinite(v) and v < 0 for v in values)


def _hand_chosen_nll(model, batch):
    """Mean -log p of the chosen completion tokens (the first half of the batch), from the logits."""
    ids, mask = batch["input_ids"], batch["completion_mask"]
    half = ids.shape[0] // 2
    with torch.no_grad():
        logits = model(input_ids=ids[:half], attention_mask=batch["attention_mask"][:half]).logits.float()
    logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:half, 1:, None])[..., 0]
    return -logps[mask[:half, 1:].bool()].mean().item()


def test_chosen_nll_weight_reaches_trl_loss(tmp_path, tiny_tokenizer, tiny_llama_path, tiny_gpt2_path):
    pairs = _pairs("path")

    def trainer(weight):
        return TreeDPOTrainer(
            AutoModelForCausalLM.from_pretrained(tiny_llama_path),
            ref_model=AutoModelForCausalLM.from_pretrained(tiny_gpt2_path),
            args=_args(tmp_path, chosen_nll_weight=weight),
            train_dataset=pairs,
            processing_class=tiny_tokenizer,
        )

    plain, nll = trainer(0.0), trainer(0.5)
    assert (plain.loss_types, plain.loss_weights) == (["sigmoid"], [1.0])
    assert (nll.loss_types, nll.loss_weights) == (["sigmoid", "sft"], [1.0, 0.5])
    batch = _batch(nll)
    with torch.no_grad():
        difference = nll.compute_loss(nll.model, batch) - plain.compute_loss(plain.model, batch)
    # the added term is 0.5 x the NLL of the chosen continuation's assistant tokens, observations masked
    assert difference.item() == pytest.approx(0.5 * _hand_chosen_nll(nll.model, batch), rel=1e-4)


def test_config_validates_with_field_names(tmp_path):
    for bad, field in [
        (dict(beta=float("nan")), "beta"),
        (dict(chosen_nll_weight=-1.0), "chosen_nll_weight"),
        (dict(pair_margin=float("inf")), "pair_margin"),
        (dict(pair_margin=1.5), "pair_margin"),
        (dict(pair_strategy="random"), "pair_strategy"),
        (dict(ref_max_length=0), "ref_max_length"),
        (dict(foreign_ref_calibration="exact"), "foreign_ref_calibration"),
    ]:
        with pytest.raises(ValueError, match=field):
            _args(tmp_path, **bad)
    # an NLL weight next to an explicit 'sft' loss of another weight is ambiguous
    with pytest.raises(ValueError, match="one place"):
        _args(tmp_path, chosen_nll_weight=0.5, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 2.0])
    # a config rebuilt from its own values keeps one NLL term
    config = _args(tmp_path, chosen_nll_weight=0.5)
    rebuilt = _args(tmp_path, chosen_nll_weight=0.5, loss_type=config.loss_type, loss_weights=config.loss_weights)
    assert (rebuilt.loss_type, rebuilt.loss_weights) == (["sigmoid", "sft"], [1.0, 0.5])


def test_foreign_reference_scores_its_own_rendering_of_the_same_messages(
    tmp_path, tiny_tokenizer, tiny_llama, small_tokenizer, foreign_gpt2_path
):
    """The reference sees exactly its own chat-template text of the pair's messages, in its own token ids."""
    ref = AutoModelForCausalLM.from_pretrained(foreign_gpt2_path)
    seen = []
    ref.register_forward_pre_hook(
        lambda module, args, kwargs: seen.extend(kwargs["input_ids"].tolist()), with_kwargs=True
    )
    trainer = TreeDPOTrainer(
        tiny_llama,
        ref_model=ref,
        args=_args(tmp_path, foreign_ref_calibration="none"),
        train_dataset=_pairs("path"),
        processing_class=tiny_tokenizer,
        ref_processing_class=small_tokenizer,
    )
    expected = [
        small_tokenizer.apply_chat_template(row["prompt"] + row[side], tokenize=False)
        for row in trainer.train_dataset
        for side in ("chosen", "rejected")
    ]
    pad = small_tokenizer.pad_token_id
    texts = [small_tokenizer.decode([t for t in ids if t != pad]) for ids in seen]
    assert sorted(texts) == sorted(expected)
    # and the policy's sequences are its own rendering of the same messages
    row = trainer.train_dataset[0]
    policy_text = tiny_tokenizer.decode(row["prompt_ids"] + row["chosen_ids"])
    assert policy_text == tiny_tokenizer.apply_chat_template(row["prompt"] + row["chosen"], tokenize=False)


def test_checkpoints_are_staged_and_sealed(tmp_path, tiny_tokenizer, tiny_llama):
    from trainers.checkpointing import COMPLETE_MARKER, latest_complete_checkpoint

    args = _args(tmp_path, max_steps=2, save_strategy="steps", save_steps=1, save_total_limit=1)
    TreeDPOTrainer(tiny_llama, args=args, forest=_forest(), processing_class=tiny_tokenizer).train()
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith((".", "checkpoint"))) == ["checkpoint-2"]
    assert (out / "checkpoint-2" / COMPLETE_MARKER).is_file()
    assert latest_complete_checkpoint(out) == out / "checkpoint-2"
