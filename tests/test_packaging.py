"""The wheel carries the package and the card templates, and they are found from an install."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True,
        cwd=REPO,
    )
    (built,) = out.glob("trajectory_trainers-*.whl")
    return built


@pytest.mark.slow
def test_wheel_ships_every_card_template(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = sorted(p.name for p in (REPO / "hub_cards").glob("*.md"))
    assert templates, "hub_cards/ holds no templates"
    for name in templates:
        assert f"trainers/hub_cards/{name}" in names
    assert "trainers/py.typed" in names  # type checkers only read inline types of packages that declare them


@pytest.mark.slow
def test_installed_wheel_finds_templates_outside_the_checkout(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True
    )
    probe = (
        "import importlib.resources, trainers, sys;"
        "root = importlib.resources.files('trainers').joinpath('hub_cards');"
        "names = sorted(p.name for p in root.iterdir() if p.name.endswith('.md'));"
        "print(trainers.__file__); print(','.join(names))"
    )
    # -I would also drop site-packages with the dependencies, so isolate the checkout by cwd and
    # by putting the installed copy first on the path.
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    location, names = result.stdout.strip().splitlines()
    assert location.startswith(str(target))
    assert set(names.split(",")) >= {p.name for p in (REPO / "hub_cards").glob("*.md")}
