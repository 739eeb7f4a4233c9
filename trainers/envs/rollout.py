"""Live rollouts: a policy plays episodes in text environments, batched across episodes.

* A *policy* is any callable ``list of chat histories -> list of action strings`` (scripted
  policies, API models, ...), or an HF causal LM (anything with ``generate``: a
  ``PreTrainedModel``, a PEFT model, ``trainers.modeling.ValueHeadPolicy``), which
  :class:`LMPolicy` wraps: it renders each history with the tokenizer's chat template (the env's
  ``system_prompt`` as system message), left-pads the batch and calls ``generate`` once per turn
  for all running episodes.
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

import contextlib
import copy
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.schema import make_trajectory
from ..evaluation.metrics import ReturnStats, ReturnSummary, summarize_trajectories
from ..evaluation.report import markdown_table, plot_results
from .base import Task, TextEnv

Messages = list[dict[str, str]]
PolicyFn = Callable[[list[Messages]], list[str]]
EnvFactory = Callable[[], TextEnv]

#: Text after which a generated turn is cut: models trained on ETO-style data sometimes go on to
#: write the environment's next observation themselves.
DEFAULT_STOP_SEQUENCES = ("\nObservation:",)


def window_history(messages: Messages, max_history_turns: int | None) -> Messages:
    """Keep the system prompt, the first observation and the last ``max_history_turns`` exchanges.

    An exchange is an (assistant action, next observation) pair. The task statement (the first
    user message) always stays; the oldest exchanges after it are dropped. ``None`` keeps
    everything. Training examples built with the same window show a model exactly the prompts
    it will see in a rollout with ``max_history_turns`` (see :class:`LMPolicy`).
    """
    if max_history_turns is None:
        return list(messages)
    if max_history_turns < 0:
        raise ValueError(f"max_history_turns must be >= 0 or None, got {max_history_turns}")
    head = 1 if messages and messages[0]["role"] == "system" else 0
    head += 1  # the first observation (task statement)
    rest = list(messages[head:])
    # rest alternates assistant, user, assistant, user, ...; a trailing assistant turn (the
    # target of a training example) is kept on top of the window its prompt had
    keep = 2 * max_history_turns + (len(rest) % 2)
    if len(rest) <= keep:
        return list(messages)
    return list(messages[:head]) + (rest[len(rest) - keep :] if keep > 0 else [])


@dataclass(frozen=True)
class GenerationSettings:
    """How an :class:`LMPolicy` samples one turn (recorded in every row's ``metadata``).

    Attributes:
        do_sample: sample (True) or greedy decoding (False, default; evaluation in both papers is
            greedy). Exploration samples.
        temperature: softmax temperature when sampling (default 1.0; W2SG varies it per
            exploration sample).
        top_p: nucleus sampling mass (default 1.0 = off; W2SG varies it per sample).
        top_k: keep the k most likely tokens (default 0 = off).
        max_new_tokens: cap on the tokens of one turn (default 128; a ``Thought: ... Action: ...``
            turn of ETO data is ~30-80 tokens).
    """

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 128

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bf16_available(device: torch.device) -> bool:
    """Whether bf16 is the fast generation precision on ``device`` (see :mod:`trainers.hardware`)."""
    from ..hardware import pick_dtype

    return device.type in ("cpu", "cuda") and pick_dtype("generation", device=device) == torch.bfloat16


def _model_device_dtype(model) -> tuple[torch.device, torch.dtype]:
    try:
        parameter = next(model.parameters())
        return parameter.device, parameter.dtype
    except (StopIteration, AttributeError):
        return torch.device(getattr(model, "device", "cpu")), torch.float32


class LMPolicy:
    """An HF causal LM acting by generation on chat histories, batched.

    Args:
        model: anything with ``generate(input_ids=, attention_mask=, ...)``.
        tokenizer: its tokenizer; needs a chat template (see
            :func:`trainers.data.tokenization.prepare_tokenizer`). Without a pad token the EOS
            token pads (only attention-masked positions are padded, so this is safe).
        settings: :class:`GenerationSettings`.
        logits_processor: extra ``LogitsProcessor`` objects for ``generate`` (e.g. value guidance).
        max_prompt_tokens: when a rendered history is longer, the oldest (action, observation)
            pairs after the first observation are dropped until it fits, then tokens are cut
            from the left as a last resort (default None: never truncate).
        max_history_turns: show the model only the system prompt, the first observation and
            the last ``max_history_turns`` (action, observation) exchanges
            (:func:`window_history`; default None: the whole history). Applied before
            ``max_prompt_tokens``.
        autocast: run generation under bf16 autocast; ``None`` (default) = when the hardware
            has bf16 and the model is fp32. Pass False where exact fp32 values matter.
        stop_sequences: a turn is cut at the first of these strings.
        generate_kwargs: passed to every ``generate`` call (e.g. ``{"beta": 4.0}`` for a
            ``ValueHeadPolicy``).
    """

    def __init__(
        self,
        model,
        tokenizer,
        *,
        settings: GenerationSettings | None = None,
        logits_processor: Sequence[Any] | None = None,
        max_prompt_tokens: int | None = None,
        autocast: bool | None = None,
        stop_sequences: Sequence[str] = DEFAULT_STOP_SEQUENCES,
        generate_kwargs: Mapping[str, Any] | None = None,
        max_history_turns: int | None = None,
    ):
        if tokenizer is None:
            raise ValueError("an LM policy needs its tokenizer: pass tokenizer=")
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__!r} has no chat "
                "template; set tokenizer.chat_template or use trainers.data.tokenization.prepare_tokenizer"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.settings = settings or GenerationSettings()
        self.logits_processor = list(logits_processor or [])
        self.max_prompt_tokens = max_prompt_tokens
        if max_history_turns is not None and max_history_turns < 0:
            raise ValueError(f"max_history_turns must be >= 0 or None, got {max_history_turns}")
        self.max_history_turns = max_history_turns
        self.stop_sequences = tuple(stop_sequences)
        self.generate_kwargs = dict(generate_kwargs or {})
        self.device, dtype = _model_device_dtype(model)
        if autocast is None:
            autocast = dtype == torch.float32 and _bf16_available(self.device)
        self.autocast = bool(autocast)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_token_id is None:
            raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad with")
        eos = set()
        for source in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
            if isinstance(source, int):
                eos.add(source)
            elif isinstance(source, (list, tuple)):
                eos.update(int(t) for t in source)
        self.eos_token_ids = sorted(eos)

    def with_settings(self, **changes) -> LMPolicy:
        """A copy of this policy with some :class:`GenerationSettings` fields changed."""
        clone = copy.copy(self)
        clone.settings = replace(self.settings, **changes)
        return clone

    def describe(self) -> dict[str, Any]:
        name = getattr(getattr(self.model, "config", None), "_name_or_path", "") or type(self.model).__name__
        return {
            "policy": str(name),
            "sampling": self.settings.to_dict(),
            "logits_processor": [type(p).__name__ for p in self.logits_processor],
            "autocast_bf16": self.autocast,
        }

    # -- prompts -----------------------------------------------------------------------------

    def _render(self, messages: Messages) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, messages: Messages) -> list[int]:
        """Token ids of the generation prompt for one history, windowed and truncated to ``max_prompt_tokens``."""
        messages = window_history(messages, self.max_history_turns)
        ids = self._render(messages)
        limit = self.max_prompt_tokens
        if limit is None or len(ids) <= limit:
            return ids
        head = 1 if messages and messages[0]["role"] == "system" else 0
        head += 1  # the first observation (task instruction) always stays
        trimmed = list(messages)
        while len(ids) > limit and len(trimmed) > head + 2:
            del trimmed[head : head + 2]  # the oldest (action, observation) pair
            ids = self._render(trimmed)
        return ids[-limit:]

    # -- generation --------------------------------------------------------------------------

    def _cut(self, text: str) -> str:
        for stop in self.stop_sequences:
            position = text.find(stop)
            if position >= 0:
                text = text[:position]
        return text.strip()

    @torch.no_grad()
    def __call__(self, histories: list[Messages]) -> list[str]:
        if not histories:
            return []
        from transformers import GenerationConfig, LogitsProcessorList

        prompts = [self.encode(messages) for messages in histories]
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[row, width - len(prompt) :] = 1
        s = self.settings
        config = GenerationConfig(
            max_new_tokens=s.max_new_tokens,
            do_sample=s.do_sample,
            temperature=s.temperature if s.do_sample else None,
            top_p=s.top_p if s.do_sample else None,
            top_k=(s.top_k or None) if s.do_sample else None,
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_ids or None,
        )
        kwargs = dict(self.generate_kwargs)
        if self.logits_processor:
            kwargs["logits_processor"] = LogitsProcessorList(self.logits_processor)
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()
        )
        with autocast:
            output = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
                generation_config=config,
                **kwargs,
            )
        sequences = output.sequences if hasattr(output, "sequences") else output
        new_tokens = sequences[:, width:].tolist()
        texts = []
        for tokens in new_tokens:
            # everything after the first end-of-turn token is padding
            for position, token in enumerate(tokens):
                if token in self.eos_token_ids:
                    tokens = tokens[:position]
                    break
            texts.append(self._cut(self.tokenizer.decode(tokens, skip_special_tokens=True)))
        return texts


def as_policy(
    policy: Any,
    tokenizer=None,
    *,
    settings: GenerationSettings | None = None,
    logits_processor: Sequence[Any] | None = None,
    **lm_kwargs,
) -> LMPolicy | PolicyFn:
    """Return ``policy`` as something callable on a batch of histories.

    An :class:`LMPolicy` is re-configured when ``settings`` / ``logits_processor`` are given; a
    model (anything with ``generate``) is wrapped in an :class:`LMPolicy`; any other callable is
    used as it is (and cannot take generation settings).
    """
    if isinstance(policy, LMPolicy):
        if settings is not None:
            policy = policy.with_settings(**settings.to_dict())
        if logits_processor is not None:
            policy = copy.copy(policy)
            policy.logits_processor = list(logits_processor)
        return policy
    if hasattr(policy, "generate"):
        return LMPolicy(policy, tokenizer, settings=settings, logits_processor=logits_processor, **lm_kwargs)
    if callable(policy):
        if logits_processor:
            raise ValueError("logits_processor needs a model policy; a plain callable policy cannot use it")
        return policy
    raise TypeError(f"policy must be a model with generate(), an LMPolicy or a callable, got {type(policy).__name__}")


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
        raise TypeError(f"env_factory must be a callable returning a TextEnv or a registered env name, got {env_factory!r}")
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
        messages = ([{"role": "system", "content": prompt}] if prompt else []) + [{"role": "user", "content": observation}]
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
            actions = policy_fn(histories)
            if not isinstance(actions, (list, tuple)) or len(actions) != len(active):
                got = len(actions) if isinstance(actions, (list, tuple)) else type(actions).__name__
                raise ValueError(f"the policy returned {got} actions for {len(active)} histories")
            for slot, action in zip(active, actions):
                episode = slots[slot]
                if not isinstance(action, str):
                    raise TypeError(f"episode {episode.index}: the policy returned {type(action).__name__}, not a string")
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
