"""WebShop environment: pages, actions, search, paging, reward, determinism, original file format."""

from __future__ import annotations

import json

import pytest

from trainers.envs import Task, TextEnv, make_env
from trainers.envs.webshop import (
    WEBSHOP_CATEGORIES,
    Goal,
    Product,
    WebShopConfig,
    WebShopEnv,
    build_catalog,
    get_reward,
    normalize_color,
    title_nouns,
    type_reward,
)
from trainers.envs.webshop.pages import item_page, results_page, search_page

# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def env():
    return WebShopEnv()  # the default built-in catalog (3,000 items)


@pytest.fixture
def small_env():
    return WebShopEnv(num_products=360, seed=3)


def _product(**overrides) -> Product:
    fields = dict(
        asin="B000VOHH8I",
        title="L'eau D'issey By Issey Miyake for MenEau De Toilette Spray, 6.7 Fl Oz Bottle",
        category="Beauty & Personal Care – Fragrance",
        product_category="Beauty & Personal Care › Fragrance › Men's › Eau de Toilette",
        query="eau de toilette",
        attributes=["long lasting", "travel size"],
        options={"size": ["2.5 fl oz", "6.76 fl oz (pack of 1)"]},
        pricing=[64.98],
        price=64.98,
        description="A fresh aquatic fragrance.",
        bullet_points=["Spray bottle"],
    )
    fields.update(overrides)
    return Product(**fields)


def _goal(**overrides) -> Goal:
    fields = dict(
        asin="B000VOHH8I",
        instruction_text=EXAMPLE_INSTRUCTION,
        attributes=["long lasting", "travel size"],
        goal_options=["6.76 fl oz (pack of 1)"],
        price_upper=100.0,
        query="eau de toilette",
        name="L'eau D'issey By Issey Miyake for MenEau De Toilette Spray, 6.7 Fl Oz Bottle",
        product_category="Beauty & Personal Care › Fragrance › Men's › Eau de Toilette",
        category="Beauty & Personal Care – Fragrance",
    )
    fields.update(overrides)
    return Goal(**fields)


def _visible_page_with(env, asin, max_pages=5):
    for _ in range(max_pages):
        if asin.lower() in env.available_actions()["clickables"]:
            return True
        if "next >" not in env.available_actions()["clickables"]:
            return False
        env.step("click[Next >]")
    return asin.lower() in env.available_actions()["clickables"]


def _oracle_episode(env, task):
    env.reset(task)
    goal = env.goal
    env.step(f"search[{goal.instruction_text}]")
    assert _visible_page_with(env, goal.asin), f"target {goal.asin} not in the first results pages"
    env.step(f"click[{goal.asin}]")
    for value in goal.goal_options:
        env.step(f"click[{value}]")
    return env.step("click[Buy Now]")


# ---------------------------------------------------------------------------------------------
# protocol, tasks, determinism


def test_registered_env_follows_protocol_and_enumerates_tasks(env):
    made = make_env("webshop", num_products=360)
    assert isinstance(made, TextEnv) and made.name == "webshop" and made.max_steps == 15
    tasks = env.tasks()
    assert len(tasks) == 3000
    assert len({t.task_id for t in tasks}) == 3000
    assert {t.category for t in tasks} == set(WEBSHOP_CATEGORIES)
    assert len(WEBSHOP_CATEGORIES) == 36
    assert [len(env.tasks(s)) for s in ("train", "dev", "test")] == [1500, 1000, 500]
    assert env.tasks("validation") == env.tasks("dev")
    assert all(t.split == "test" for t in env.tasks("test"))
    spec = tasks[0].spec
    assert spec["instruction_text"].endswith(f"and price lower than {spec['price_upper']:.2f} dollars")
    assert spec["asin"] in env.catalog
    with pytest.raises(ValueError, match="unknown WebShop split"):
        env.tasks("holdout")


def test_catalog_and_tasks_are_deterministic_under_a_seed():
    a, b, c = build_catalog(400, 5), WebShopEnv(num_products=400, seed=5), WebShopEnv(num_products=400, seed=6)
    build_catalog.cache_clear()  # rebuild from scratch: equality must not come from the cache
    a2 = build_catalog(400, 5)
    assert [(p.asin, p.title, p.price, p.options) for p in a.products] == [
        (p.asin, p.title, p.price, p.options) for p in a2.products
    ]
    assert [t.spec for t in b.tasks()] == [t.spec for t in WebShopEnv(num_products=400, seed=5).tasks()]
    assert [p.asin for p in b.catalog.products] != [p.asin for p in c.catalog.products]
    assert [t.spec["instruction_text"] for t in b.tasks()] != [t.spec["instruction_text"] for t in c.tasks()]
    # one episode replays identically
    actions = ["search[long lasting eau de parfum]", "click[Next >]", "click[< Prev]", "click[Back to Search]"]
    runs = []
    for _ in range(2):
        e = WebShopEnv(num_products=400, seed=5)
        observations = [e.reset(e.tasks()[7])] + [e.step(a).observation for a in actions]
        runs.append(observations)
    assert runs[0] == runs[1]


def test_reset_accepts_a_task_from_elsewhere_and_rejects_unknown_targets(small_env):
    task = small_env.tasks()[3]
    copy = Task(task.task_id, task.category, dict(task.spec))
    assert small_env.reset(copy) == small_env.reset(task.task_id) == small_env.reset(3)
    bad = Task("x", "c", {**task.spec, "asin": "B0NOTHERE0"})
    with pytest.raises(ValueError, match="B0NOTHERE0"):
        small_env.reset(bad)


# ---------------------------------------------------------------------------------------------
# page format: the published example episode


EXAMPLE_INSTRUCTION = "i need a long lasting 6.76 fl oz bottle of l'eau d'issey, and price lower than 100.00 dollars"
EXAMPLE_SEARCH = (
    "WebShop [SEP] Instruction: [SEP] i need a long lasting 6.76 fl oz bottle of l'eau d'issey, and price lower "
    "than 100.00 dollars [SEP] Search"
)
EXAMPLE_ITEM = (
    "Instruction: [SEP] i need a long lasting 6.76 fl oz bottle of l'eau d'issey, and price lower than 100.00 "
    "dollars [SEP] Back to Search [SEP] < Prev [SEP] size [SEP] 2.5 fl oz [SEP] 6.76 fl oz (pack of 1) [SEP] "
    "L'eau D'issey By Issey Miyake for MenEau De Toilette Spray, 6.7 Fl Oz Bottle [SEP] Price: $64.98 [SEP] "
    "Rating: N.A. [SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy Now"
)
EXAMPLE_RESULTS_HEAD = (
    "Instruction: [SEP] i need a long lasting 6.76 fl oz bottle of l'eau d'issey, and price lower than 100.00 "
    "dollars [SEP] Back to Search [SEP] Page 1 (Total results: 50) [SEP] Next > [SEP] B000VOHH8I [SEP] L'eau "
    "D'issey By Issey Miyake for MenEau De Toilette Spray, 6.7 Fl Oz Bottle [SEP] $64.98 [SEP] B000MJZOPK [SEP] "
    "L'eau d'Issey by Issey Miyake for Women 3.3 oz Eau de Toilette Spray [SEP] $49.98"
)


def test_pages_reproduce_the_published_episode_format():
    assert search_page(EXAMPLE_INSTRUCTION).observation == EXAMPLE_SEARCH
    page = item_page(EXAMPLE_INSTRUCTION, _product())
    assert page.observation == EXAMPLE_ITEM
    assert {"6.76 fl oz (pack of 1)", "2.5 fl oz", "buy now", "< prev", "description"} <= set(page.clickables)
    second = _product(
        asin="B000MJZOPK",
        title="L'eau d'Issey by Issey Miyake for Women 3.3 oz Eau de Toilette Spray",
        pricing=[49.98],
        price=49.98,
    )
    results = [_product(), second] + [_product(asin=f"B00000{i:04d}") for i in range(48)]
    observation = results_page(EXAMPLE_INSTRUCTION, results, 1).observation
    assert observation.startswith(EXAMPLE_RESULTS_HEAD + " [SEP] ")
    assert observation.count("[SEP] $64.98") == 9  # ten products on the page, first two shown above
    assert "< Prev" not in observation


# ---------------------------------------------------------------------------------------------
# actions


def test_search_returns_relevant_items(env):
    env.reset(env.tasks()[0])
    obs, reward, done, info = env.step("search[eau de toilette]")
    assert info["valid"] and reward == 0.0 and not done
    top = env.results[:10]
    assert all(p.product_type == "eau de toilette" for p in top)
    total = int(obs.split("(Total results: ")[1].split(")")[0])
    assert total == len(env.results) and 10 < total <= 50
    # only products sharing a term with the query are results (fragrances named "eau de ...")
    assert all("eau" in p.title.lower() or "toilette" in p.title.lower() for p in env.results)
    # a product's own title brings it to the first result
    target = env.catalog.products[123]
    env.step(f"search[{target.title}]")
    assert env.results[0].asin == target.asin
    # words no product has: an empty results page, not an error
    obs, _, _, info = env.step("search[zzqx flurble]")
    assert info["valid"] and "Page 1 (Total results: 0)" in obs and env.results == []


def test_paging_with_next_and_prev(env):
    env.reset(env.tasks()[0])
    first = env.step("search[shampoo conditioner]").observation
    assert "Next >" in first and "< Prev" not in first
    page_one = [p.asin for p in env.results[:10]]
    second = env.step("click[Next >]").observation
    assert "Page 2 (Total results: 50)" in second and "< Prev" in second
    assert all(asin not in second for asin in page_one)
    assert all(p.asin in second for p in env.results[10:20])
    assert env.step("click[< prev]").observation == first
    for _ in range(4):
        env.step("click[Next >]")
    last = env.observation
    assert "Page 5 (Total results: 50)" in last and "Next >" not in last
    result = env.step("click[Next >]")  # not on the page any more
    assert not result.info["valid"] and result.observation == last


def test_invisible_and_invalid_actions_are_harmless(small_env):
    env = small_env
    start = env.reset(env.tasks()[0])
    for action in ["click[Buy Now]", "click[Search]", "buy the thing", "search[]", "jump[high]", ""]:
        obs, reward, done, info = env.step(action)
        assert obs == start and reward == 0.0 and not done and info["valid"] is False
    assert env.steps == 6  # invalid actions still count
    results = env.step("search[yoga mat]").observation
    hidden = next(p.asin for p in env.catalog.products if p.asin not in results)
    obs, reward, done, info = env.step(f"click[{hidden}]")
    assert obs == results and reward == 0.0 and not done and not info["valid"]
    obs, _, _, info = env.step(f"click[{env.results[0].asin.lower()}]")  # case-insensitive
    assert info["valid"] and info["page"] == "item" and env.results[0].title in obs


def test_item_sub_pages_options_and_navigation(small_env):
    env = small_env
    env.reset(env.tasks()[0])
    results = env.step("search[t-shirt]").observation
    product = next(p for p in env.results[:10] if p.options)
    item = env.step(f"click[{product.asin}]").observation
    name, values = next(iter(product.options.items()))
    after_option = env.step(f"Thought: pick one.\nAction: click[{values[-1].upper()}]")
    assert after_option.info["valid"] and after_option.observation == item and env.options == {name: values[-1]}
    features = env.step("click[Features]").observation
    assert all(b in features for b in product.bullet_points) and "Buy Now" not in features
    assert env.step("click[< Prev]").observation == item and env.options == {name: values[-1]}
    assert env.step("click[< Prev]").observation == results and env.options == {}
    back = env.step("click[Back to Search]").observation
    assert back.startswith("WebShop [SEP] Instruction:")


def test_search_only_from_search_page_when_configured():
    env = WebShopEnv(num_products=360, search_anywhere=False)
    env.reset(env.tasks()[0])
    results = env.step("search[yoga mat]").observation
    again = env.step("search[dumbbells]")
    assert not again.info["valid"] and again.observation == results
    env.step("click[Back to Search]")
    assert env.step("search[dumbbells]").info["valid"]


def test_buying_ends_the_episode_with_the_score(env):
    result = _oracle_episode(env, env.tasks("test")[0])
    assert result.done and result.reward == 1.0
    assert result.info["score"] == 1.0 and result.info["success"] is True
    assert result.observation == "Thank you for shopping with us! [SEP] Your score (min 0.0, max 1.0) [SEP] 1.0"
    after = env.step("click[Back to Search]")
    assert after.done and after.reward == 0.0 and after.observation == result.observation


def test_oracle_reaches_full_score_on_many_goals(env):
    scores = [_oracle_episode(env, task).info["score"] for task in env.tasks("dev")[:60]]
    assert scores == [1.0] * 60


def test_wrong_purchase_gets_partial_credit(env):
    env.reset(env.tasks("test")[1])
    goal = env.goal
    env.step(f"search[{goal.query}]")
    wrong = next(p for p in env.results if p.asin != goal.asin and not set(goal.attributes) <= set(p.attributes))
    env.step(f"click[{wrong.asin}]")
    result = env.step("click[Buy Now]")
    assert result.done and 0.0 < result.info["score"] < 1.0 and result.info["success"] is False
    assert result.info["purchased_asin"] == wrong.asin and result.info["target_asin"] == goal.asin


def test_step_cap_ends_the_episode_without_reward():
    env = WebShopEnv(num_products=360, max_steps=3)
    env.reset(env.tasks()[0])
    assert not env.step("search[lipstick]").done
    assert not env.step("click[nothing here]").done
    obs, reward, done, info = env.step("click[Next >]")
    assert done and reward == 0.0 and info["truncated"] and info["success"] is False and info["score"] == 0.0


@pytest.mark.parametrize(("mode", "expected"), [("score", 1.0), ("discounted", 0.9**2), ("remaining", 13 / 15)])
def test_boost_training_reward_discounts_by_steps_to_checkout(mode, expected):
    env = WebShopEnv(num_products=360, reward_mode=mode)
    task = next(t for t in env.tasks() if not t.spec["goal_options"])
    env.reset(task)
    env.step(f"search[{env.goal.name}]")
    env.step(f"click[{env.goal.asin}]")
    result = env.step("click[Buy Now]")  # checkout at step 3
    assert result.info["score"] == 1.0
    assert result.reward == pytest.approx(expected)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="reward_mode"):
        WebShopConfig(reward_mode="dense")
    with pytest.raises(ValueError, match="need product_file"):
        WebShopEnv(attribute_file="items_ins_v2_1000.json")
    with pytest.raises(TypeError, match="unknown WebShopConfig"):
        WebShopEnv(WebShopConfig(num_products=360), max_step=3)
    with pytest.raises(ValueError, match="at least one product per category"):
        WebShopEnv(num_products=10)


# ---------------------------------------------------------------------------------------------
# reward: hand-worked cases


def test_reward_full_match():
    score, info = get_reward(_product(), _goal(), price=64.98, options={"size": "6.76 fl oz (pack of 1)"})
    assert score == 1.0 and info["r_type"] == 1.0 and info["r_price"] is True


def test_reward_partial_attributes():
    # 1 of 3 attributes ("long lasting"), option and price match: (1 + 1 + 1) / (3 + 1 + 1)
    goal = _goal(attributes=["long lasting", "alcohol free", "gift set"])
    score, info = get_reward(_product(), goal, price=64.98, options={"size": "6.76 fl oz (pack of 1)"})
    assert score == pytest.approx(3 / 5) and info["num_attr_matches"] == 1


def test_reward_attribute_fuzzy_and_text_matches():
    # "long-lasting" ~ "long lasting" by token-set ratio; "spray bottle" is found in the features text
    product = _product(attributes=["long-lasting"], bullet_points=["Comes in a spray bottle"])
    goal = _goal(attributes=["long lasting", "spray bottle", "short lived"], goal_options=[])
    score, info = get_reward(product, goal, price=10.0, options={})
    assert info["num_attr_matches"] == 2 and score == pytest.approx(3 / 4)


def test_reward_partial_options_and_exact_size():
    goal = _goal(goal_options=["6.76 fl oz (pack of 1)", "blue"])
    # size matched exactly, colour normalised ("navy blue" -> "blue"): (2 + 2 + 1) / (2 + 2 + 1)
    full, _ = get_reward(_product(), goal, 64.98, {"size": "6.76 fl oz (pack of 1)", "color": "navy blue"})
    assert full == 1.0
    # wrong colour: (2 + 1 + 1) / 5
    partial, info = get_reward(_product(), goal, 64.98, {"size": "6.76 fl oz (pack of 1)", "color": "red"})
    assert partial == pytest.approx(4 / 5) and info["r_option"] == pytest.approx(1 / 2)
    # "size" needs an exact match: a fuzzy subset is not enough
    subset, info = get_reward(_product(), goal, 64.98, {"size": "6.76 fl oz"})
    assert info["num_option_matches"] == 0 and subset == pytest.approx(3 / 5)
    # nothing selected: options cannot match
    none, _ = get_reward(_product(), goal, 64.98, {})
    assert none == pytest.approx(3 / 5)
    assert normalize_color("Navy Blue") == "blue" and normalize_color("6.76 fl oz") == "6.76 fl oz"


def test_reward_price_failure():
    score, info = get_reward(_product(), _goal(), price=120.0, options={"size": "6.76 fl oz (pack of 1)"})
    assert score == pytest.approx(3 / 4) and info["r_price"] is False


def _typed(title, query="other query", breadcrumb="Toys › Puzzles › Jigsaw"):
    return _product(
        title=title, query=query, product_category=breadcrumb, attributes=[], bullet_points=[], description=""
    )


TYPE_GOAL_NAME = "Acme Ceramic Coffee Mug Gift Box"  # nouns: acme ceramic coffee mug gift box


def test_title_nouns_heuristic():
    assert title_nouns(TYPE_GOAL_NAME) == ["acme", "ceramic", "coffee", "mug", "gift", "box"]
    assert title_nouns("Premium Long Lasting Eau de Toilette, 3.4 Fl Oz") == ["eau", "toilette"]


@pytest.mark.parametrize(
    ("title", "query", "breadcrumb", "expected_type", "title_score"),
    [
        # same query: 1.0 even with little title overlap (1/6 nouns)
        ("Zeta Steel Water Box", "eau de toilette", "Toys › Puzzles", 1.0, 1 / 6),
        # two breadcrumb levels shared: 1.0
        ("Zeta Steel Water Box", "x", "Beauty & Personal Care › Fragrance › Other", 1.0, 1 / 6),
        # > 20 % of the goal's nouns in the title: 1.0 without query or category match
        ("Acme Coffee Tin", "x", "Toys › Puzzles", 1.0, 2 / 6),
        # no query/category match, 1/6 nouns (between 10 % and 20 %): 0.5
        ("Zeta Steel Water Box", "x", "Toys › Puzzles", 0.5, 1 / 6),
        # under 10 % of the nouns: 0.1, even with the query matching
        ("Zeta Box", "eau de toilette", "Toys › Puzzles", 0.1, 1 / 11),
        # no noun in common: 0.0, even with query and category matching
        ("Zeta Steel Water Bottle", "eau de toilette", "Beauty & Personal Care › Fragrance", 0.0, 0.0),
    ],
)
def test_type_factor_branches(title, query, breadcrumb, expected_type, title_score):
    name = TYPE_GOAL_NAME if title_score != 1 / 11 else TYPE_GOAL_NAME + " Lid Handle Saucer Spoon Tray"
    goal = _goal(name=name, attributes=["dishwasher safe"], goal_options=[])
    product = _typed(title, query, breadcrumb)
    info = type_reward(product, goal)
    assert info["r_type"] == expected_type and info["title_score"] == pytest.approx(title_score)
    score, _ = get_reward(product, goal, price=10.0, options={})
    assert score == pytest.approx(expected_type * 1 / 2)  # price matches, the attribute does not


# ---------------------------------------------------------------------------------------------
# original file format

# Real entries of items_ins_v2_1000.json (WebShop "small" setting) for the products below.
REAL_ATTRIBUTE_SUBSET = {
    "B07DJJXGB5": {
        "attributes": ["tea tree", "essential oils", "natural ingredients"],
        "instruction": "Find me scrubs & body treatments with tea tree, natural ingredients",
        "instruction_attributes": ["tea tree", "natural ingredients"],
    },
    "B08X2PKKB2": {
        "attributes": ["rose gold", "lip balm", "skin care", "easy carry", "high quality"],
        "instruction": "Find me easy carry, high quality refillable containers with rose gold",
        "instruction_attributes": ["easy carry", "high quality", "rose gold"],
    },
    "B005X7IXTK": {
        "attributes": ["body cream", "anti perspirant", "cruelty free"],
        "instruction": "Find me anti perspirant, cruelty free deodorants & antiperspirants",
        "instruction_attributes": ["anti perspirant", "cruelty free"],
    },
    "B08GFNJN5R": {"attributes": []},
}


def _published_item(asin, name, query, breadcrumb, pricing, options, bullets, category="beauty"):
    """One product in the exact key layout of items_shuffle*.json."""
    return {
        "name": name,
        "full_description": f"{name}. Made with care.",
        "pricing": pricing,
        "list_price": "",
        "availability_quantity": None,
        "availability_status": "In Stock.",
        "images": [f"https://m.media-amazon.com/images/I/{asin}.jpg"],
        "product_category": breadcrumb,
        "average_rating": "",
        "small_description": bullets,
        "model": "",
        "customization_options": options,
        "seller_id": "",
        "seller_name": "",
        "fulfilled_by_amazon": None,
        "fast_track_message": "",
        "aplus_present": "",
        "small_description_old": "",
        "product_information": {},
        "brand": "Brand",
        "brand_url": "",
        "total_reviews": None,
        "total_answered_questions": None,
        "asin": asin,
        "category": category,
        "query": query,
        "page": 1,
    }


def _option(value, price=None):
    return {"is_selected": False, "url": None, "value": value, "price_string": "", "price": price, "image": None}


@pytest.fixture
def original_files(tmp_path):
    items = [
        _published_item(
            "B07DJJXGB5",
            "Tea Tree Oil Body Scrub with Dead Sea Salt",
            "scrubs & body treatments",
            "Beauty & Personal Care › Skin Care › Body › Scrubs & Body Treatments",
            "$14.95",
            {"Size": [_option("8 Ounce"), _option("16 Ounce/Pack of 2")]},
            ["Exfoliates dead skin", "Vegan"],
        ),
        _published_item(
            "B08X2PKKB2",
            "Travel Bottles Set, Rose Gold Refillable Containers",
            "refillable containers",
            "Beauty & Personal Care › Tools & Accessories › Bags & Cases › Refillable Containers",
            "$9.99 - $15.99",
            {"Color": [_option("Rose Gold"), _option("Silver")], "Size": [_option("3 Pack"), _option("6 Pack")]},
            ["Leak proof", "TSA approved"],
        ),
        _published_item(
            "B005X7IXTK",
            "Natural Deodorant Cream, Cruelty Free Antiperspirant",
            "deodorants & antiperspirants",
            "Beauty & Personal Care › Personal Care › Deodorants & Antiperspirants",
            "$6.50",
            None,
            "Lasts all day",
        ),
        _published_item(
            "B08GFNJN5R",
            "Bamboo Hair Brush",
            "hair brushes",
            "Beauty & Personal Care › Hair Care › Styling Tools › Brushes",
            "",
            {"Color": None},
            [],
        ),
        _published_item(
            "B0NOINS001",
            "Cotton Swabs 500 Count",
            "cotton balls & swabs",
            "Beauty & Personal Care › Personal Care › Cotton Balls & Swabs",
            "$3.99",
            None,
            ["Soft"],
        ),
        _published_item("nan", "Broken listing", "x", "Beauty & Personal Care › Skin Care", "$1.00", None, []),
        _published_item(
            "B07DJJXGB5", "Duplicate listing", "x", "Beauty & Personal Care › Skin Care", "$1.00", None, []
        ),
    ]
    product_file = tmp_path / "items_shuffle_test.json"
    attribute_file = tmp_path / "items_ins_v2_test.json"
    product_file.write_text(json.dumps(items))
    attribute_file.write_text(json.dumps(REAL_ATTRIBUTE_SUBSET))
    return product_file, attribute_file


def test_loads_the_original_file_format(original_files):
    product_file, attribute_file = original_files
    env = WebShopEnv(product_file=str(product_file), attribute_file=str(attribute_file))
    catalog = env.catalog
    assert [p.asin for p in catalog.products] == ["B07DJJXGB5", "B08X2PKKB2", "B005X7IXTK", "B08GFNJN5R", "B0NOINS001"]
    scrub = catalog["B07DJJXGB5"]
    assert scrub.title == "Tea Tree Oil Body Scrub with Dead Sea Salt" and scrub.price == 14.95
    assert scrub.options == {"size": ["8 ounce", "16 ounce | pack of 2"]}
    assert scrub.attributes == ["tea tree", "essential oils", "natural ingredients"]
    assert scrub.category == "Beauty & Personal Care – Skin Care"
    bottles = catalog["B08X2PKKB2"]
    assert bottles.pricing == [9.99, 15.99] and bottles.price_tag == "$9.99 to $15.99"
    assert 9.99 <= bottles.price <= 15.99
    assert catalog["B005X7IXTK"].bullet_points == ["Lasts all day"] and catalog["B005X7IXTK"].options == {}
    assert catalog["B08GFNJN5R"].attributes == [] and catalog["B08GFNJN5R"].pricing == [100.0]
    assert catalog["B0NOINS001"].attributes == ["DUMMY_ATTR"]
    # goals: one per option combination of each product with an instruction (2 + 2*2 + 1)
    goals = env.goals
    assert sorted(g.asin for g in goals) == ["B005X7IXTK"] + ["B07DJJXGB5"] * 2 + ["B08X2PKKB2"] * 4
    scrub_goal = next(g for g in goals if g.asin == "B07DJJXGB5" and g.goal_options == {"size": "8 ounce"})
    assert scrub_goal.instruction_text == (
        "Find me scrubs & body treatments with tea tree, natural ingredients with size: 8 ounce, "
        f"and price lower than {scrub_goal.price_upper:.2f} dollars"
    )
    assert scrub_goal.price_upper in (30.0, 40.0, 50.0)
    assert {t.category for t in env.tasks()} == {
        "Beauty & Personal Care – Skin Care",
        "Beauty & Personal Care – Tools & Accessories",
        "Beauty & Personal Care – Personal Care",
    }


def test_max_file_products_keeps_the_first_items(original_files):
    product_file, attribute_file = original_files
    env = WebShopEnv(product_file=str(product_file), attribute_file=str(attribute_file), max_file_products=2)
    assert [p.asin for p in env.catalog.products] == ["B07DJJXGB5", "B08X2PKKB2"]
    assert {g.asin for g in env.goals} == {"B07DJJXGB5", "B08X2PKKB2"}
    capped = WebShopEnv(product_file=str(product_file), attribute_file=str(attribute_file), max_goals_per_product=1)
    assert sorted(g.asin for g in capped.goals) == ["B005X7IXTK", "B07DJJXGB5", "B08X2PKKB2"]
    with pytest.raises(ValueError, match="missing field"):
        Goal.from_spec({"asin": "B07DJJXGB5", "instruction_text": "x"})


def test_episode_on_original_files_scores_one(original_files):
    product_file, attribute_file = original_files
    env = WebShopEnv(product_file=str(product_file), attribute_file=str(attribute_file))
    task = next(t for t in env.tasks() if t.spec["asin"] == "B08X2PKKB2")
    env.reset(task)
    results = env.step("search[rose gold refillable containers travel bottles]").observation
    parts = results.split(" [SEP] ")
    assert parts[3].startswith("Page 1 (Total results: ") and "Next >" not in parts  # 5 products: one page
    assert parts[4] == "B08X2PKKB2" and env.results[0].asin == "B08X2PKKB2"
    env.step("click[B08X2PKKB2]")
    for value in env.goal.goal_options.values():
        assert env.step(f"click[{value}]").info["valid"]
    result = env.step("click[Buy Now]")
    assert result.done and result.info["score"] == 1.0 and result.info["success"]


def test_human_goal_file(original_files, tmp_path):
    product_file, attribute_file = original_files
    human = tmp_path / "items_human_ins_test.json"
    human.write_text(
        json.dumps(
            {
                "B07DJJXGB5": [
                    {
                        "asin": "B07DJJXGB5",
                        "instruction": "i want a tea tree body scrub in 8 ounce.",
                        "instruction_attributes": ["tea tree"],
                        "instruction_options": ["8 ounce"],
                    },
                    {
                        "asin": "B07DJJXGB5",
                        "instruction": "skipped: no attributes",
                        "instruction_attributes": [],
                        "instruction_options": [],
                    },
                ]
            }
        )
    )
    env = WebShopEnv(product_file=str(product_file), attribute_file=str(attribute_file), human_goal_file=str(human))
    assert len(env.goals) == 1
    goal = env.goals[0]
    assert goal.instruction_text.startswith("i want a tea tree body scrub in 8 ounce, and price lower than")
    assert goal.goal_options == ["8 ounce"] and goal.attributes == ["tea tree"]


def test_bad_original_files_name_the_problem(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        WebShopEnv(product_file=str(missing))
    broken = tmp_path / "items_shuffle_broken.json"
    item = _published_item("B0BROKEN01", "x", "q", "A › B", "$1.00", None, [])
    del item["query"]
    broken.write_text(json.dumps([item]))
    with pytest.raises(ValueError, match=r"item 0: missing field\(s\) query"):
        WebShopEnv(product_file=str(broken))
    not_json = tmp_path / "items_shuffle_bad.json"
    not_json.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        WebShopEnv(product_file=str(not_json))


# ---------------------------------------------------------------------------------------------
# scripted shoppers (offline data stand-ins)


@pytest.mark.slow  # importing the trajectory schema loads `datasets` (~5 s on a busy machine)
def test_heuristic_shopper_trajectories_are_valid_and_mixed(env):
    from trainers.data.schema import validate_trajectories
    from trainers.envs.webshop.scripted import scripted_trajectories

    tasks = env.tasks("test")[:80]
    rows = scripted_trajectories(tasks, env=env, progress=False)
    validate_trajectories(rows)
    assert [r["task_id"] for r in rows] == [t.task_id for t in tasks]
    scores = [json.loads(r["metadata"])["score"] for r in rows]
    successes = sum(r["success"] for r in rows)
    assert 0 < successes < len(rows)  # some episodes succeed, some do not
    assert 0.5 < sum(scores) / len(scores) < 1.0
    for row, score in zip(rows, scores):
        assistant = [m for m in row["messages"] if m["role"] == "assistant"]
        assert len(assistant) == len(row["rewards"]) and row["rewards"][-1] == pytest.approx(score)
        assert assistant[0]["content"].startswith("Thought: ") and "\nAction: search[" in assistant[0]["content"]
        assert row["messages"][1]["content"].startswith("WebShop [SEP] Instruction: [SEP] ")
    # deterministic
    again = scripted_trajectories(tasks[:10], env=env, progress=False)
    assert [r["messages"] for r in again] == [r["messages"] for r in rows[:10]]


def test_heuristic_shopper_reads_only_the_conversation(env):
    from trainers.envs.webshop.scripted import HeuristicShopper, search_keywords

    shopper = HeuristicShopper(thoughts=False)
    first = env.reset(env.tasks()[5])
    history = [{"role": "system", "content": env.system_prompt}, {"role": "user", "content": first}]
    (action,) = shopper([history])
    assert action == f"Action: search[{search_keywords(env.goal.instruction_text)}]"
    assert "price lower than" not in action and not action.startswith("Action: search[i ")
    history += [{"role": "assistant", "content": action}, {"role": "user", "content": env.step(action).observation}]
    (action,) = shopper([history])
    assert action.startswith("Action: click[B") and env.step(action).info["valid"]
    # published ETO histories prefix pages with "Observation:"
    eto = [{"role": "user", "content": "Observation:\n" + EXAMPLE_SEARCH}]
    assert shopper.act(eto) == "Action: search[long lasting 6.76 fl oz bottle of l'eau d'issey]"


def test_oracle_demonstrations_all_succeed(env):
    from trainers.envs.webshop.scripted import scripted_trajectories

    rows = scripted_trajectories(env.tasks("dev")[:40], env=env, policy="oracle", source="expert", progress=False)
    assert all(r["success"] and r["source"] == "expert" for r in rows)
    assert all(json.loads(r["metadata"])["score"] == 1.0 for r in rows)
    with pytest.raises(ValueError, match="policy must be"):
        scripted_trajectories(env.tasks()[:1], env=env, policy="gpt-4")


@pytest.mark.parametrize("policy", ["oracle", "heuristic"])
def test_scripted_turns_without_thoughts_are_the_same_actions(env, policy):
    from trainers.envs.webshop.scripted import scripted_trajectories

    tasks = env.tasks("dev")[:6]
    with_thoughts = scripted_trajectories(tasks, env=env, policy=policy, progress=False)
    bare = scripted_trajectories(tasks, env=env, policy=policy, progress=False, thoughts=False)
    for full, short in zip(with_thoughts, bare):
        turns = [m["content"] for m in full["messages"] if m["role"] == "assistant"]
        bare_turns = [m["content"] for m in short["messages"] if m["role"] == "assistant"]
        assert all(t.startswith("Action: ") for t in bare_turns)
        assert any(t.startswith("Thought: ") for t in turns)
        # the same episode: the action lines and the rewards agree turn by turn
        assert [t.split("\n")[-1] for t in turns] == bare_turns and full["rewards"] == short["rewards"]
