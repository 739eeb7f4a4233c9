"""Weak-to-strong MCTS distillation on the real ScienceWorld, offline on CPU (W2SG paper, section 3.2).

The stages of ``tree_dpo_scienceworld.py`` (expert gold paths, weak and strong SFT, weak
exploration, trajectory trees; all cached under ``--output-dir``, default
``runs/w2sg-scienceworld``, so the two examples share their SFT models and explorations), then
offline MCTS over every tree (UCB with c=1.41, 1000 iterations, leaf value = empirical mean
outcome, no environment calls), the best ``--paths-per-task`` path(s) of each task whose value is
above ``--min-path-value`` (default 0), and :class:`trainers.MCTSDistillTrainer` SFT of the strong
SFT model on those paths, ``--distill-epochs`` 2 at ``--sft-lr`` 2e-4. Evaluated with greedy live
rollouts next to SFT weak and SFT strong; mean ± s.e. of avg reward and success (x100).

Timed on 2026-11-26 on a 2-core CPU shared with another job: after ``tree_dpo_scienceworld.py``
in the same ``--output-dir`` it took 2.0 min (MCTS distillation 1.2, evaluation 0.5); from an
empty folder the shared stages add 6.5 min (weak SFT, exploration, strong SFT, two evaluations),
about 9 min in all. MCTS distillation scored 25.0 over 8 episodes, as SFT strong.

    python examples/mcts_distill_scienceworld.py
    python examples/mcts_distill_scienceworld.py --methods all --paths-per-task 2
    python examples/mcts_distill_scienceworld.py --smoke
"""

from trainers.recipes.weak_to_strong_study import main

if __name__ == "__main__":
    main(__doc__, env="scienceworld", defaults={"methods": "sft-weak,sft-strong,mcts"})
