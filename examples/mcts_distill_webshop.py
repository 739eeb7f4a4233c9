"""Weak-to-strong MCTS distillation on the built-in WebShop, offline on CPU (W2SG paper, section 3.2).

``mcts_distill_scienceworld.py`` (offline MCTS over the weak model's trajectory trees, then
:class:`trainers.MCTSDistillTrainer` on the best paths) with ``--env webshop`` as the default;
the data stages are those of ``tree_dpo_webshop.py``: the scripted oracle shopper's purchases on
the first ``--train-tasks`` train goals as expert data, greedy live rollouts on the first
``--test-tasks`` test goals. Prints average reward and success rate (x100).

    .venv/bin/python examples/mcts_distill_webshop.py
    .venv/bin/python examples/mcts_distill_webshop.py --baselines all --tree-dpo
    .venv/bin/python examples/mcts_distill_webshop.py --smoke
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mcts_distill_scienceworld as mcts  # noqa: E402

if __name__ == "__main__":
    mcts.main(__doc__, env="webshop")
