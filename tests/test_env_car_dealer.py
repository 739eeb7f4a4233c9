import pytest

from trainers.envs import Task, TextEnv, make_env
from trainers.envs.car_dealer import (
    BRANDS,
    CAR_TYPES,
    FEATURES,
    FIRST_OBSERVATION,
    PERSONALITIES,
    CarDealerEnv,
    is_acceptance,
    parse_offer,
    parse_prices,
)

# BOOST appendix E.2
PAPER_BRANDS = [
    "Volkswagen",
    "Lexus",
    "Ford",
    "Mazda",
    "Hyundai",
    "Toyota",
    "Mercedes-Benz",
    "BMW",
    "Audi",
    "Subaru",
    "Honda",
    "Porsche",
    "Tesla",
]


def buyer(brand="Toyota", **overrides):
    spec = {
        "brand": brand,
        "preferred_type": "SUV",
        "preferred_features": ["heated seats", "sunroof"],
        "personality": "polite",
        "budget": 30_000,
        "target_price": 30_000,
        "opening_offer": 25_000,
        "msrp": 34_000,
        "reveals_budget": False,
    }
    spec.update(overrides)
    return Task(task_id=f"{brand}|test", category=brand, spec=spec)


def run(env, task, actions, seed=0):
    env.reset(task, seed=seed)
    results = []
    for action in actions:
        results.append(env.step(action))
        if results[-1].done:
            break
    return results


# ---------------------------------------------------------------------------- prices


@pytest.mark.parametrize(
    "text, expected",
    [
        ("$32,500", [32_500]),
        ("It's yours for $32,500.", [32_500]),
        ("32500", [32_500]),
        ("$32500 even", [32_500]),
        ("32.5k", [32_500]),
        ("$33K", [33_000]),
        ("32 grand", [32_000]),
        ("32 thousand", [32_000]),
        ("45 thousand dollars", [45_000]),
        ("thirty two thousand", [32_000]),
        ("thirty-two thousand five hundred dollars", [32_500]),
        ("twenty five k", [25_000]),
        ("$1.2 million", [1_200_000]),
        ("USD 28,000", [28_000]),
        ("28,000 dollars", [28_000]),
        ("A 2024 model with 30,000 miles for $28,900", [28_900]),
        ("It gets 32 mpg and has 300 hp", []),
        ("I'll take $2,000 off", []),
        ("only $450 a month", []),
        ("$5,000 down and the rest financed", []),
        ("Let me save you 3,000 dollars", []),
        ("Hello, how are you?", []),
        ("", []),
        ("MSRP is $40,000 but for you $36,000", [40_000, 36_000]),
    ],
)
def test_parse_prices(text, expected):
    assert parse_prices(text) == [float(x) for x in expected]


def test_parse_offer_takes_lowest_plausible_price():
    assert parse_offer("MSRP is $40,000 but for you $36,000") == 36_000
    # a discount amount that slips through the unit filters is below the plausibility floor
    assert parse_offer("$36,000, that's $4,000 below sticker", minimum=8_000) == 36_000
    assert parse_offer("no numbers here") is None


def test_acceptance_phrases():
    for text in ["Deal.", "Okay, it's a deal!", "Agreed.", "You got it.", "Sounds good, I accept.", "Sold!"]:
        assert is_acceptance(text), text
    for text in ["No deal.", "I can't accept that.", "I won't do that.", "Let me check with my manager."]:
        assert not is_acceptance(text), text


# ---------------------------------------------------------------------------- tasks


def test_tasks_cover_the_paper_brands_deterministically():
    env = make_env("car_dealer")
    assert isinstance(env, TextEnv) and env.name == "car_dealer" and env.max_steps == 25
    tasks = env.tasks()
    assert list(BRANDS) == PAPER_BRANDS
    assert len(tasks) == 130 and [t.category for t in tasks[::10]] == PAPER_BRANDS
    assert [(t.task_id, t.spec) for t in tasks] == [(t.task_id, t.spec) for t in CarDealerEnv().tasks()]
    assert [t.spec for t in CarDealerEnv(task_seed=1).tasks()] != [t.spec for t in tasks]
    for task in tasks:
        spec = task.spec
        assert spec["brand"] == task.category and spec["preferred_brands"].endswith(task.category)
        assert spec["preferred_type"] in CAR_TYPES and spec["personality"] in PERSONALITIES
        assert 1 <= len(spec["preferred_features"]) <= 4 and set(spec["preferred_features"]) <= set(FEATURES)
        assert spec["opening_offer"] < spec["target_price"] == spec["budget"] <= spec["msrp"] * 1.02 + 500
    porsche = [t.spec["msrp"] for t in tasks if t.category == "Porsche"]
    hyundai = [t.spec["msrp"] for t in tasks if t.category == "Hyundai"]
    assert min(porsche) > max(hyundai)  # the brand sets the price range
    assert "50 lines" in env.system_prompt
    with pytest.raises(ValueError, match="no 'test' split"):
        env.tasks("test")


# ---------------------------------------------------------------------------- rewards


def test_quick_sale_rewards_by_hand():
    task = buyer()
    actions = ["Welcome! What are you looking for?", "I have a Toyota SUV with heated seats and a sunroof for $29,500."]
    boost = run(CarDealerEnv(), task, actions)
    assert [r.done for r in boost] == [False, True]
    final = boost[-1]
    # 4 lines spoken (seller, buyer, seller, buyer) of 50
    assert (final.reward, final.info["success"], final.info["sale_price"], final.info["turns"]) == (
        46.0,
        True,
        29_500.0,
        4,
    )
    assert boost[0].reward == 0.0
    lmrl = run(CarDealerEnv(reward_mode="lmrl"), task, actions)[-1]
    assert lmrl.reward == pytest.approx(29_500 / ((30_000 + 34_000) / 2))
    revenue = run(CarDealerEnv(reward_mode="lmrl_revenue"), task, actions)[-1]
    assert revenue.reward == pytest.approx(29.5)
    with pytest.raises(ValueError, match="reward_mode"):
        CarDealerEnv(reward_mode="profit")


def test_counter_offers_rise_toward_target_then_buyer_walks_away():
    env = CarDealerEnv(max_failed_rounds=6)
    results = run(env, buyer(), ["Hi there!"] + ["This Toyota SUV is $34,000, final answer."] * 10)
    assert len(results) == 7 and results[-1].done
    counters = [r.info["counter_offer"] for r in results[1:-1]]
    assert counters[0] == 25_000  # the opening anchor
    assert counters == sorted(counters) and counters[-1] < 30_000 and len(set(counters)) == 5
    for r, counter in zip(results[1:-1], counters):
        assert f"${counter:,.0f}" in r.observation
    last = results[-1]
    assert (last.info["outcome"], last.info["success"], last.reward, last.info["failed_rounds"]) == (
        "walk_away_price",
        False,
        0.0,
        6,
    )
    lmrl = run(CarDealerEnv(reward_mode="lmrl"), buyer(), ["Hi there!"] + ["It's $34,000."] * 10)[-1]
    assert lmrl.reward == pytest.approx(-(30_000 - 34_000) / 34_000)


def test_seller_accepts_counter_offer():
    results = run(CarDealerEnv(), buyer(), ["Hello!", "The Toyota SUV is $33,000.", "Deal, you've got it."])
    assert results[1].info["counter_offer"] == 25_000 and not results[1].done
    final = results[-1]
    assert final.done and final.info["sale_price"] == 25_000 and final.reward == 44.0


def test_offer_at_target_is_accepted_and_above_is_countered():
    at_target = run(CarDealerEnv(), buyer(), ["Hello!", "Thirty thousand dollars for this Toyota."])[-1]
    assert at_target.info["success"] and at_target.info["sale_price"] == 30_000
    above = run(CarDealerEnv(), buyer(), ["Hello!", "$30,100 for this Toyota."])[-1]
    assert not above.done and above.info["failed_rounds"] == 1


def test_first_message_offer_without_brand_is_not_accepted_blind():
    blind = run(CarDealerEnv(), buyer(), ["I can sell you a car for $20,000."])[0]
    assert not blind.done and "Toyota" in blind.observation
    named = run(CarDealerEnv(), buyer(), ["Welcome! A Toyota SUV for $20,000?"])[0]
    assert named.done and named.reward == 48.0


def test_wrong_brand_or_type_repeatedly_makes_buyer_leave():
    results = run(
        CarDealerEnv(max_mismatches=3), buyer(), ["How about a Honda?", "A great BMW then?", "What about a sedan?"]
    )
    assert [r.info["mismatches"] for r in results] == [1, 2, 3]
    assert "Toyota" in results[0].observation or "toyota" in results[0].observation.lower()
    assert results[-1].done and results[-1].info["outcome"] == "walk_away_mismatch" and results[-1].reward == 0.0
    # an offer for the wrong brand is not a sale even when cheap
    wrong = run(CarDealerEnv(), buyer(), ["Hi!", "A Honda SUV for $20,000."])[-1]
    assert not wrong.done and wrong.info["mismatches"] == 1


def test_invalid_actions_never_crash_and_count():
    env = CarDealerEnv()
    results = run(env, buyer(), ["", "!!!", "asdf qwer zxcv", "   ", "Thought: hmm\nAction: "])
    assert all(not r.done and isinstance(r.observation, str) and r.observation for r in results)
    assert [r.info["turns"] for r in results] == [2, 4, 6, 8, 10]


def test_episode_ends_at_the_turn_cap():
    env = CarDealerEnv()
    results = run(env, buyer(), ["Let me tell you about our dealership."] * 30)
    assert len(results) == 25 and [r.done for r in results] == [False] * 24 + [True]
    assert results[-1].info["outcome"] == "max_turns" and results[-1].info["turns"] == 50 and results[-1].reward == 0.0
    with pytest.raises(RuntimeError, match="is over"):
        env.step("Deal?")
    short = run(CarDealerEnv(max_turns=6), buyer(), ["Hello."] * 5)
    assert len(short) == 3 and short[-1].done


def test_seeded_episodes_are_deterministic():
    env = CarDealerEnv()
    task = env.tasks()[17]
    script = ["Hello!", f"This {task.category} is ${task.spec['msrp']:,}.", "Okay, $1,000 less then.", "Deal."]
    first = [tuple(r)[:3] for r in run(env, task, script, seed=3)]
    again = [tuple(r)[:3] for r in run(CarDealerEnv(), task, script, seed=3)]
    assert first == again
    assert env.reset(task, seed=3) == FIRST_OBSERVATION
    env.reset(None, seed=11)
    picked = env.lmrl_record()["buyer_info"]
    env.reset(None, seed=11)
    assert env.lmrl_record()["buyer_info"] == picked


@pytest.mark.slow  # imports `datasets` through the converters
def test_lmrl_record_converts_with_the_same_reward():
    from trainers.data.converters import convert_car_dealer

    env = CarDealerEnv()
    results = run(env, buyer(), ["Hello!", "The Toyota SUV is $33,000.", "Deal."])
    record = env.lmrl_record()
    assert record["output"] == {"car_bought": True, "msrp": 34_000, "buy_price": 25_000}
    assert record["buyer_info"]["preferred_brands"] == "a Toyota"
    row = convert_car_dealer([record])[0]
    assert row["rewards"][-1] == results[-1].reward == 44.0
    assert row["category"] == "Toyota"


def test_luxury_and_electric_buyers_accept_any_body_style():
    luxury = run(CarDealerEnv(), buyer(preferred_type="luxury"), ["Hello!", "A Toyota sedan, top trim, for $29,000."])[
        -1
    ]
    assert luxury.done and luxury.info["mismatches"] == 0
    suv = run(CarDealerEnv(), buyer(preferred_type="SUV"), ["Hello!", "A luxury Toyota SUV for $29,000."])[-1]
    assert suv.done and suv.info["success"]
    truck = run(CarDealerEnv(), buyer(preferred_type="SUV"), ["Hello!", "A Toyota truck for $29,000."])[-1]
    assert not truck.done and truck.info["mismatches"] == 1
