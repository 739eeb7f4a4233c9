"""Weak-to-strong MCTS distillation on the built-in WebShop, offline on CPU (W2SG paper, section 3.2).

``mcts_distill_scienceworld.py`` (offline MCTS over the weak model's trajectory trees, then
:class:`trainers.MCTSDistillTrainer` on the best paths) on WebShop; the data stages are those of
``tree_dpo_webshop.py`` (the scripted oracle's purchases on the first ``--train-tasks`` train goals,
greedy live rollouts on the first ``--test-tasks`` test goals), cached under the same
``--output-dir``. Prints mean ± s.e. of avg reward and success (x100). Not timed with these defaults.

    python examples/mcts_distill_webshop.py
    python examples/mcts_distill_webshop.py --methods all
    python examples/mcts_distill_webshop.py --smoke
"""

from trainers.recipes.weak_to_strong_study import main

if __name__ == "__main__":
    main(__doc__, env="webshop", defaults={"methods": "sft-weak,sft-strong,mcts"})
