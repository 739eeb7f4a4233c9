"""Weak-to-strong tree-DPO on the built-in WebShop, offline on CPU (W2SG paper, section 3.2).

The pipeline of ``tree_dpo_scienceworld.py`` (see that file for the stages and options) with
``--env webshop`` as the default: expert SFT data are the scripted oracle shopper's purchases on
the first ``--train-tasks`` goals of the train split (every one scores 1); the weak SFT model
explores those goals M times; trajectory trees, divergence-point pairs and Tree-DPO on the strong
SFT model follow; greedy live rollouts on the first ``--test-tasks`` goals of the test split.
G(e) is WebShop's attribute-match score in [0, 1] (the env's default reward); success is a score
of 1. Prints average reward and success rate (x100) per method and writes ``results.md``,
``results.json`` and ``results.png`` under ``--output-dir`` (default ``runs/w2sg-webshop``).

Measured with the defaults on a 2-core CPU shared with two other training jobs: 25.7 min, over
the ~20 minutes the ScienceWorld defaults keep to (WebShop pages make ~1,000-token prompts: SFT
4 min, 48 explorations ~10 min, Tree-DPO on 11 pairs 7 min). The weak SFT model buys the right
product on many *train* goals (explorations score 0 to 1) but only 8.3 avg reward on the 8 test
goals: 8 demonstrations are too few to generalise; ``--train-tasks 32`` costs ~4x the SFT time.

    .venv/bin/python examples/tree_dpo_webshop.py
    .venv/bin/python examples/tree_dpo_webshop.py --strong gemma3-270m --train-tasks 32 --test-tasks 32
    .venv/bin/python examples/tree_dpo_webshop.py --smoke      # checks every stage: 2 train / 2 test goals
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tree_dpo_scienceworld as shared  # noqa: E402

if __name__ == "__main__":
    shared.main(__doc__, env="webshop")
