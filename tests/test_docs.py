"""The trainer pages in docs/ agree with the code: config tables list exactly the config's fields,
with their defaults, and relative links point at files that exist.

A page opts a table in with a marker line right above it::

    <!-- config-table: trainers.OfflineRLConfig -->
    | field | default | ... |
    |---|---|---|
    | `loss_type` | `"mc"` | ... |

The table lists the fields declared in that class's own body (for a subclass of another config,
its own fields; TrainingArguments fields appear only where the class re-declares them), and the
first code span of the `default` column is the default, as a Python literal (a bare word for a string).
"""

import ast
import dataclasses
import enum
import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md"]
MARKER = re.compile(r"^<!--\s*config-table:\s*([\w.]+)\s*-->\s*$")
CODE = re.compile(r"`([^`]+)`")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def config_tables() -> list[tuple[Path, str, list[dict[str, str]]]]:
    """``(page, dotted class name, rows as {column: cell})`` for every marked table in docs/."""
    tables = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        for number, line in enumerate(lines):
            match = MARKER.match(line)
            if not match:
                continue
            body = []
            for following in lines[number + 1 :]:
                if not following.strip() and not body:
                    continue
                if not following.lstrip().startswith("|"):
                    break
                body.append(following)
            assert len(body) >= 2, f"{page.name}:{number + 1}: the config-table marker is not followed by a table"
            header = [cell.lower() for cell in _cells(body[0])]
            rows = [dict(zip(header, _cells(row))) for row in body[2:]]
            tables.append((page, match.group(1), rows))
    return tables


def _config_class(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def own_fields(config_class: type) -> dict[str, dataclasses.Field]:
    by_name = {f.name: f for f in dataclasses.fields(config_class)}
    return {name: by_name[name] for name in vars(config_class).get("__annotations__", {}) if name in by_name}


def _default(field: dataclasses.Field):
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _same_default(cell: str, default) -> bool:
    """A Python literal (`"mc"`, `1e-4`, `None`) equal to the default, or a bare string (`cosine`) equal to it."""
    if isinstance(default, enum.Enum):
        default = default.value
    try:
        return ast.literal_eval(cell) == default
    except (ValueError, SyntaxError):
        return isinstance(default, str) and cell == default


TABLES = config_tables()


def test_the_trainer_pages_carry_their_config_tables():
    documented = {name for _, name, _ in TABLES}
    expected = {
        "trainers.OfflineRLConfig",
        "trainers.BilevelReweightConfig",
        "trainers.TreeDPOConfig",
        "trainers.MCTSDistillConfig",
    }
    assert expected <= documented, f"trainer pages without a checked config table: {sorted(expected - documented)}"


@pytest.mark.parametrize("page,name,rows", TABLES, ids=[f"{p.name}:{n}" for p, n, _ in TABLES])
def test_config_table_lists_exactly_the_fields_with_their_defaults(page, name, rows):
    config_class = _config_class(name)
    assert rows, f"{page.name}: the {name} table has no rows"
    assert "field" in rows[0] and "default" in rows[0], f"{page.name}: the {name} table needs field and default columns"
    listed = [CODE.search(row["field"]).group(1) for row in rows]
    fields = own_fields(config_class)
    assert sorted(set(listed)) == sorted(listed), f"{page.name}: fields listed twice in the {name} table"
    missing, unknown = sorted(set(fields) - set(listed)), sorted(set(listed) - set(fields))
    assert not missing and not unknown, f"{page.name}: {name} table misses {missing}, lists unknown {unknown}"
    for field_name, row in zip(listed, rows):
        code = CODE.search(row["default"])
        assert code, f"{page.name}: {name}.{field_name} has no `default` code span"
        assert _same_default(code.group(1), _default(fields[field_name])), f"{page.name}: {name}.{field_name}"


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_relative_links_point_at_files_that_exist(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        if not (page.parent / target).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)} links to missing files: {broken}"
