"""Self-play synthetic trajectories (BOOST appendix F), without any simulator.

For every real training trajectory the generator keeps the first observation and the first agent
action as a seed, then lets one language model (the model that will be fine-tuned, so the synthetic
data carries no extra capacity) play both sides in turn:

* as the **environment** it is prompted with the environment's rules, the goal of the episode (the
  hidden object, the buyer's profile, the shopping instruction, read from the seed trajectory) and
  one example trajectory, and writes the next observation given the transcript so far;
* as the **agent** it is prompted with the agent's rules and the example, and continues the chat
  history (observations as ``user`` turns, its actions as ``assistant`` turns).

An episode ends on a terminal exchange (a confirmed guess, an agreement or walk-away, a purchase;
see :mod:`trainers.synthetic_prompts` for the rules and the reward of each environment) or when it
reaches ``max_steps`` agent actions. All episodes advance together, one role at a time, in batched
``generate`` calls. Output rows follow :mod:`trainers.data.schema` with ``source="synthetic"`` and
the parent trajectory's id in ``metadata["parent_id"]``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import datasets
import torch
from tqdm.auto import tqdm

from ..data.schema import make_trajectory, to_dataset
from ..data.tokenization import PLAIN_CHAT_TEMPLATE
from .synthetic_prompts import Outcome, SelfPlaySpec, format_example, get_spec

_CUT_MARKERS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "\nAgent:",
    "\nEnvironment:",
    "\nUser:",
    "\nAssistant:",
    "\n\n",
)


@dataclass
class SyntheticConfig:
    """Settings of the self-play generator.

    Args:
        env_name: ``twenty_questions``, ``car_dealer`` or ``webshop`` (selects prompts, goal, rules).
        max_steps: cap on agent actions per synthetic episode, seed action included (default ``None``:
            the environment's horizon, 20 questions / 25 seller turns / 15 WebShop actions).
        num_per_trajectory: synthetic episodes per real trajectory (default 1; paper 1).
        max_new_tokens_agent: token budget of one agent turn (default 48).
        max_new_tokens_env: token budget of one environment observation (default 96).
        temperature: sampling temperature, 0 for greedy (default 1.0; the paper does not state it).
        top_p: nucleus sampling (default 0.95).
        batch_size: episodes per ``generate`` call (default 8).
        max_prompt_tokens: prompts keep their last ``max_prompt_tokens`` tokens (default 1024).
        car_dealer_max_lines: dialogue horizon in lines, both speakers, for the car dealer reward
            (default 50, as the converters and LMRL-Gym).
        seed: seeds Python and torch before generating; same seed, same data (default 0).
        source: value of the ``source`` column (default ``"synthetic"``).
    """

    env_name: str = "twenty_questions"
    max_steps: int | None = None
    num_per_trajectory: int = 1
    max_new_tokens_agent: int = 48
    max_new_tokens_env: int = 96
    temperature: float = 1.0
    top_p: float = 0.95
    batch_size: int = 8
    max_prompt_tokens: int = 1024
    car_dealer_max_lines: int = 50
    seed: int = 0
    source: str = "synthetic"

    def __post_init__(self):
        get_spec(self.env_name)
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 (the seed action counts), got {self.max_steps}")
        if self.num_per_trajectory < 1:
            raise ValueError(f"num_per_trajectory must be >= 1, got {self.num_per_trajectory}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass
class _Episode:
    parent: Mapping[str, Any]
    copy: int
    messages: list[dict[str, str]]
    state: dict[str, Any]
    outcome: Outcome | None = None
    done: bool = False
    reason: str = ""
    rewards: list[float] = field(default_factory=list)


def seed_prefix(row: Mapping[str, Any], index: int | None = None) -> list[dict[str, str]]:
    """The row's system prompt (if any), first observation and first action."""
    messages = list(row["messages"])
    head = messages[:1] if messages and messages[0]["role"] == "system" else []
    rest = messages[len(head) :]
    if len(rest) < 2 or rest[0]["role"] != "user" or rest[1]["role"] != "assistant":
        where = f"row {index}" if index is not None else "row"
        raise ValueError(
            f"{where} (id={row.get('id')!r}), field 'messages': a synthetic seed needs a first observation "
            "followed by a first action"
        )
    return [dict(m) for m in head + rest[:2]]


def clean_generation(text: str) -> str:
    """Cut a generated turn at the first role marker or blank line and strip it."""
    for marker in _CUT_MARKERS:
        position = text.find(marker)
        if position >= 0:
            text = text[:position]
    return text.strip()


class SyntheticTrajectoryGenerator:
    """Generate synthetic trajectories from real ones by self-play of one causal LM.

    Args:
        model: a causal LM (``transformers`` model, optionally PEFT-wrapped).
        tokenizer: its tokenizer; a missing chat template falls back to the documented plain template.
        config: :class:`SyntheticConfig`.
        example: one example trajectory (schema row or list of messages) shown to both roles; default:
            the built-in example of the environment.
        generator_id: recorded in each row's metadata (default: the model's ``name_or_path``).
    """

    def __init__(
        self, model, tokenizer, config: SyntheticConfig | None = None, *, example=None, generator_id: str | None = None
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config or SyntheticConfig()
        self.spec: SelfPlaySpec = get_spec(self.config.env_name)
        if example is None:
            example = self.spec.example
        elif isinstance(example, Mapping):
            example = example["messages"]
        self.example_text = format_example(list(example))
        self.generator_id = (
            generator_id or getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        )
        self.max_steps = self.config.max_steps or self.spec.default_max_steps
        self._template = getattr(tokenizer, "chat_template", None) or PLAIN_CHAT_TEMPLATE

    # ------------------------------------------------------------------ prompts
    def _agent_prompt(self, episode: _Episode) -> str:
        messages = episode.messages
        rules = self.spec.agent_prompt
        if messages[0]["role"] == "system":
            rules = messages[0]["content"] + "\n\n" + rules
            messages = messages[1:]
        system = f"{rules}\n\nExample of a complete episode:\n{self.example_text}"
        chat = [{"role": "system", "content": system}] + messages
        return self._render(chat)

    def _env_prompt(self, episode: _Episode) -> str:
        system = self.spec.env_prompt.format(goal=episode.state["goal"] or "unknown") + (
            f"\n\nExample of a complete episode:\n{self.example_text}"
        )
        transcript = format_example(episode.messages)
        user = f"The episode so far:\n{transcript}\n\nWrite the environment's next observation."
        return self._render([{"role": "system", "content": system}, {"role": "user", "content": user}])

    def _render(self, chat: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(
            chat, tokenize=False, add_generation_prompt=True, chat_template=self._template
        )

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def _generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        tokenizer, config = self.tokenizer, self.config
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        device = next(self.model.parameters()).device
        outputs: list[str] = []
        for start in range(0, len(prompts), config.batch_size):
            chunk = [
                tokenizer(p, add_special_tokens=False)["input_ids"][-config.max_prompt_tokens :]
                for p in prompts[start : start + config.batch_size]
            ]
            length = max(len(ids) for ids in chunk)
            input_ids = torch.full((len(chunk), length), pad_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), length), dtype=torch.long)
            for row, ids in enumerate(chunk):  # left padding: generation continues every row at the end
                input_ids[row, length - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention[row, length - len(ids) :] = 1
            sampling = (
                dict(do_sample=True, temperature=config.temperature, top_p=config.top_p)
                if config.temperature > 0
                else dict(do_sample=False)
            )
            generated = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
                **sampling,
            )
            new_tokens = generated[:, length:]
            outputs += [clean_generation(t) for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        return outputs

    def generate(self, rows, *, show_progress: bool = True) -> datasets.Dataset:
        """One (``num_per_trajectory``) synthetic trajectory per row of ``rows``, in row order."""
        rows = list(rows)
        if not rows:
            raise ValueError("no real trajectories to seed synthetic ones from")
        config = self.config
        random.seed(config.seed)
        torch.manual_seed(config.seed)
        episodes: list[_Episode] = []
        for index, row in enumerate(rows):
            prefix = seed_prefix(row, index)
            for copy in range(config.num_per_trajectory):
                state = {
                    "goal": self.spec.goal(row),
                    "actions": 1,
                    "max_steps": self.max_steps,
                    "max_lines": config.car_dealer_max_lines,
                }
                episode = _Episode(row, copy, [dict(m) for m in prefix], state)
                self._judge(episode, self.spec.after_action(prefix[-1]["content"], state))
                episodes.append(episode)
        was_training = self.model.training
        self.model.eval()
        progress = tqdm(total=len(episodes), desc=f"Self-play ({config.env_name})", disable=not show_progress)
        progress.update(sum(e.done for e in episodes))
        try:
            while True:
                active = [e for e in episodes if not e.done]
                if not active:
                    break
                observations = self._generate([self._env_prompt(e) for e in active], config.max_new_tokens_env)
                for episode, observation in zip(active, observations):
                    action = episode.messages[-1]["content"]
                    episode.messages.append({"role": "user", "content": observation})
                    self._judge(episode, self.spec.after_observation(action, observation, episode.state))
                    if not episode.done and episode.state["actions"] >= self.max_steps:
                        self._finish(episode, Outcome(True, 0.0, False, "step cap"))
                active = [e for e in active if not e.done]
                if active:
                    actions = self._generate([self._agent_prompt(e) for e in active], config.max_new_tokens_agent)
                    for episode, action in zip(active, actions):
                        episode.messages.append({"role": "assistant", "content": action or "(no action)"})
                        episode.state["actions"] += 1
                        self._judge(episode, self.spec.after_action(action, episode.state))
                progress.n = sum(e.done for e in episodes)
                progress.refresh()
        finally:
            progress.close()
            self.model.train(was_training)
        return to_dataset([self._row(e) for e in episodes])

    def _judge(self, episode: _Episode, outcome: Outcome) -> None:
        if outcome.done:
            self._finish(episode, outcome)

    def _finish(self, episode: _Episode, outcome: Outcome) -> None:
        episode.done, episode.outcome = True, outcome
        n_actions = sum(m["role"] == "assistant" for m in episode.messages)
        episode.rewards = [0.0] * n_actions
        episode.rewards[-1] = float(outcome.reward)

    def _row(self, episode: _Episode) -> dict[str, Any]:
        parent, outcome = episode.parent, episode.outcome or Outcome()
        parent_id = str(parent.get("id") or "")
        suffix = "-syn" if self.config.num_per_trajectory == 1 else f"-syn{episode.copy}"
        metadata = {
            "parent_id": parent_id,
            "generator": self.generator_id,
            "env": self.config.env_name,
            "goal": episode.state["goal"],
            "terminated_by": outcome.reason,
            "sampling": {"temperature": self.config.temperature, "top_p": self.config.top_p, "seed": self.config.seed},
            "max_steps": self.max_steps,
            **{k: v for k, v in outcome.info.items()},
        }
        return make_trajectory(
            episode.messages,
            episode.rewards,
            id=f"{parent_id}{suffix}",
            task_id=str(parent.get("task_id") or ""),
            category=str(parent.get("category") or ""),
            source=self.config.source,
            done=True,
            success=outcome.success,
            metadata=metadata,
        )


def generate_synthetic(model, tokenizer, rows, env_name: str, **config_kwargs) -> datasets.Dataset:
    """One call: ``SyntheticTrajectoryGenerator(model, tokenizer, SyntheticConfig(env_name, ...)).generate(rows)``."""
    return SyntheticTrajectoryGenerator(model, tokenizer, SyntheticConfig(env_name=env_name, **config_kwargs)).generate(
        rows
    )


def config_dict(config: SyntheticConfig) -> dict[str, Any]:
    return asdict(config)


__all__ = ["SyntheticConfig", "SyntheticTrajectoryGenerator", "clean_generation", "generate_synthetic", "seed_prefix"]
