"""BOOST on Twenty Questions (built-in knowledge-base oracle): the recipe of ``examples/boost_webshop.py``.

    accelerate launch examples/boost_twenty_questions.py
    accelerate launch examples/boost_twenty_questions.py --method bilevel --num_real 120 --num_eval_episodes 64

Without ``--dataset`` (e.g. LMRL-Gym twenty-questions data converted with ``trainers.data.converters``),
real episodes are played against the built-in oracle by two scripted askers: an expert that knows
the object (asks about its category, then names it) and a noisy one (generic questions, then
guesses objects of random categories).
Paper settings (appendix D): GPT-2, α 0 (MC) / 1 (ILQL), batch 8 x 16, K 20, reweighting head depth 2.
"""

from trainers.recipes import boost

if __name__ == "__main__":
    boost.main("twenty_questions")
