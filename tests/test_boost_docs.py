"""docs/boost.md's configuration table matches BilevelReweightConfig: every BOOST field, its default."""

import re
from dataclasses import MISSING, fields
from pathlib import Path

from trainers import BilevelReweightConfig, OfflineRLConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "boost.md"


def _table():
    text = DOC.read_text()
    section = text[text.index("## Configuration") :]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `(\w+)` \| `([^`]*)` \|", line)
        if match:
            assert match.group(1) not in rows, f"{match.group(1)} listed twice"
            rows[match.group(1)] = match.group(2)
    return rows


def _doc_default(value) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def test_config_table_lists_every_boost_field_with_its_default():
    inherited = {f.name for f in fields(OfflineRLConfig)}
    own = {f.name: f.default for f in fields(BilevelReweightConfig) if f.name not in inherited}
    table = _table()
    assert set(table) == set(own), (set(own) - set(table), set(table) - set(own))
    for name, default in own.items():
        assert default is not MISSING
        assert table[name] == _doc_default(default), (name, table[name], default)
