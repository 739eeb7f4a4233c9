"""Self-play synthetic generation: seeding, termination, rewards per environment, schema rows."""

import pytest

from trainers.data.schema import make_trajectory, metadata_of, validate_trajectories
from trainers.synthetic import SyntheticConfig, SyntheticTrajectoryGenerator, clean_generation, seed_prefix
from trainers.synthetic_prompts import get_spec, webshop_rule_score


def _tq_row(i, word="whisk"):
    return make_trajectory(
        [
            {"role": "system", "content": "Play twenty questions."},
            {"role": "user", "content": "Questions:"},
            {"role": "assistant", "content": "Is it alive?"},
            {"role": "user", "content": "No."},
            {"role": "assistant", "content": f"Is it a {word}?"},
            {"role": "user", "content": "Yes."},
        ],
        [0.0, 18.0],
        id=f"real-{i}",
        task_id=word,
        category="Kitchen Tools",
        metadata={"word": [word]},
    )


class Scripted(SyntheticTrajectoryGenerator):
    """Replaces the LM by scripted turns so that the rules and bookkeeping are checked exactly."""

    def __init__(self, env_name, env_turns, agent_turns, **kwargs):
        super().__init__(
            model=_NoModel(),
            tokenizer=None,
            config=SyntheticConfig(env_name=env_name, **kwargs),
            generator_id="scripted",
        )
        self.env_turns, self.agent_turns = list(env_turns), list(agent_turns)

    def _env_prompt(self, episode):
        return "env"

    def _agent_prompt(self, episode):
        return "agent"

    def _generate(self, prompts, max_new_tokens):
        source = self.env_turns if prompts[0] == "env" else self.agent_turns
        return [source.pop(0) for _ in prompts]


class _NoModel:
    training = False

    def eval(self):
        return self

    def train(self, mode=True):
        return self


def test_twenty_questions_reward_is_questions_remaining():
    gen = Scripted("twenty_questions", ["No.", "No.", "Yes."], ["Is it big?", "Is it a whisk?"])
    ds = gen.generate([_tq_row(0)], show_progress=False)
    row = ds[0]
    assert row["source"] == "synthetic" and row["id"] == "real-0-syn"
    assert metadata_of(row)["parent_id"] == "real-0"
    assert row["category"] == "Kitchen Tools" and row["task_id"] == "whisk"
    # seed kept: system prompt, first observation, first action
    assert row["messages"][:3] == _tq_row(0)["messages"][:3]
    assert [m["content"] for m in row["messages"] if m["role"] == "assistant"] == [
        "Is it alive?",
        "Is it big?",
        "Is it a whisk?",
    ]
    assert row["rewards"] == [0.0, 0.0, 17.0]  # 20 - 3 questions asked
    assert row["success"] and row["done"]
    validate_trajectories(ds)


def test_twenty_questions_yes_to_a_non_guess_does_not_end():
    gen = Scripted("twenty_questions", ["Yes."] * 3, ["Is it a tool?", "Is it metal?"], max_steps=3)
    row = gen.generate([_tq_row(0)], show_progress=False)[0]
    assert row["rewards"] == [0.0, 0.0, 0.0] and not row["success"]
    assert metadata_of(row)["terminated_by"] == "step cap"


def test_car_dealer_agreement_with_price_and_walk_away():
    seed = make_trajectory(
        [{"role": "user", "content": "I want a Honda."}, {"role": "assistant", "content": "The Civic is $25,000."}],
        [0.0],
        id="cd",
        category="Honda",
        metadata={"buyer_info": {"budget": 24000, "preferred_brands": "Honda"}},
    )
    deal = Scripted(
        "car_dealer", ["Too much. $23,000?", "Deal, I'll buy it for $24,000."], ["How about $24,000?"]
    ).generate([seed], show_progress=False)[0]
    # lines so far: buyer opening + 2 seller + 2 buyer = 5; 50 - 5 remaining
    assert deal["rewards"] == [0.0, 45.0] and deal["success"]
    assert metadata_of(deal)["price"] == 24000.0
    assert "budget: 24000" in metadata_of(deal)["goal"]
    walk = Scripted("car_dealer", ["No deal, I'm walking away."], []).generate([seed], show_progress=False)[0]
    assert walk["rewards"] == [0.0] and not walk["success"]
    assert metadata_of(walk)["terminated_by"] == "buyer walked away"


def test_webshop_buy_now_scored_by_rule():
    instruction = "i need a blue yoga mat that is extra thick, and price lower than 40.00 dollars"
    seed = make_trajectory(
        [
            {"role": "user", "content": f"WebShop [SEP] Instruction: [SEP] {instruction} [SEP] Search"},
            {"role": "assistant", "content": "Action: search[blue yoga mat]"},
        ],
        [0.0],
        id="ws",
    )
    results = "[Back to Search] [SEP] B07K4Q2LMN [SEP] Thick Yoga Mat [SEP] $25.99"
    page = "[< Prev] [SEP] color [SEP] blue [SEP] red [SEP] Extra Thick Yoga Mat [SEP] Price: $25.99 [SEP] Buy Now"
    good = Scripted(
        "webshop",
        [results, page, "You have clicked blue."],
        ["Action: click[B07K4Q2LMN]", "Action: click[blue]", "Action: click[Buy Now]"],
    ).generate([seed], show_progress=False)[0]
    assert good["rewards"] == [0.0, 0.0, 0.0, 1.0] and good["success"]
    cheap_page = page.replace("Extra Thick ", "").replace("$25.99", "$55.00")
    bad = Scripted("webshop", [results, cheap_page], ["Action: click[B07K4Q2LMN]", "Action: click[Buy Now]"]).generate(
        [seed], show_progress=False
    )[0]
    assert 0.0 < bad["rewards"][-1] < 1.0 and not bad["success"]
    assert webshop_rule_score(instruction, "nothing relevant $99", []) == 0.0


def test_seed_needs_observation_and_action():
    with pytest.raises(ValueError, match="row 3 .*first action"):
        seed_prefix({"id": "x", "messages": [{"role": "user", "content": "hi"}]}, 3)
    assert clean_generation(" Is it red?\nEnvironment: No.") == "Is it red?"
    with pytest.raises(ValueError, match="no self-play prompts"):
        get_spec("chess")


@pytest.mark.slow
def test_tiny_model_generation_is_seeded_and_respects_step_cap(tiny_llama, tiny_tokenizer):
    rows = [_tq_row(i, w) for i, w in enumerate(["whisk", "piano", "rake"])]
    config = SyntheticConfig(
        env_name="twenty_questions",
        max_steps=3,
        max_new_tokens_agent=6,
        max_new_tokens_env=4,
        batch_size=3,
        seed=7,
        max_prompt_tokens=128,
    )
    first = SyntheticTrajectoryGenerator(tiny_llama, tiny_tokenizer, config).generate(rows, show_progress=False)
    second = SyntheticTrajectoryGenerator(tiny_llama, tiny_tokenizer, config).generate(rows, show_progress=False)
    assert first.to_list() == second.to_list()
    other = SyntheticTrajectoryGenerator(
        tiny_llama, tiny_tokenizer, SyntheticConfig(**{**config.__dict__, "seed": 8})
    ).generate(rows, show_progress=False)
    assert other.to_list() != first.to_list()
    assert len(first) == 3
    for row in first:
        n_actions = sum(m["role"] == "assistant" for m in row["messages"])
        assert 1 <= n_actions <= 3 and len(row["rewards"]) == n_actions and row["done"]
        assert row["source"] == "synthetic"
    validate_trajectories(first)
