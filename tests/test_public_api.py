import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import trainers

PACKAGE = Path(trainers.__file__).parent


@pytest.mark.parametrize("name", trainers.__all__)
def test_every_public_name_resolves_to_its_module(name):
    value = getattr(trainers, name)
    assert value.__name__ == name
    assert importlib.import_module(trainers._EXPORTS[name]) is not None


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'NoSuchTrainer'"):
        trainers.NoSuchTrainer  # noqa: B018


def _type_checking_imports() -> dict[str, str]:
    """``name -> module`` of the imports inside ``if TYPE_CHECKING:`` in ``trainers/__init__.py``."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    blocks = [node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"]
    assert len(blocks) == 1, "trainers/__init__.py needs exactly one `if TYPE_CHECKING:` block"
    found = {}
    for statement in blocks[0].body:
        assert isinstance(statement, ast.ImportFrom), ast.unparse(statement)
        for alias in statement.names:
            found[alias.asname or alias.name] = statement.module
    return found


def test_all_lists_exactly_the_lazy_exports():
    assert sorted(trainers.__all__) == sorted(trainers._EXPORTS)
    assert len(set(trainers.__all__)) == len(trainers.__all__)


def test_editors_see_every_lazy_export_from_the_same_module():
    # The TYPE_CHECKING imports are what IDEs and type checkers read; they must list exactly the
    # lazily exported names, each from the module __getattr__ imports it from.
    assert _type_checking_imports() == trainers._EXPORTS


def test_package_declares_its_inline_types():
    assert (PACKAGE / "py.typed").is_file()


def test_import_trainers_loads_no_test_support():
    # Resolving every public name must not pull in the test helpers or the test Hub's server stack.
    probe = (
        "import sys, trainers\n"
        "for name in trainers.__all__: getattr(trainers, name)\n"
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'olah', 'uvicorn')"
        " or m.startswith('trainers.testing'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


# ------------------------------------------------------------------ one load_trajectories, one converter
DATA = Path(__file__).parent / "data"


def _schema_rows():
    from trainers.data import make_trajectory, to_dataset

    return to_dataset(
        [
            make_trajectory(
                [{"role": "user", "content": f"page {i}"}, {"role": "assistant", "content": f"click[{i}]"}],
                [float(i)],
                id=f"t{i}",
                category="mugs",
            )
            for i in range(3)
        ]
    )


def test_data_load_trajectories_is_the_package_loader(tmp_path, recwarn):
    import trainers.data

    path = tmp_path / "rows.jsonl"
    _schema_rows().to_json(path)
    from_package = trainers.load_trajectories(path, split="train")
    from_data = trainers.data.load_trajectories(path, split="train")
    assert from_data.to_list() == from_package.to_list()
    assert list(from_data["id"]) == ["t0", "t1", "t2"]
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]


@pytest.mark.parametrize("call", ["positional", "keyword"])
def test_data_load_trajectories_with_a_format_is_deprecated_and_still_converts(call):
    import trainers.data

    expected = trainers.data.convert_trajectories(DATA / "eto_webshop_sft.json", "eto")
    with pytest.warns(FutureWarning, match=r"convert_trajectories\(path, 'eto'\)"):
        if call == "positional":
            old = trainers.data.load_trajectories(DATA / "eto_webshop_sft.json", "eto")
        else:
            old = trainers.data.load_trajectories(DATA / "eto_webshop_sft.json", format="eto")
    assert len(expected) > 0
    assert old.to_list() == expected.to_list()
