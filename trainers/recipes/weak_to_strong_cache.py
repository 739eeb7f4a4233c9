"""Stage cache of the weak-to-strong recipe: every stage's artifact is a folder, written once.

A stage builds its artifact in a staging folder that is renamed into place only when the build
finished (:func:`trainers.hub.atomic_save`), so a study stopped at any point leaves complete
artifacts of its finished stages and nothing else; the next run with the same output folder
loads those and continues with the first unfinished stage. Each artifact keeps the options it
was built with (``stage.json``): a rerun with other options for a finished stage stops with an
error naming the stage and the options that differ, rather than mixing the two runs' artifacts.
Wall times of the stages that ran are kept in ``stage_times.json`` beside them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..checkpointing import write_text_atomically

__all__ = ["StageCache", "StageOptionsChanged"]

STAGE_FILE = "stage.json"
TIMES_FILE = "stage_times.json"
T = TypeVar("T")


class StageOptionsChanged(RuntimeError):
    """A finished stage's artifact was built with other options than this run's."""


class StageCache:
    """Runs named stages under ``root``; a stage whose folder exists is loaded instead of rebuilt."""

    def __init__(self, root: str | os.PathLike, *, log: Callable[[str], None] = print):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = log
        self.ran: list[str] = []  # stages built by this object (not loaded from the cache)

    def path(self, name: str) -> Path:
        return self.root / name

    def done(self, name: str) -> bool:
        return (self.path(name) / STAGE_FILE).is_file()

    def run(self, name: str, build: Callable[[Path], Any], load: Callable[[Path], T], options: dict | None = None) -> T:
        """``load(folder)`` of stage ``name``, after ``build(staging_folder)`` if it has not finished before.

        ``options`` (JSON-serialisable) are what the artifact depends on; a finished stage with
        other options raises :class:`StageOptionsChanged`.
        """
        from trainers.hub import atomic_save

        target = self.path(name)
        options = json.loads(json.dumps(options or {}, sort_keys=True, default=str))
        if self.done(name):
            saved = json.loads((target / STAGE_FILE).read_text(encoding="utf-8")).get("options", {})
            if saved != options:
                changed = sorted(k for k in set(saved) | set(options) if saved.get(k) != options.get(k))
                raise StageOptionsChanged(
                    f"stage {name!r} in {str(target)!r} finished with other options (differ: {', '.join(changed)}). "
                    "Use another --output-dir, or delete that folder (and the stages after it) to rebuild it."
                )
            self.log(f"[cache] {name}: finished before, loading {target}")
            return load(target)
        # a run killed mid-stage (SIGKILL, power loss) leaves its staging folder: one study per folder at a time
        for stale in self.root.glob(f".{name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        start = time.perf_counter()
        with atomic_save(target) as staging:
            build(staging)
            seconds = time.perf_counter() - start
            (staging / STAGE_FILE).write_text(
                json.dumps(
                    {"options": options, "seconds": seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")},
                    indent=2,
                    sort_keys=True,
                ),
                encoding="utf-8",
            )
        self.ran.append(name)
        self._record_time(name, seconds)
        self.log(f"[stage] {name}: {seconds / 60:.1f} min")
        return load(target)

    def times(self) -> dict[str, float]:
        """Seconds per finished stage, as measured when it was built."""
        path = self.root / TIMES_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def _record_time(self, name: str, seconds: float) -> None:
        times = self.times()
        times[name] = round(seconds, 1)
        write_text_atomically(self.root / TIMES_FILE, json.dumps(times, indent=2))


def write_json(folder: Path, name: str, value: Any) -> None:
    (folder / name).write_text(json.dumps(value, indent=2, sort_keys=True, default=str), encoding="utf-8")


def read_json(folder: Path, name: str) -> Any:
    return json.loads((folder / name).read_text(encoding="utf-8"))
