"""ScienceWorld as a :class:`~trainers.envs.base.TextEnv`, over the real ``scienceworld`` simulator.

The simulator is a Scala program driven through py4j. Starting its JVM costs ~2 s and ~0.5 GB,
so this module starts **one** JVM per process (one ``scienceworld.ScienceWorldEnv`` object, kept
in a module global) and every :class:`ScienceWorldEnv` reuses it: each instance owns its own
simulator session (a second ``PythonInterface`` object inside the same JVM), so several
episodes can run side by side (the batched rollout harness makes one env per concurrent
episode) while a task switch is only a ``load`` (~0.1-0.5 s).

Rewards
-------
ScienceWorld scores an episode 0-100 with partial credit for sub-goals, and -100 when the agent
does something that makes the task impossible (e.g. focusing on the wrong object).

* ``info["score"]``: the simulator's raw score after the step (-100..100), as the original reports it.
* ``info["normalized_score"]``: ``max(score, 0) / 100`` in [0, 1], the trajectory score G(e) of
  the weak-to-strong paper (a failed task counts 0, as in ETO / W2SG evaluation).
* ``reward`` (training reward): the change of the normalised score over the step, so the rewards
  of an episode sum to its final normalised score. A step that makes the task fail returns minus
  the credit gathered so far, which keeps that sum exact.
* ``info["success"]``: the raw score reached 100.

Observations follow the ETO / TraTree data layout (what converted expert and weak data look
like): ``reset`` returns the task description; every later observation is prefixed with
``"Observation: "`` (``observation_prefix``).
"""

from __future__ import annotations

import atexit
import json
import os
import tempfile
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from tqdm.auto import tqdm

from ..data.schema import make_trajectory
from .base import StepResult, Task, extract_action

#: The simulator's answers to actions that change nothing: refused input, a door already open, a room
#: not reachable from here. Tree-DPO never prefers a branch that starts with one (``no_effect_pattern``).
NO_EFFECT_PATTERN = r"No known action matches|is already open|It's not clear how to get there"

#: Splits of ScienceWorld's variations; "val"/"validation" are accepted for "dev".
SPLITS = ("train", "dev", "test")
_SPLIT_ALIASES = {"train": "train", "dev": "dev", "val": "dev", "validation": "dev", "test": "test"}

SYSTEM_PROMPT = (
    "You are an agent carrying out an elementary science experiment in a simulated house with these "
    "rooms: kitchen, foundry, workshop, bathroom, outside, living room, bedroom, greenhouse, art studio "
    "and hallway. Explore, find what the task needs and complete it. You can teleport to any room in a "
    "single step, and containers are already open.\n"
    "Actions you can take (OBJ is an object, LOC a room):\n"
    "- look around / look at OBJ / examine OBJ / read OBJ / inventory / task\n"
    "- open OBJ / close OBJ / activate OBJ / deactivate OBJ\n"
    "- connect OBJ to OBJ / disconnect OBJ / use OBJ [on OBJ]\n"
    "- pick up OBJ / put down OBJ / move OBJ to OBJ / pour OBJ into OBJ / mix OBJ / dunk OBJ into OBJ\n"
    "- eat OBJ / flush OBJ / teleport to LOC / go to LOC\n"
    "- focus on OBJ (declares the object the task is about: focusing on the wrong one fails the task)\n"
    "- wait (ten steps) / wait1 (one step)\n"
    "When the environment answers that no known action matches, the action was not understood; try "
    "another one.\n"
    "Answer every turn in this format:\nThought: <your reasoning>\nAction: <one action>"
)


# --------------------------------------------------------------------------------------------
# One JVM per process


class _Backend:
    """The process-wide simulator: one ``scienceworld.ScienceWorldEnv`` and its JVM."""

    _lock = threading.Lock()
    _instance: Any = None  # scienceworld.ScienceWorldEnv
    # task name -> {"train": [...], "dev": [...], "test": [...]}; the variation lists depend on the
    # loaded task in the simulator, so they are queried once per task and cached.
    _variations: dict[str, dict[str, list[int]]] = {}

    @classmethod
    def get(cls):
        with cls._lock:
            if cls._instance is None:
                try:
                    from scienceworld import ScienceWorldEnv as _SimulatorEnv
                except ImportError as error:  # optional dependency
                    raise ImportError(
                        "the ScienceWorld environment needs the 'scienceworld' package and Java 17: "
                        "pip install 'trajectory-trainers[envs]' (or pip install scienceworld==1.2.3)"
                    ) from error
                cls._instance = _SimulatorEnv("", envStepLimit=10_000)
                atexit.register(cls.shutdown)
            return cls._instance

    @classmethod
    def new_session(cls):
        """A fresh simulator session (``PythonInterface``) inside the shared JVM."""
        base = cls.get()
        return base._gateway.jvm.scienceworld.runtime.pythonapi.PythonInterface()

    @classmethod
    def task_names(cls) -> list[str]:
        return list(cls.get().get_task_names())

    @classmethod
    def variations(cls, task_name: str) -> dict[str, list[int]]:
        with cls._lock:
            if not cls._variations:
                cls._variations.update(_read_variation_cache())
            cached = cls._variations.get(task_name)
        if cached is not None:
            return cached
        base = cls.get()
        with cls._lock:
            base.load(task_name, 0, "easy", generateGoldPath=False)
            cached = {
                "train": list(base.get_variations_train()),
                "dev": list(base.get_variations_dev()),
                "test": list(base.get_variations_test()),
            }
            cls._variations[task_name] = cached
            _write_variation_cache(cls._variations)
        return cached

    @classmethod
    def shutdown(cls):
        with cls._lock:
            if cls._instance is not None:
                try:
                    cls._instance.close()
                except Exception:  # the JVM may already be gone at interpreter exit
                    pass
                cls._instance = None


def _variation_cache_path():
    from pathlib import Path

    try:
        from scienceworld.version import __version__ as version
    except ImportError:
        version = "unknown"
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "trainers" / f"scienceworld-{version}-variations.json"


def _read_variation_cache() -> dict[str, dict[str, list[int]]]:
    # The train/dev/test variation lists are fixed per simulator version; listing them needs a
    # task load each (~9 s for all 30 tasks), so they are kept on disk once seen.
    path = _variation_cache_path()
    try:
        data = json.loads(path.read_text())
        return {k: v for k, v in data.items() if isinstance(v, dict) and set(v) == set(SPLITS)}
    except (OSError, ValueError):
        return {}


def _write_variation_cache(variations: dict[str, dict[str, list[int]]]) -> None:
    path = _variation_cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(handle, "w") as file:
            json.dump(variations, file)
        os.replace(temporary, path)
    except OSError:  # a read-only home only costs the next process the task loads
        pass


def scienceworld_task_names() -> list[str]:
    """The 30 ScienceWorld task names, as the simulator reports them (starts the JVM if needed)."""
    return _Backend.task_names()


# --------------------------------------------------------------------------------------------
# The environment


class ScienceWorldEnv:
    """ScienceWorld tasks as a multi-turn text environment (registered as ``make_env("scienceworld")``).

    Args:
        max_steps: agent steps per episode before ``done`` (default 100, the ``scienceworld``
            package's ``envStepLimit`` default; the papers do not state theirs). The step that
            reaches the cap returns ``done=True`` with ``info["truncated"] = True``.
        simplification: ScienceWorld simplification string (default ``"easy"``: teleport actions,
            open containers and doors, self-watering pots, no electrical actions except where the
            task needs them; the setting ETO and W2SG evaluate with).
        task_names: restrict :meth:`tasks` to these ScienceWorld task names (default: all 30).
        max_variations_per_task: keep at most this many variations per task and split (the first
            ones in the simulator's order; default: all; ETO subsamples to 1,483 train / 194 dev /
            211 test episodes overall).
        observation_prefix: prepended to every observation after the first (default
            ``"Observation: "``, the ETO / TraTree data layout).
        full_info: when True every step also reports the original's ``look``, ``inv`` and
            ``valid`` (valid action list) entries; that costs ~100 ms per step against ~10 ms
            without, so it is off by default.
        auto_disambiguate: when an action matches several objects the simulator answers
            "Ambiguous request" with a numbered list and waits for a number. With True (off by
            default, which keeps the original behaviour) the first reading, ``0``, is chosen
            within the same step and its observation returned; ``info["disambiguated"]`` is set.
    """

    name = "scienceworld"
    system_prompt = SYSTEM_PROMPT

    def __init__(
        self,
        *,
        max_steps: int = 100,
        simplification: str = "easy",
        task_names: Sequence[str] | None = None,
        max_variations_per_task: int | None = None,
        observation_prefix: str = "Observation: ",
        full_info: bool = False,
        auto_disambiguate: bool = False,
    ):
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if max_variations_per_task is not None and max_variations_per_task < 1:
            raise ValueError(f"max_variations_per_task must be >= 1 or None, got {max_variations_per_task}")
        self.max_steps = max_steps
        self.simplification = simplification
        self.max_variations_per_task = max_variations_per_task
        self.observation_prefix = observation_prefix
        self.full_info = full_info
        self.auto_disambiguate = auto_disambiguate
        allowed = ["easy"] + list(_Backend.get().get_possible_simplifications())
        wrong = [part for part in simplification.split(",") if part and part not in allowed]
        if wrong:
            raise ValueError(
                f"unknown ScienceWorld simplification(s) {wrong}; allowed: {', '.join(allowed)} (comma-separated)"
            )
        known = _Backend.task_names()
        if task_names is not None:
            unknown = [name for name in task_names if name not in known]
            if unknown:
                raise ValueError(f"unknown ScienceWorld task(s) {unknown}; known tasks: {', '.join(known)}")
            self.task_names = list(task_names)
        else:
            self.task_names = known
        self._server = _Backend.new_session()
        self._loaded: tuple[str, int, bool] | None = None
        self._fresh = False  # True while the loaded task has not been stepped
        self._task: Task | None = None
        self._steps = 0
        self._last_score = 0
        self._done = True

    # -- tasks -------------------------------------------------------------------------------

    def tasks(self, split: str | None = "train") -> list[Task]:
        """One :class:`Task` per (task name, variation) of ``split``; ``category`` is the task name."""
        split_name = _SPLIT_ALIASES.get(split or "train")
        if split_name is None:
            raise ValueError(f"unknown ScienceWorld split {split!r}; use one of {', '.join(SPLITS)}")
        out = []
        names = self.task_names
        for task_name in tqdm(names, desc="ScienceWorld variations", disable=len(names) < 5, leave=False):
            variations = _Backend.variations(task_name)[split_name]
            if self.max_variations_per_task is not None:
                variations = variations[: self.max_variations_per_task]
            for variation in variations:
                out.append(
                    Task(
                        task_id=f"{task_name}-{variation}",
                        category=task_name,
                        spec={"task_name": task_name, "variation": int(variation)},
                        split=split_name,
                    )
                )
        return out

    @staticmethod
    def task(task_name: str, variation: int, split: str = "train") -> Task:
        """Build the :class:`Task` for one ScienceWorld task name and variation index."""
        return Task(
            task_id=f"{task_name}-{variation}",
            category=task_name,
            spec={"task_name": task_name, "variation": int(variation)},
            split=_SPLIT_ALIASES.get(split, split),
        )

    # -- episode -----------------------------------------------------------------------------

    def _load(self, task: Task, gold_path: bool) -> None:
        try:
            task_name, variation = task.spec["task_name"], int(task.spec["variation"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"task {task.task_id!r}: spec needs 'task_name' and 'variation' (got {task.spec!r}); "
                "build tasks with ScienceWorldEnv.tasks() or ScienceWorldEnv.task(name, variation)"
            ) from error
        key = (task_name, variation, gold_path)
        # Re-loading the same variation is skipped: the simulator's reset restores its start state.
        if self._loaded != key and not (gold_path is False and self._loaded == (task_name, variation, True)):
            self._server.load(task_name, variation, self.simplification, gold_path)
            self._loaded = key
            self._fresh = True

    def reset(self, task: Task, seed: int | None = None) -> str:
        """Load ``task`` (same JVM, this env's session) and return its task description.

        ScienceWorld variations are deterministic, so ``seed`` is accepted and ignored.
        """
        self._load(task, gold_path=False)
        # A freshly loaded simulator is already in its start state; reset costs 0.2-0.6 s.
        if not self._fresh:
            self._server.reset()
        self._fresh = False
        self._task = task
        self._steps = 0
        self._last_score = 0
        self._done = False
        return str(self._server.getTaskDescription())

    def _score(self) -> int:
        return int(round(100 * self._server.getScore()))

    def step(self, action: str) -> StepResult:
        """Send the action (the ``Action:`` part of a ``Thought/Action`` turn) to the simulator."""
        if self._task is None:
            raise RuntimeError("ScienceWorldEnv.step() called before reset(task)")
        if self._done:
            raise RuntimeError(f"episode of task {self._task.task_id!r} is over; call reset(task) first")
        command = extract_action(action)
        self._fresh = False
        observation = str(self._server.step(command))
        disambiguated = False
        if self.auto_disambiguate and observation.startswith("Ambiguous request"):
            observation = str(self._server.step("0"))
            disambiguated = True
        self._steps += 1
        score = self._score()
        completed = bool(self._server.getCompleted()) or score < 0
        truncated = not completed and self._steps >= self.max_steps
        done = completed or truncated
        normalized = max(score, 0) / 100.0
        reward = (max(score, 0) - max(self._last_score, 0)) / 100.0
        self._last_score = score
        self._done = done
        info: dict[str, Any] = {
            "score": score,
            "normalized_score": normalized,
            "moves": int(self._server.getNumMoves()),
            "action": command,
            "task_name": self._task.spec["task_name"],
            "variation": self._task.spec["variation"],
            "success": score >= 100,
            "truncated": truncated,
        }
        if disambiguated:
            info["disambiguated"] = True
        if self.full_info:
            info["look"] = str(self._server.freeActionLook())
            info["inv"] = str(self._server.freeActionInventory())
            info["valid"] = list(self._server.getValidActionObjectCombinations())
        return StepResult(self.observation_prefix + observation, reward, done, info)

    def gold_actions(self, task: Task) -> list[str]:
        """The simulator's gold action sequence for ``task`` (no guarantee of optimality)."""
        self._load(task, gold_path=True)
        self._task = None
        self._done = True
        return [str(action) for action in self._server.getGoldActionSequence()]

    def close(self) -> None:
        """Forget this env's session; the shared JVM stays up for the other envs of the process."""
        self._server = None


# --------------------------------------------------------------------------------------------
# Expert trajectories from the gold paths


def expert_trajectories(
    tasks: Iterable[Task],
    *,
    env: ScienceWorldEnv | None = None,
    thought: str | None = None,
    require_full_score: bool = True,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Replay ScienceWorld's gold action sequences and return them as trajectory-schema rows.

    Each row has ``source="expert"``, a system prompt, the task description as the first user
    message, one assistant turn per gold action (``"Action: <action>"``, or
    ``"Thought: <thought>\\nAction: <action>"`` when ``thought`` is given), the simulator's
    observations, and per-step rewards as :class:`ScienceWorldEnv` defines them (summing to the
    final normalised score). ``metadata`` records the final raw score, variation and step count.

    Args:
        require_full_score: raise if a gold replay ends below 100 (a simulator or version problem
            worth hearing about); with False such rows are kept and marked unsuccessful.
    """
    env = env or ScienceWorldEnv()
    tasks = list(tasks)
    rows = []
    for task in tqdm(tasks, desc="gold replays", disable=not progress or len(tasks) < 2):
        actions = env.gold_actions(task)
        if not actions or actions[0].startswith("ERROR"):
            raise RuntimeError(f"task {task.task_id!r}: the simulator produced no gold path ({actions[:1]})")
        # The gold path needs enough steps: lift the cap for the replay only.
        saved_cap, env.max_steps = env.max_steps, max(env.max_steps, len(actions) + 1)
        try:
            first = env.reset(task)
            messages = [{"role": "system", "content": env.system_prompt}, {"role": "user", "content": first}]
            rewards: list[float] = []
            info: dict[str, Any] = {}
            done = False
            for action in actions:
                content = f"Thought: {thought}\nAction: {action}" if thought else f"Action: {action}"
                observation, reward, done, info = env.step(content)
                messages.append({"role": "assistant", "content": content})
                rewards.append(reward)
                if done:
                    break
                messages.append({"role": "user", "content": observation})
        finally:
            env.max_steps = saved_cap
        score = info.get("score", 0)
        if require_full_score and score < 100:
            raise RuntimeError(
                f"task {task.task_id!r}: gold path replay reached score {score}, not 100 "
                f"({len(rewards)} of {len(actions)} actions played)"
            )
        rows.append(
            make_trajectory(
                messages,
                rewards,
                id=f"scienceworld-expert-{task.task_id}",
                task_id=task.task_id,
                category=task.category,
                source="expert",
                done=True,
                success=score >= 100,
                metadata={
                    "env": "scienceworld",
                    "task_name": task.spec["task_name"],
                    "variation": task.spec["variation"],
                    "split": task.split,
                    "simplification": env.simplification,
                    "score": score,
                    "normalized_score": max(score, 0) / 100.0,
                    "gold_actions": len(actions),
                    "generator": "scienceworld gold path",
                },
            )
        )
    return rows


__all__ = ["SPLITS", "SYSTEM_PROMPT", "ScienceWorldEnv", "expert_trajectories", "scienceworld_task_names"]
