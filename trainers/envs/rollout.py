"""Live rollouts: a policy plays episodes in text environments, batched across episodes.

* A *policy* is any callable ``list of chat histories -> list of action strings`` (scripted
  policies, API models, ...), or an HF causal LM (anything with ``generate``: a
  ``PreTrainedModel``, a PEFT model, ``trainers.modeling.ValueHeadPolicy``), which
  :class:`LMPolicy` wraps: it renders each history with the tokenizer's chat template (the env's
  ``system_prompt`` as system message), left-pads the batch and calls ``generate`` once per turn
  for all running episodes (:mod:`trainers.envs.lm_policy`).
* Each running episode keeps its KV cache across turns: a turn prefills only the end of the
  previous action and the new observation, not the whole history
  (:mod:`trainers.envs.rollout_cache`; ``reuse_kv_cache=False`` re-prefills every turn).
* :func:`rollout` keeps ``batch_size`` episodes running, one env instance per slot. An episode
  that ends frees its slot, which starts the next pending episode at once, so episodes of
  different lengths share the batch (continuous batching).
* Results are trajectory-schema rows (:func:`trainers.data.schema.make_trajectory`) with one
  reward per assistant turn and the sampling settings / seeds in ``metadata``.
* :func:`evaluate_policy` adds the statistics (mean ± s.e. of return, success rate, per category).

Reproducibility: greedy rollouts do not depend on ``batch_size`` (up to float ties; fp32
left-padded generation matches one-at-a-time generation). Sampled rollouts are reproducible for
the same ``seed`` *and* ``batch_size``: the torch generator is seeded once per call and the order
in which episodes draw from it depends on the batch composition.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.schema import make_trajectory
from ..evaluation.metrics import ReturnStats, ReturnSummary, summarize_trajectories
from ..evaluation.report import markdown_table, plot_results
from .base import Task, TextEnv
from .lm_policy import (  # noqa: F401  (re-exported: the harness's public names live here)
    DEFAULT_STOP_SEQUENCES,
    GenerationSettings,
    LMPolicy,
    Messages,
    PolicyFn,
    _bf16_available,
    as_policy,
    window_history,
)
from .rollout_cache import RolloutKVCache

EnvFactory = Callable[[], TextEnv]


def _describe(policy) -> dict[str, Any]:
    if isinstance(policy, LMPolicy):
        return policy.describe()
    describe = getattr(policy, "describe", None)
    if callable(describe):
        return dict(describe())
    return {"policy": getattr(policy, "__name__", type(policy).__name__), "sampling": None}


# --------------------------------------------------------------------------------------------
# Rollouts


@dataclass
class _Episode:
    index: int
    task: Task
    env: TextEnv
    seed: int
    messages: Messages
    rewards: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def _factory(env_factory: EnvFactory | str, env_kwargs: Mapping[str, Any] | None) -> EnvFactory:
    if isinstance(env_factory, str):
        from . import make_env

        name, kwargs = env_factory, dict(env_kwargs or {})
        return lambda: make_env(name, **kwargs)
    if env_kwargs:
        raise ValueError("env_kwargs only applies when env_factory is an environment name")
    if not callable(env_factory):
        raise TypeError(
            f"env_factory must be a callable returning a TextEnv or a registered env name, got {env_factory!r}"
        )
    return env_factory


def rollout(
    policy: Any,
    env_factory: EnvFactory | str,
    tasks: Sequence[Task],
    *,
    tokenizer=None,
    num_episodes: int | None = None,
    batch_size: int = 8,
    do_sample: bool | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    max_new_tokens: int | None = None,
    seed: int = 0,
    episode_seeds: Sequence[int] | None = None,
    logits_processor: Sequence[Any] | None = None,
    max_prompt_tokens: int | None = None,
    max_history_turns: int | None = None,
    max_turns: int | None = None,
    system_prompt: str | None = None,
    autocast: bool | None = None,
    stop_sequences: Sequence[str] | None = None,
    generate_kwargs: Mapping[str, Any] | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    source: str = "real",
    id_prefix: str = "rollout",
    extra_metadata: Mapping[str, Any] | None = None,
    progress: bool = True,
    reuse_kv_cache: bool | RolloutKVCache = True,
) -> list[dict[str, Any]]:
    """Play ``num_episodes`` episodes and return them as trajectory-schema rows (in episode order).

    Args:
        policy: an HF causal LM (with ``tokenizer``), an :class:`LMPolicy`, or a callable
            ``list[histories] -> list[str]``.
        env_factory: a zero-argument callable returning a fresh :class:`TextEnv`, or a registered
            env name (built with ``make_env(name, **env_kwargs)``). One env per batch slot.
        tasks: the tasks; episode ``i`` plays ``tasks[i % len(tasks)]``.
        num_episodes: default ``len(tasks)``.
        batch_size: episodes running at once (one generate call per turn for all of them).
        do_sample, temperature, top_p, top_k, max_new_tokens: :class:`GenerationSettings`
            fields; those left ``None`` keep the :class:`LMPolicy`'s own settings (or the
            defaults: greedy, 128 new tokens). Callable policies decide themselves.
        max_prompt_tokens, autocast, stop_sequences, generate_kwargs: see :class:`LMPolicy`
            (``None`` keeps an :class:`LMPolicy`'s own values).
        seed: seeds torch's generator once (sampling) and each episode's env: ``seed + i``.
        episode_seeds: explicit env seed of each episode instead of ``seed + i``.
        logits_processor: extra ``LogitsProcessor`` objects for generation (value guidance).
        max_prompt_tokens: see :class:`LMPolicy`.
        max_history_turns: exchanges of history the model sees, see :class:`LMPolicy` (``None``
            keeps an :class:`LMPolicy`'s own value; default: the whole history).
        max_turns: harness-side cap on assistant turns; an episode cut by it is stored with
            ``done=False`` (default None: the env's own ``max_steps`` ends episodes).
        system_prompt: system message; default the env's ``system_prompt``; ``""`` for none.
        autocast: bf16 autocast for generation (None = when available, see :class:`LMPolicy`).
        source: the rows' ``source`` column (``"real"``; exploration uses ``"weak"``).
        extra_metadata: merged into every row's metadata.
        reuse_kv_cache: keep each running episode's KV cache across its turns, so a turn prefills
            only the new tokens instead of the whole history (default True; model policies only;
            greedy outputs are the same as re-prefilling). Pass a
            :class:`~trainers.envs.rollout_cache.RolloutKVCache` to read its ``stats`` afterwards;
            models whose cache cannot be cropped (sliding-window layers) re-prefill.
    """
    tasks = list(tasks)
    if not tasks:
        raise ValueError("rollout needs at least one task")
    num_episodes = len(tasks) if num_episodes is None else int(num_episodes)
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if episode_seeds is not None and len(episode_seeds) != num_episodes:
        raise ValueError(f"episode_seeds has {len(episode_seeds)} entries for {num_episodes} episodes")
    if max_turns is not None and max_turns < 1:
        raise ValueError(f"max_turns must be >= 1 or None, got {max_turns}")
    overrides = {
        key: value
        for key, value in dict(
            do_sample=do_sample, temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens
        ).items()
        if value is not None
    }
    lm_options = {
        key: value
        for key, value in dict(
            max_prompt_tokens=max_prompt_tokens,
            max_history_turns=max_history_turns,
            autocast=autocast,
            stop_sequences=stop_sequences,
            generate_kwargs=generate_kwargs,
        ).items()
        if value is not None
    }
    if isinstance(policy, LMPolicy):
        policy_fn = policy.with_settings(**overrides)
        if logits_processor is not None:
            policy_fn.logits_processor = list(logits_processor)
        for key, value in lm_options.items():
            if key == "autocast":
                value = bool(value)
            setattr(policy_fn, key, tuple(value) if key == "stop_sequences" else value)
    elif hasattr(policy, "generate"):
        policy_fn = LMPolicy(
            policy, tokenizer, settings=GenerationSettings(**overrides), logits_processor=logits_processor, **lm_options
        )
    else:
        policy_fn = as_policy(policy, logits_processor=logits_processor)
    sampling = policy_fn.settings if isinstance(policy_fn, LMPolicy) else GenerationSettings(**overrides)
    description = _describe(policy_fn)
    make = _factory(env_factory, env_kwargs)
    if sampling.do_sample:
        torch.manual_seed(seed)
    kv_cache = None
    if isinstance(policy_fn, LMPolicy) and reuse_kv_cache is not False:
        kv_cache = reuse_kv_cache if isinstance(reuse_kv_cache, RolloutKVCache) else RolloutKVCache()

    pending = deque(range(num_episodes))
    slots: list[_Episode | None] = [None] * min(batch_size, num_episodes)
    envs: list[TextEnv | None] = [None] * len(slots)
    rows: list[dict[str, Any] | None] = [None] * num_episodes
    bar = tqdm(total=num_episodes, desc="rollouts", disable=not progress, leave=False)

    def start(slot: int) -> None:
        index = pending.popleft()
        if envs[slot] is None:
            envs[slot] = make()
        env, task = envs[slot], tasks[index % len(tasks)]
        episode_seed = seed + index if episode_seeds is None else int(episode_seeds[index])
        try:
            observation = env.reset(task, seed=episode_seed)
        except Exception as error:
            raise RuntimeError(f"env {getattr(env, 'name', '?')!r}: reset failed on task {task.task_id!r}") from error
        prompt = getattr(env, "system_prompt", "") if system_prompt is None else system_prompt
        messages = ([{"role": "system", "content": prompt}] if prompt else []) + [
            {"role": "user", "content": observation}
        ]
        slots[slot] = _Episode(index, task, env, episode_seed, messages)

    def finish(slot: int, done: bool) -> None:
        episode = slots[slot]
        info = episode.info
        metadata = {
            **description,
            "env": getattr(episode.env, "name", type(episode.env).__name__),
            "seed": seed,
            "episode_seed": episode.seed,
            "episode_index": episode.index,
            "batch_size": batch_size,
            "turns": len(episode.rewards),
            "truncated": bool(info.get("truncated", False)) or not done,
            "final_observation": info.get("_observation", ""),
            **{k: info[k] for k in ("score", "normalized_score") if k in info},
            **dict(extra_metadata or {}),
        }
        rows[episode.index] = make_trajectory(
            episode.messages,
            episode.rewards,
            id=f"{id_prefix}-{episode.index}",
            task_id=episode.task.task_id,
            category=episode.task.category,
            source=source,
            done=done,
            success=info.get("success") if "success" in info else None,
            metadata=metadata,
        )
        slots[slot] = None
        if kv_cache is not None:
            kv_cache.forget(episode.index)
        bar.update(1)

    try:
        while True:
            for slot in range(len(slots)):
                if slots[slot] is None and pending:
                    start(slot)
            active = [slot for slot in range(len(slots)) if slots[slot] is not None]
            if not active:
                break
            histories = [[dict(m) for m in slots[slot].messages] for slot in active]
            if kv_cache is not None:
                actions = policy_fn(histories, kv_cache=kv_cache, keys=[slots[slot].index for slot in active])
            else:
                actions = policy_fn(histories)
            if not isinstance(actions, (list, tuple)) or len(actions) != len(active):
                got = len(actions) if isinstance(actions, (list, tuple)) else type(actions).__name__
                raise ValueError(f"the policy returned {got} actions for {len(active)} histories")
            for slot, action in zip(active, actions):
                episode = slots[slot]
                if not isinstance(action, str):
                    raise TypeError(
                        f"episode {episode.index}: the policy returned {type(action).__name__}, not a string"
                    )
                episode.messages.append({"role": "assistant", "content": action})
                try:
                    observation, reward, done, info = episode.env.step(action)
                except Exception as error:
                    raise RuntimeError(
                        f"env {getattr(episode.env, 'name', '?')!r} failed on task {episode.task.task_id!r} at turn "
                        f"{len(episode.rewards)} with action {action!r}"
                    ) from error
                reward = float(reward)
                if not math.isfinite(reward):
                    raise ValueError(f"env returned reward {reward!r} on task {episode.task.task_id!r}")
                episode.rewards.append(reward)
                episode.info = {**dict(info or {}), "_observation": observation}
                if done:
                    finish(slot, True)
                elif max_turns is not None and len(episode.rewards) >= max_turns:
                    finish(slot, False)
                else:
                    episode.messages.append({"role": "user", "content": observation})
    finally:
        bar.close()
        if kv_cache is not None:
            kv_cache.clear()
        # envs built here from a name are closed here; a user factory may hand out shared instances
        if isinstance(env_factory, str):
            for env in envs:
                close = getattr(env, "close", None)
                if callable(close):
                    close()
    return rows  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class EvaluationResult:
    """Live-evaluation statistics and the episodes behind them."""

    summary: ReturnSummary
    rows: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def mean_return(self) -> float:
        return self.summary.overall.mean_return

    @property
    def stderr(self) -> float:
        return self.summary.overall.stderr

    @property
    def success_rate(self) -> float:
        return self.summary.overall.success_rate

    @property
    def num_episodes(self) -> int:
        return self.summary.overall.num_episodes

    @property
    def per_category(self) -> dict[str, ReturnStats]:
        return self.summary.per_category

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary.to_dict(), "settings": self.settings}

    def to_markdown(self, name: str = "policy", *, per_category: bool = True) -> str:
        return markdown_table({name: self}, per_category=per_category)

    def plot(self, path: str | Path, *, per_category: bool = True, title: str = "Mean return ± s.e.") -> Path:
        return plot_results({"policy": self}, path, per_category=per_category, title=title)

    def __str__(self) -> str:
        return (
            f"mean return {self.mean_return:.4f} ± {self.stderr:.4f} (s.e.), success {100 * self.success_rate:.1f}% "
            f"over {self.num_episodes} episodes"
        )


def evaluate_policy(
    policy: Any,
    env_factory: EnvFactory | str,
    tasks: Sequence[Task],
    *,
    num_episodes: int = 64,
    gamma: float = 1.0,
    **rollout_kwargs,
) -> EvaluationResult:
    """Roll out ``num_episodes`` episodes (paper: 64, greedy) and summarise them.

    Takes :func:`rollout`'s keyword arguments. Returns are undiscounted sums of the per-turn
    rewards (``gamma`` to discount them).
    """
    rows = rollout(policy, env_factory, tasks, num_episodes=num_episodes, **rollout_kwargs)
    settings = {k: v for k, v in rollout_kwargs.items() if isinstance(v, (int, float, str, bool, type(None)))}
    settings["num_episodes"] = num_episodes
    return EvaluationResult(summarize_trajectories(rows, gamma=gamma), rows, settings)


__all__ = [
    "DEFAULT_STOP_SEQUENCES",
    "EvaluationResult",
    "GenerationSettings",
    "LMPolicy",
    "as_policy",
    "evaluate_policy",
    "markdown_table",
    "plot_results",
    "rollout",
    "window_history",
]
