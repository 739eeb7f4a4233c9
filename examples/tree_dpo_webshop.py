"""Weak-to-strong Tree-DPO on the built-in WebShop, offline on CPU (W2SG paper, section 3.2).

The recipe of ``tree_dpo_scienceworld.py`` (see there for the stages and options) on WebShop:
expert SFT data are the scripted oracle shopper's purchases on the first ``--train-tasks`` goals
of the train split (every one scores 1); the weak SFT model explores those goals M times; trees,
divergence-point pairs and Tree-DPO (with the NLL term) on the strong SFT model follow; greedy
live rollouts on the first ``--test-tasks`` goals of the test split. G(e) is WebShop's
attribute-match score in [0, 1]; success is a score of 1. Stages cache under ``--output-dir``
(default ``runs/w2sg-webshop``).

Defaults differ from ScienceWorld's where WebShop's ~1,000-token pages make every step dearer:
6 train goals and M=4 explorations per goal. The version of this run before the NLL term took
21.4 min on a quiet 2-core CPU, and every method scored 0 on the 8 test goals (6 demonstrations
do not teach a 135M or 270M model to shop for unseen goals); these defaults were not timed again.

    python examples/tree_dpo_webshop.py
    python examples/tree_dpo_webshop.py --train-tasks 32 --test-tasks 32 --explore-samples 6
    python examples/tree_dpo_webshop.py --smoke
"""

from trainers.recipes.weak_to_strong_study import main

if __name__ == "__main__":
    main(__doc__, env="webshop", defaults={"methods": "sft-weak,sft-strong,tree-dpo"})
