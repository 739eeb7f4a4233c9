"""Weak-to-strong tree-DPO on the built-in WebShop, offline on CPU (W2SG paper, section 3.2).

The pipeline of ``tree_dpo_scienceworld.py`` (see that file for the stages and options) with
``--env webshop`` as the default: expert SFT data are the scripted oracle shopper's purchases on
the first ``--train-tasks`` goals of the train split (every one scores 1); the weak SFT model
explores those goals M times; trajectory trees, divergence-point pairs and Tree-DPO on the strong
SFT model follow; greedy live rollouts on the first ``--test-tasks`` goals of the test split.
G(e) is WebShop's attribute-match score in [0, 1] (the env's default reward); success is a score
of 1. Prints average reward and success rate (x100) per method and writes ``results.md``,
``results.json`` and ``results.png`` under ``--output-dir`` (default ``runs/w2sg-webshop``).

Defaults differ from ScienceWorld's where WebShop's ~1,000-token pages make every step dearer:
6 train goals (``--train-tasks``) and M=4 explorations per goal (``--explore-samples``). With 8
train goals and M=6 the run took ~28 minutes on a quiet 2-core CPU (weak SFT 2.4 min, Gemma SFT
4.5 min, 48 explorations 6.5 min), far over the ~20 minutes the ScienceWorld examples keep to. DPO drops pairs
whose shared prefix alone fills ``--max-prompt-tokens`` + ``--max-new-tokens`` tokens and says
how many. Measured with these defaults on a quiet machine: 21.4 min (weak SFT 1.8 min, Gemma SFT
3.3 min, Tree-DPO on 6 of 7 pairs 3.8 min); every method scored 0 on the 8 test goals, since 6
demonstrations do not teach a 135M or 270M model to shop for unseen goals.

    .venv/bin/python examples/tree_dpo_webshop.py
    .venv/bin/python examples/tree_dpo_webshop.py --train-tasks 32 --test-tasks 32 --explore-samples 6
    .venv/bin/python examples/tree_dpo_webshop.py --smoke      # checks every stage: 2 train / 2 test goals
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tree_dpo_scienceworld as shared  # noqa: E402

if __name__ == "__main__":
    shared.main(__doc__, env="webshop")
