"""The trainer pages' config tables list exactly the fields each config adds or changes, with their defaults."""

import dataclasses
import re
from pathlib import Path

import pytest

from trainers.mcts_distill_config import MCTSDistillConfig
from trainers.tree_dpo_config import TreeDPOConfig

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _table(page):
    rows = {}
    for line in (DOCS / page).read_text().splitlines():
        match = re.match(r"\| `(\w+)` \| [^|]+ \| `([^`]*)` \|", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


@pytest.mark.parametrize("config, page", [(TreeDPOConfig, "tree_dpo.md"), (MCTSDistillConfig, "mcts_distill.md")])
def test_config_table_matches_the_config(config, page):
    own = [f for f in dataclasses.fields(config) if f.name in vars(config)["__annotations__"]]
    table = _table(page)
    assert sorted(table) == sorted(f.name for f in own)
    for f in own:
        assert table[f.name] == str(f.default), f.name
        # the help text says as much as the docstring: every field documented in both
        assert len(f.metadata["help"]) > 30 and f"{f.name} (`" in config.__doc__, f.name
