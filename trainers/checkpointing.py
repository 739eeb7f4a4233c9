"""Crash-safe checkpoints for ``transformers.Trainer`` subclasses.

A process killed at any instant (``kill -9``, out of memory, a pre-empted node) must leave an
output folder that resumes. Transformers writes ``checkpoint-N`` in place, file after file, picks
the highest ``N`` on ``resume_from_checkpoint=True`` whatever it holds, and rotates by modification
time with ``shutil.rmtree`` in place. :class:`CrashSafeCheckpointMixin` changes three things:

* **write**: every checkpoint is written into a hidden staging folder (``.staging-checkpoint-N``),
  then :data:`COMPLETE_MARKER` (every file with its size) is written last, and the folder is
  renamed to ``checkpoint-N``. A folder with the public name is therefore complete; subclasses add
  their own files with :meth:`~CrashSafeCheckpointMixin._save_checkpoint_extras`, which runs inside
  the staging folder before the rename;
* **rotate**: by step number, never by modification time. The checkpoint just written and the best
  one are always kept, then the newest others up to ``save_total_limit``. A checkpoint is renamed
  to a hidden trash name before it is deleted, so a kill mid-deletion never leaves a half-deleted
  folder that looks like a checkpoint;
* **resume**: ``resume_from_checkpoint=True`` takes the newest *complete* checkpoint (marker
  present, every listed file there with its size) and logs the incomplete ones it skipped; an
  explicit path that is incomplete raises :class:`IncompleteCheckpointError` naming what is missing.

Leftover staging and trash folders (from a kill) are removed at the next save or resume.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

logger = logging.getLogger(__name__)

#: Written last into a checkpoint: ``{"step": N, "files": {relative path: size in bytes}}``.
COMPLETE_MARKER = "checkpoint_complete.json"
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
_CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


class IncompleteCheckpointError(FileNotFoundError):
    """A checkpoint folder lacks files (its save was interrupted, or it was written by another tool)."""


# ------------------------------------------------------------------------------------------ inspection
def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step of a ``checkpoint-N`` folder name (``None`` for any other name)."""
    match = _CHECKPOINT_NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def incomplete_reason(folder: str | os.PathLike) -> str | None:
    """``None`` when ``folder`` is a complete checkpoint, else why it is not (for messages)."""
    folder = Path(folder)
    marker = folder / COMPLETE_MARKER
    if not marker.is_file():
        return f"{COMPLETE_MARKER} is missing (the save was interrupted, or the folder was not written by this library)"
    try:
        files = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError, TypeError) as error:
        return f"{COMPLETE_MARKER} is unreadable ({error})"
    for name, size in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
    return None


def list_checkpoints(run_dir: str | os.PathLike) -> tuple[list[Path], dict[Path, str]]:
    """``(complete checkpoints oldest first by step, {incomplete checkpoint: reason})`` in ``run_dir``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return [], {}
    found = sorted((checkpoint_step(p), p) for p in run_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None)
    complete, incomplete = [], {}
    for _, path in found:
        reason = incomplete_reason(path)
        if reason is None:
            complete.append(path)
        else:
            incomplete[path] = reason
    return complete, incomplete


def latest_complete_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint in ``run_dir`` (by step); logs the newer incomplete ones it skips."""
    complete, incomplete = list_checkpoints(run_dir)
    latest = complete[-1] if complete else None
    latest_step = checkpoint_step(latest) if latest is not None else -1
    for path, reason in incomplete.items():
        if checkpoint_step(path) > latest_step:
            logger.warning("skipping incomplete checkpoint %s: %s", path, reason)
    return latest


def check_complete(folder: str | os.PathLike) -> None:
    """Raise :class:`IncompleteCheckpointError` if ``folder`` is not a complete checkpoint."""
    folder = Path(folder)
    if not folder.is_dir():
        raise IncompleteCheckpointError(f"checkpoint {str(folder)!r} does not exist")
    reason = incomplete_reason(folder)
    if reason is not None:
        complete, _ = list_checkpoints(folder.parent)
        hint = f"; the newest complete checkpoint beside it is {str(complete[-1])!r}" if complete else ""
        raise IncompleteCheckpointError(f"checkpoint {str(folder)!r} is incomplete: {reason}{hint}")


# ------------------------------------------------------------------------------------------ file moves
def _fsync_tree(folder: Path) -> None:
    """Flush file contents before the rename, so that a power loss cannot publish empty files."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(descriptor)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(descriptor)


def write_complete_marker(folder: str | os.PathLike, step: int | None = None) -> None:
    """Record every file of ``folder`` with its size; the marker itself goes in last, atomically."""
    folder = Path(folder)
    files = {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != COMPLETE_MARKER and not path.name.startswith(".")
    }
    temporary = folder / f".{COMPLETE_MARKER}.tmp"
    temporary.write_text(json.dumps({"step": step, "files": files}, indent=1, sort_keys=True))
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, folder / COMPLETE_MARKER)


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a staging file and a rename: a kill leaves the old file or the new one."""
    path = Path(path)
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)


def discard(folder: str | os.PathLike) -> None:
    """Delete ``folder`` so that no kill leaves it half-deleted under its own name: rename, then delete."""
    folder = Path(folder)
    if not folder.exists():
        return
    trash = folder.parent / f"{TRASH_PREFIX}{folder.name}-{uuid.uuid4().hex[:8]}"
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def publish(staging: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename the finished ``staging`` folder to ``target`` (an older ``target`` is discarded first)."""
    staging, target = Path(staging), Path(target)
    _fsync_tree(staging)
    if target.exists():
        discard(target)
    os.replace(staging, target)
    fsync_dir(target.parent)


def remove_leftovers(run_dir: str | os.PathLike) -> None:
    """Delete staging and trash folders that a killed process left in ``run_dir``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    for path in run_dir.iterdir():
        if path.name.startswith((STAGING_PREFIX, TRASH_PREFIX)) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def rotate(
    run_dir: str | os.PathLike, limit: int | None, *, keep: str | os.PathLike, best: str | os.PathLike | None = None
) -> list[Path]:
    """Delete checkpoints beyond ``limit``; returns the deleted ones.

    Kept: ``keep`` (the checkpoint just written), ``best``, every complete checkpoint newer than
    ``keep`` (after a resume from an earlier checkpoint they are overwritten as the run gets there;
    a complete checkpoint newer than one kept is never deleted), then the newest others by step
    until ``limit`` are kept. Everything else goes, incomplete checkpoints included (resume never
    picks those). Order is by step, never modification time: a folder touched by an interrupted
    deletion must not look new.
    """
    if limit is None or limit <= 0:
        return []
    complete, incomplete = list_checkpoints(run_dir)
    kept = {Path(keep).resolve()}
    if best is not None and Path(best).is_dir():
        kept.add(Path(best).resolve())
    keep_step = checkpoint_step(keep)
    kept.update(path.resolve() for path in complete if keep_step is not None and checkpoint_step(path) > keep_step)
    for path in reversed(complete):
        if len(kept) >= limit:
            break
        kept.add(path.resolve())
    deleted = [p for p in [*complete, *incomplete] if p.resolve() not in kept]
    for path in deleted:
        logger.info("deleting checkpoint %s (save_total_limit=%s)", path, limit)
        discard(path)
    return deleted


# ------------------------------------------------------------------------------------------ the mixin
class CrashSafeCheckpointMixin:
    """Put before ``transformers.Trainer`` in the bases: staged checkpoints, safe rotation and resume.

    Subclasses with extra state override :meth:`_save_checkpoint_extras` (it writes into the staging
    folder, which becomes ``checkpoint-N`` only after everything is there).
    """

    def _save_checkpoint_extras(self, checkpoint_dir: str) -> None:
        """Write subclass state (optimizers of extra modules, ...) into the staging checkpoint folder."""

    def _save_checkpoint(self, model, trial) -> None:
        # The same pieces, in the same order, as Trainer._save_checkpoint, but into a staging folder.
        from transformers.trainer_callback import ExportableState
        from transformers.trainer_utils import SaveStrategy

        args = self.args
        step = self.state.global_step
        name = f"{PREFIX_CHECKPOINT_DIR}-{step}"
        if self.hp_search_backend is None and trial is None:
            self.store_flos()
        run_dir = self._get_output_dir(trial=trial)
        final_dir = os.path.join(run_dir, name)
        staging = os.path.join(run_dir, f"{STAGING_PREFIX}{name}")
        if args.should_save:
            os.makedirs(run_dir, exist_ok=True)
            remove_leftovers(run_dir)
        self.accelerator.wait_for_everyone()
        os.makedirs(staging, exist_ok=True)

        self.save_model(staging, _internal_call=True)
        saves_best = args.save_strategy in (SaveStrategy.STEPS, SaveStrategy.EPOCH, SaveStrategy.BEST)
        if saves_best and self.state.best_global_step:
            best_dir = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}")
            # the best may be the checkpoint being written: record the name it will have
            if self.state.best_global_step == step or os.path.exists(best_dir):
                self.state.best_model_checkpoint = best_dir
        if not args.save_only_model:
            self._save_optimizer_and_scheduler(staging)
            self._save_scaler(staging)
            self._save_rng_state(staging)
        if args.should_save:
            callbacks = self.callback_handler.callbacks + [self.control]
            stateful = [cb for cb in callbacks if isinstance(cb, ExportableState)]
            for callback in stateful:
                callback_name = type(callback).__name__
                if isinstance(self.state.stateful_callbacks[callback_name], list):
                    self.state.stateful_callbacks[callback_name].append(callback.state())
                else:
                    self.state.stateful_callbacks[callback_name] = callback.state()
            self.state.save_to_json(os.path.join(staging, "trainer_state.json"))
        self._save_checkpoint_extras(staging)
        # every process has written its shards / RNG state before the folder is sealed and renamed
        self.accelerator.wait_for_everyone()
        if args.should_save:
            write_complete_marker(staging, step)
            publish(staging, final_dir)
        self.accelerator.wait_for_everyone()
        if args.push_to_hub:
            self._push_from_checkpoint(final_dir)
        if args.should_save:
            rotate(run_dir, args.save_total_limit, keep=final_dir, best=self.state.best_model_checkpoint)

    def train(self, resume_from_checkpoint: str | bool | None = None, *positional, **kwargs):
        if isinstance(resume_from_checkpoint, bool) and resume_from_checkpoint:
            output_dir = self.args.output_dir
            if self.args.should_save:
                remove_leftovers(output_dir)
            latest = latest_complete_checkpoint(output_dir)
            if latest is None:
                _, incomplete = list_checkpoints(output_dir)
                skipped = "".join(f"\n  {path}: {reason}" for path, reason in incomplete.items())
                detail = " (it holds no checkpoint-N folder)"
                if skipped:
                    detail = (
                        f"; skipped:{skipped}\n(a checkpoint written without {COMPLETE_MARKER}, by an older "
                        "version, resumes when its path is passed explicitly)"
                    )
                raise IncompleteCheckpointError(
                    f"resume_from_checkpoint=True: no complete checkpoint in {str(output_dir)!r}{detail}"
                )
            logger.info("resuming from %s", latest)
            resume_from_checkpoint = str(latest)
        elif resume_from_checkpoint:
            folder = Path(resume_from_checkpoint)
            if (folder / COMPLETE_MARKER).is_file() or not (folder / "trainer_state.json").is_file():
                # checkpoints written here carry the marker; older ones at least need their trainer state
                check_complete(folder)
        return super().train(resume_from_checkpoint, *positional, **kwargs)


__all__ = [
    "COMPLETE_MARKER",
    "CrashSafeCheckpointMixin",
    "IncompleteCheckpointError",
    "check_complete",
    "checkpoint_step",
    "discard",
    "latest_complete_checkpoint",
    "list_checkpoints",
    "publish",
    "remove_leftovers",
    "rotate",
    "write_complete_marker",
    "write_text_atomically",
]
