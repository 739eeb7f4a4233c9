"""BOOST on Twenty Questions (built-in knowledge-base oracle): the recipe of ``examples/boost_webshop.py``.

    accelerate launch examples/boost_twenty_questions.py
    accelerate launch examples/boost_twenty_questions.py --method bilevel --num_real 120 --num_eval_episodes 64

Without ``--dataset`` (e.g. LMRL-Gym twenty-questions data converted with ``trainers.data.converters``),
real episodes are played against the built-in oracle by two scripted askers: an expert that narrows
the object down from the answers (each question splits the objects still possible in half; it names
the one left) and a noisy one (generic questions whose answers it ignores, then guesses of random
objects).
Paper settings (appendix D): GPT-2, α 0 (MC) / 1 (ILQL), batch 8 x 16, K 20, reweighting head depth 2.
"""

from trainers.recipes import boost

if __name__ == "__main__":
    boost.main("twenty_questions")
