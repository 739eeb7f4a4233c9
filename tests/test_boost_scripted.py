"""The BOOST recipe's scripted players: the Twenty Questions expert plays from the answers it gets."""

from trainers.envs import make_env
from trainers.recipes.boost_scripted import halving_asker, twenty_questions_rows


def play(asker, truth: dict[str, bool], guess_hits: str) -> list[str]:
    """Questions ``asker`` asks when ``truth`` answers the attribute questions and ``guess_hits`` is the object."""
    messages, asked = [{"role": "user", "content": "Questions:"}], []
    while len(asked) < 6:
        question = asker(messages)
        asked.append(question)
        if question == f"Is it a {guess_hits}?":
            break
        answer = "Yes." if truth.get(question, False) else "No."
        messages += [{"role": "assistant", "content": question}, {"role": "user", "content": answer}]
    return asked


YES = {"Is it alive?": frozenset({"cat", "dog"}), "Does it bark?": frozenset({"dog"})}


def test_halving_asker_narrows_the_objects_with_each_answer():
    objects = ["cat", "dog", "fork"]
    # "alive" splits 2 / 1 (best), then "bark" tells cat from dog
    assert play(halving_asker(YES, objects), {"Is it alive?": True, "Does it bark?": True}, "dog") == [
        "Is it alive?",
        "Does it bark?",
        "Is it a dog?",
    ]
    assert play(halving_asker(YES, objects), {"Is it alive?": False}, "fork") == ["Is it alive?", "Is it a fork?"]
    # answers no listed object fits (alive but neither cat nor dog): it starts over and guesses in turn
    asked = play(halving_asker(YES, objects), {"Is it alive?": True, "Does it bark?": False}, "fork")
    assert asked[:3] == ["Is it alive?", "Does it bark?", "Is it a cat?"]
    assert asked[-1] == "Is it a fork?"


def test_twenty_questions_expert_finds_every_object_and_the_noisy_asker_rarely_does():
    env = make_env("twenty_questions")
    tasks = env.tasks()
    rows = twenty_questions_rows(env, tasks, noise=0.25, seed=0)
    expert = [row for row in rows if "-expert-" in row["id"]]
    noisy = [row for row in rows if "-noisy-" in row["id"]]
    assert len(expert) + len(noisy) == len(tasks) and len(noisy) == round(0.25 * len(tasks))
    assert all(row["success"] for row in expert)
    assert sum(row["success"] for row in noisy) < len(noisy) / 4
    # the expert's play is a function of the answers: every episode opens with the same question, and
    # episodes whose answers agree so far ask the same next question
    first = {row["messages"][2]["content"] for row in expert}
    assert len(first) == 1
    next_question: dict[tuple, str] = {}
    for row in expert:
        turns = row["messages"][2:]
        for end in range(1, len(turns) - 1, 2):
            seen = tuple(m["content"] for m in turns[: end + 1])
            assert next_question.setdefault(seen, turns[end + 1]["content"]) == turns[end + 1]["content"]
