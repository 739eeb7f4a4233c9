import json

import pytest

from trainers.envs import StepResult, Task, TextEnv, make_env
from trainers.envs.twenty_questions import (
    DEFAULT_KB_PATH,
    FIRST_OBSERVATION,
    KnowledgeBase,
    KnowledgeBaseError,
    TwentyQuestionsEnv,
    TwentyQuestionsOracle,
    _bank_vectors,
    shared_embedding_cache,
)

# BOOST appendix E, table 3: the 17 categories and their sample objects.
TABLE_3 = {
    "Sports": ["Basketball", "Football", "Baseball", "Tennis racket", "Helmet"],
    "Animals": ["Cat", "Dog", "Horse", "Lion", "Elephant"],
    "Fruits": ["Apple", "Banana", "Strawberry", "Watermelon", "Mango"],
    "Vehicles": ["Car", "Motorcycle", "Airplane", "Helicopter", "Ship"],
    "Clothes": ["Shirt", "Jacket", "Dress", "Boots", "Scarf"],
    "Electronics": ["Smartphone", "Television", "Camera", "Refrigerator", "Blender"],
    "Musical Instruments": ["Piano", "Guitar", "Violin", "Trumpet", "Harp"],
    "Furniture": ["Chair", "Bed", "Couch", "Bookcase", "Nightstand"],
    "Office Supplies": ["Pen", "Stapler", "Calculator", "Scissors", "Diary"],
    "Vegetables": ["Carrot", "Broccoli", "Tomato", "Spinach", "Cucumber"],
    "Art": ["Painting", "Paintbrush", "Canvas", "Sculpture", "Marker"],
    "Kitchen Tools": ["Knife", "Fork", "Bowl", "Frying pan", "Whisk"],
    "Nature": ["Rock", "Tree", "Mountain", "Ocean", "Cactus"],
    "Toys": ["Lego", "Doll", "Kite", "Puzzle", "Stuffed animal"],
    "Jewelry": ["Earrings", "Necklace", "Ring", "Watch", "Pendant"],
    "Garden Supplies": ["Shovel", "Rake", "Watering can", "Lawn mower", "Gloves"],
    "Tools": ["Hammer", "Screwdriver", "Wrench", "Saw", "Drill"],
}


@pytest.fixture(scope="module")
def kb():
    return KnowledgeBase.load()


@pytest.fixture(scope="module")
def oracle(kb):
    return TwentyQuestionsOracle(kb)


def play(env, task, questions):
    env.reset(task)
    return [env.step(q) for q in questions]


# ---------------------------------------------------------------------------- knowledge base


def test_categories_match_boost_table_3(kb):
    assert list(kb.categories) == list(TABLE_3)
    for category, samples in TABLE_3.items():
        assert 10 <= len(kb.categories[category]) <= 14, category
        for sample in samples:  # the table's names, some of them synonyms of the canonical name
            assert kb.category_of(sample) == category, sample


def test_every_object_has_a_unique_answer_profile(kb):
    profiles = {obj.attributes for obj in kb.objects.values()}
    assert len(profiles) == len(kb.objects) == 188
    n = len(kb.objects)
    for attribute in kb.attribute_ids:  # every attribute splits the objects
        count = sum(attribute in obj.attributes for obj in kb.objects.values())
        assert 0 < count < n, attribute


def test_known_facts(kb):
    facts = {
        ("Dog", "mammal"): True,
        ("Eagle", "mammal"): False,
        ("Dolphin", "aquatic"): True,
        ("Dog", "aquatic"): False,
        ("Apple", "hold_one_hand"): True,
        ("Car", "hold_one_hand"): False,
        ("Hammer", "man_made"): True,
        ("Tree", "man_made"): False,
        ("Elephant", "bigger_than_breadbox"): True,
        ("Pen", "bigger_than_breadbox"): False,
        ("Car", "wheels"): True,
        ("Apple", "edible"): True,
        ("Toothbrush", "cat:Office Supplies"): False,
        ("Shovel", "cat:Tools"): True,
        ("Tomato", "cat:Fruits"): False,
    }
    for (name, attribute), expected in facts.items():
        assert kb.truth(name, attribute) is expected, (name, attribute)


def test_malformed_knowledge_base_names_file_and_entry(tmp_path):
    raw = json.loads(DEFAULT_KB_PATH.read_text())
    raw["attributes"]["mammal"]["true_for"].append("Unicorn")
    path = tmp_path / "kb.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(KnowledgeBaseError, match=r"kb\.json: attribute 'mammal': unknown object 'Unicorn'"):
        KnowledgeBase.load(path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(KnowledgeBaseError, match="broken.json: not valid JSON"):
        KnowledgeBase.load(tmp_path / "broken.json")


# ---------------------------------------------------------------------------- guesses and categories


@pytest.mark.parametrize(
    "target, question",
    [
        ("Dog", "Is it a dog?"),
        ("Dog", "Is it dogs?"),
        ("Dog", "is it a puppy"),
        ("Dog", "Is the object a dog?"),
        ("Dog", "Dog?"),
        ("Dog", "Are you thinking of a dog?"),
        ("Apple", "Is it an apple?"),
        ("Apple", "Is it apples?"),
        ("Tennis racket", "Is it a tennis racquet?"),
        ("Shoes", "Is it a pair of shoes?"),
        ("Shoes", "Is it a shoe?"),
        ("Television", "Is it a TV?"),
        ("Cherry", "Is it cherries?"),
        ("Potato", "Is it a potato?"),
        ("Airplane", "My guess is a plane"),
        ("Dog", "Is it a big dog?"),
        ("Apple", "Is it a red apple?"),
        ("Rubik's cube", "Is it a Rubik's Cube?"),
        ("Watering can", "Is it a watering-can?"),
    ],
)
def test_correct_guesses_win(oracle, target, question):
    answer = oracle.answer(target, question)
    assert (answer.answer, answer.kind, answer.correct_guess) == ("Yes.", "guess", True)


@pytest.mark.parametrize(
    "target, question",
    [
        ("Cat", "Is it a dog?"),
        ("Cat", "Is it a big dog?"),
        ("Bush", "Is it a brush?"),
        ("Bus", "Is it a bush?"),
        ("Pan", "Is it a pen?"),
        ("Lion", "Is it a tiger?"),
    ],
)
def test_wrong_guesses_answer_no(oracle, target, question):
    answer = oracle.answer(target, question)
    assert (answer.answer, answer.correct_guess, answer.kind) == ("No.", False, "guess")


def test_naming_several_objects_is_not_a_win(oracle):
    answer = oracle.answer("Dog", "Is it a dog or a cat?")
    assert answer.answer == "Yes." and not answer.correct_guess
    assert oracle.answer("Dog", "Is it a cow or a cat?").answer == "No."


def test_every_category_keyword_is_answered_truthfully(kb, oracle):
    for category, _objs in kb.categories.items():
        question = f"Is it a {category.lower()}?"
        for obj in kb.objects.values():
            answer = oracle.answer(obj, question)
            assert answer.kind == "category", (question, answer)
            assert answer.answer == ("Yes." if kb.truth(obj, f"cat:{category}") else "No."), (question, obj.name)
    for question, target, expected in [
        ("Is it a fruit?", "Apple", "Yes."),
        ("Is it a fruit?", "Carrot", "No."),
        ("Is it a type of vegetable?", "Carrot", "Yes."),
        ("Is it an animal?", "Lion", "Yes."),
        ("Is it a kitchen utensil?", "Whisk", "Yes."),
        ("Is it a piece of furniture?", "Bed", "Yes."),
        ("Is it a musical instrument?", "Harp", "Yes."),
        ("Is it a toy?", "Hammer", "No."),
        ("Is it a fruit or a vegetable?", "Carrot", "Yes."),
        ("Is it clothing?", "Scarf", "Yes."),
        ("Is it a tool?", "Shovel", "Yes."),
        ("Is it an office supply?", "Toothbrush", "No."),
    ]:
        assert oracle.answer(target, question).answer == expected, (question, target)


# ---------------------------------------------------------------------------- environment


def test_protocol_and_tasks_are_deterministic():
    env = make_env("twenty_questions")
    assert isinstance(env, TextEnv) and env.name == "twenty_questions" and env.max_steps == 20
    tasks = env.tasks()
    assert len(tasks) == 188 and tasks == TwentyQuestionsEnv().tasks()
    assert [t.task_id for t in tasks] == [t.task_id for t in TwentyQuestionsEnv().tasks()]
    assert {t.category for t in tasks} == set(TABLE_3)
    assert "20" in env.system_prompt and "yes or no" in env.system_prompt
    with pytest.raises(ValueError, match="no 'test' split"):
        env.tasks("test")
    with pytest.raises(ValueError, match="unknown twenty-questions object 'Unicorn'"):
        env.reset(Task("Unicorn", "Animals"))


def test_boost_reward_is_questions_remaining():
    env = TwentyQuestionsEnv()
    assert env.reset(Task("Dog", "Animals")) == FIRST_OBSERVATION
    results = [env.step(q) for q in ["Is it alive?", "Is it a mammal?", "Does it bark?", "Is it a cat?"]]
    assert [r.observation for r in results] == ["Yes.", "Yes.", "Yes.", "No."]
    assert all(r.reward == 0.0 and not r.done for r in results)
    final = env.step("Is it a dog?")
    assert isinstance(final, StepResult)
    assert (final.observation, final.reward, final.done, final.info["success"]) == ("Yes.", 15.0, True, True)
    # a first-question guess leaves 19
    first = play(env, Task("Cat", "Animals"), ["Is it a cat?"])[0]
    assert (first.reward, first.done) == (19.0, True)


def test_lmrl_reward_is_minus_one_per_question():
    env = TwentyQuestionsEnv(reward_mode="lmrl")
    results = play(env, "Apple", ["Is it alive?", "Can you eat it?", "Is it red?", "Is it an apple?"])
    assert [r.reward for r in results] == [-1.0, -1.0, -1.0, 0.0]
    assert sum(r.reward for r in results) == -3.0  # minus the questions before the hitting time
    with pytest.raises(ValueError, match="reward_mode"):
        TwentyQuestionsEnv(reward_mode="dense")


def test_episode_ends_at_the_question_cap():
    env = TwentyQuestionsEnv()
    results = play(env, "Dog", ["Is it a cat?"] * 20)
    assert [r.done for r in results] == [False] * 19 + [True]
    assert results[-1].info["success"] is False and all(r.reward == 0.0 for r in results)
    assert results[-1].info["questions_asked"] == 20
    with pytest.raises(RuntimeError, match="is over"):
        env.step("Is it a dog?")
    short = TwentyQuestionsEnv(max_questions=3, reward_mode="lmrl")
    assert [r.done for r in play(short, "Dog", ["Is it a cat?"] * 3)] == [False, False, True]


def test_invalid_actions_answer_no_and_count():
    env = TwentyQuestionsEnv()
    env.reset("Dog")
    for action in ["", "   ", "?!?", " ".join(["word"] * 41)]:
        result = env.step(action)
        assert (result.observation, result.info["kind"], result.done) == ("No.", "invalid", False)
    assert result.info["questions_asked"] == 4
    # a question without a question mark is still a question
    assert env.step("Is it alive").observation == "Yes."
    # a "Thought: ... Action: ..." turn is answered on its action
    assert env.step("Thought: it barks.\nAction: Is it a dog?").info["success"] is True


def test_seeded_reset_and_replay_are_deterministic():
    env = TwentyQuestionsEnv()
    env.reset(None, seed=7)
    first = env.lmrl_record()["word"]
    env.reset(None, seed=7)
    assert env.lmrl_record()["word"] == first
    script = ["Is it alive?", "Is it man-made?", "Is it a fruit?", "Is it bigger than a bread box?"]
    runs = [[tuple(r) for r in play(TwentyQuestionsEnv(), "Guitar", script)] for _ in range(2)]
    assert runs[0] == runs[1]
    assert [r[0] for r in runs[0]] == ["No.", "Yes.", "No.", "Yes."]


@pytest.mark.slow  # imports `datasets` through the converters
def test_lmrl_record_converts_with_the_same_reward():
    from trainers.data.converters import convert_twenty_questions

    env = TwentyQuestionsEnv()
    results = play(env, "Banana", ["Is it alive?", "Is it food?", "Is it yellow?", "Is it a banana?"])
    record = env.lmrl_record()
    assert record["correct"] is True and record["lines"][0] == "Is it alive? No."
    row = convert_twenty_questions([record])[0]
    assert row["rewards"] == [r.reward for r in results]


# ---------------------------------------------------------------------------- embeddings (model)


@pytest.mark.slow
def test_paraphrased_questions_use_the_attribute_bank(oracle):
    cases = [
        ("Dolphin", "Is it something that lives in the water?", "Yes."),
        ("Dog", "Is it something that lives in the water?", "No."),
        ("Apple", "Could I hold it in one hand?", "Yes."),
        ("Car", "Could I hold it in one hand?", "No."),
        ("Lion", "Would you find it at a zoo?", "Yes."),
        ("Hammer", "Was it made by people?", "Yes."),
        ("Tree", "Was it made by people?", "No."),
        ("Tree", "Does it occur in nature?", "Yes."),  # negated phrasing of man_made
        ("Apple", "Is it a kind of food?", "Yes."),
        ("Hammer", "Is it a kind of food?", "No."),
        ("Piano", "Does it make music?", "Yes."),
        ("Watch", "Does it tell the time?", "Yes."),
        ("Knife", "Is it something you'd find in a kitchen?", "Yes."),
    ]
    answers = oracle.answer_batch([c[0] for c in cases], [c[1] for c in cases])
    for (target, question, expected), answer in zip(cases, answers):
        assert answer.kind == "attribute" and answer.answer == expected, (target, question, answer)
        assert answer.similarity >= oracle.similarity_floor
    unclear = oracle.answer("Dog", "What is your name?")
    assert (unclear.answer, unclear.kind) == ("No.", "unclear") and unclear.similarity < oracle.similarity_floor
    # one cache per process, bank encoded once and reused by every environment
    assert TwentyQuestionsEnv().oracle.encoder == oracle.encoder
    assert shared_embedding_cache() is shared_embedding_cache()
    assert _bank_vectors(oracle.kb, oracle.encoder) is _bank_vectors(TwentyQuestionsEnv().kb, oracle.encoder)


@pytest.mark.slow
def test_full_episode_with_free_form_questions():
    env = TwentyQuestionsEnv()
    questions = [
        "Is it a living thing?",
        "Does it live in water?",
        "Would you keep it as a pet at home?",
        "Does it bark?",
        "Is it a dog?",
    ]
    results = play(env, "Dog", questions)
    assert [r.observation for r in results] == ["Yes.", "No.", "Yes.", "Yes.", "Yes."]
    assert results[-1].done and results[-1].reward == 15.0


def test_step_batch_matches_single_steps():
    script = [["Is it alive?", "Is it a dog?"], ["Is it alive?", "Is it a fruit?"], ["Is it a cat?"]]
    targets = ["Dog", "Apple", "Cat"]
    singles = [[tuple(r) for r in play(TwentyQuestionsEnv(), t, qs)] for t, qs in zip(targets, script)]
    envs = [TwentyQuestionsEnv() for _ in targets]
    for env, target in zip(envs, targets):
        env.reset(target)
    first = TwentyQuestionsEnv.step_batch(envs, [qs[0] for qs in script])
    assert first[2].done and first[2].reward == 19.0
    second = TwentyQuestionsEnv.step_batch(envs[:2], [qs[1] for qs in script[:2]])
    assert [tuple(r) for r in first[:2]] == [s[0] for s in singles[:2]]
    assert [tuple(r) for r in second] == [s[1] for s in singles[:2]]
    with pytest.raises(RuntimeError, match="environment 0: the episode for 'Dog' is over"):
        TwentyQuestionsEnv.step_batch(envs[:1], ["Is it alive?"])


def test_greedy_asker_identifies_every_object(kb):
    # splits the candidates with bank questions asked verbatim (no embedding model) and then names
    # the survivor: the oracle's answers must stay consistent with the knowledge base throughout
    env = TwentyQuestionsEnv()
    first_phrasing = {}
    for entry in kb.bank:
        if not entry.negated:
            first_phrasing.setdefault(entry.attribute, entry.text)
    members = {a: frozenset(o.name for o in kb.objects.values() if a in o.attributes) for a in first_phrasing}
    asked = []
    for task in env.tasks():
        env.reset(task)
        candidates = set(kb.objects)
        while True:
            if len(candidates) == 1:
                result = env.step(f"Is it a {next(iter(candidates)).lower()}?")
            else:
                attribute = min(first_phrasing, key=lambda a: abs(2 * len(candidates & members[a]) - len(candidates)))
                result = env.step(first_phrasing[attribute])
                candidates = (
                    candidates & members[attribute] if result.observation == "Yes." else candidates - members[attribute]
                )
            if result.done:
                break
        assert result.info["success"] and result.info["object"] == task.task_id, task.task_id
        asked.append(result.info["questions_asked"])
    assert max(asked) <= 20 and sum(asked) / len(asked) < 10


def test_lmrl_record_lines_for_invalid_questions():
    env = TwentyQuestionsEnv()
    play(env, "Dog", ["", "Is it\nalive", "Is it a dog?"])
    assert env.lmrl_record() == {
        "lines": ["Is this a valid question? No.", "Is it alive? Yes.", "Is it a dog? Yes."],
        "correct": True,
        "word": ["Dog", "Puppy", "Doggy", "Hound"],
    }


class _AliasEncoder:
    """Stands in for the sentence encoder: a text's vector is the one-hot of the bank question it
    is an alias of (so similarity is 1 or 0); counts how many texts it was asked to encode."""

    def __init__(self, kb, aliases):
        self.index = {}
        for entry in kb.bank:
            self.index.setdefault(entry.text, len(self.index))
        self.aliases = aliases
        self.encoded = 0

    def encode(self, texts):
        import numpy as np

        self.encoded += len(texts)
        vectors = np.zeros((len(texts), len(self.index)), dtype=np.float32)
        for row, text in enumerate(texts):
            canonical = self.aliases.get(text, text)
            if canonical in self.index:
                vectors[row, self.index[canonical]] = 1.0
        return vectors


def test_embedding_path_with_a_stand_in_encoder(kb, tmp_path, monkeypatch):
    import numpy as np

    from trainers.envs import twenty_questions as tq

    monkeypatch.setenv("TRAINERS_CACHE", str(tmp_path))
    fake = _AliasEncoder(
        kb, {"Does it dwell in water?": "Does it live in water?", "Is it of natural origin?": "Is it natural?"}
    )
    monkeypatch.setitem(tq._EMBEDDING_CACHES, "alias-encoder", fake)
    oracle = TwentyQuestionsOracle(kb, encoder="alias-encoder")
    answers = oracle.answer_batch(
        ["Dolphin", "Dog", "Tree", "Hammer", "Dog", "Dog"],
        [
            "Does it dwell in water?",
            "Does it dwell in water?",
            "Is it of natural origin?",
            "Is it of natural origin?",
            "Tell me a joke",
            "Is it alive",
        ],
    )
    assert [a.answer for a in answers] == ["Yes.", "No.", "Yes.", "No.", "No.", "Yes."]
    assert [a.kind for a in answers] == ["attribute"] * 4 + ["unclear", "attribute"]
    assert answers[2].attribute == "man_made"  # a negated phrasing flips the stored answer
    # the bank was encoded once, and the questions in one batch ("Is it alive" matched verbatim)
    assert fake.encoded == len(kb.bank) + 3
    files = list((tmp_path / "twenty_questions").glob("bank-*.npy"))
    assert len(files) == 1 and np.load(files[0]).shape[0] == len(kb.bank)
    # a new process reads the bank from disk; a damaged file is re-encoded and replaced
    monkeypatch.delitem(tq._BANK_VECTORS, (kb.path, "alias-encoder"))
    tq._bank_vectors(kb, "alias-encoder")
    assert fake.encoded == len(kb.bank) + 3
    files[0].write_bytes(b"not an array")
    monkeypatch.delitem(tq._BANK_VECTORS, (kb.path, "alias-encoder"))
    assert tq._bank_vectors(kb, "alias-encoder").shape[0] == len(kb.bank)
    assert fake.encoded == 2 * len(kb.bank) + 3
    assert [p.name for p in (tmp_path / "twenty_questions").iterdir()] == [files[0].name]
