"""OfflineRLTrainer: MC-return or ILQL value heads on a causal LM, trained from trajectory datasets.

The model the ``transformers.Trainer`` machinery sees is a
:class:`~trainers.modeling.ValueHeadPolicy` (LM, optionally PEFT/QLoRA, + value heads), so the
optimizer, gradient accumulation, DDP/DeepSpeed, checkpoints and exact resume cover the heads and
the ILQL target heads. What this class adds:

* dataset preparation: trajectory-schema rows are tokenized with
  :func:`trainers.data.tokenization.tokenize_dataset`; pre-tokenized datasets are checked;
* ``compute_loss`` = ``dot(normalised weights, per-trajectory losses)`` with the weights from a
  ``weight`` column (uniform when absent);
* :meth:`OfflineRLTrainer.compute_per_trajectory_losses` ``(model, inputs, heads=None) -> (losses
  [B], metrics)``: per-trajectory losses for any heads on the policy's backbone, for subclasses that
  weight the losses themselves (:class:`trainers.BilevelReweightTrainer` does not call it: it runs a
  whole phase inside one forward of its ``BilevelPolicy``, so that DDP / DeepSpeed see one graph);
* the Polyak target update after every optimizer step (ILQL), as a callback;
* metrics (Q, V, TD error, CQL, BC) averaged over the logging window;
* ``save_model`` / checkpoints write the :class:`ValueHeadPolicy` folder layout (adapter or model +
  ``value_heads/`` + ``offline_rl_policy.json``) that :func:`trainers.modeling.load_value_guided_policy`
  loads, and resume loads it back (heads and targets included). Checkpoints are crash-safe
  (:class:`trainers.checkpointing.CrashSafeCheckpointMixin`: staged, then renamed into place;
  ``resume_from_checkpoint=True`` takes the newest complete one); subclasses add files to a save
  with :meth:`OfflineRLTrainer._save_extra_artifacts` and to a checkpoint with ``_save_checkpoint_extras``;
* the datasets are checked before training: trajectory rows against the schema, pre-tokenized rows
  for equal column lengths, a ``weight`` column for finite, non-negative, not-all-zero values;
* optional live evaluation: every ``eval_rollout_steps`` steps the value-guided policy plays
  ``eval_env`` through the rollout harness (:func:`env_rollout_fn`, or any ``rollout_fn``); see
  :class:`RolloutEvalCallback`. ``evaluate_rollouts(beta=0)`` scores the unguided base policy.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import datasets
import torch
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainerCallback, set_seed

from .checkpointing import CrashSafeCheckpointMixin
from .data.tokenization import (
    TOKENIZED_COLUMNS,
    TrajectoryCollator,
    prepare_tokenizer,
    tokenize_dataset,
    validate_tokenized,
    validate_weight_column,
)
from .hardware import configure_threads, launched_by_accelerate
from .losses.offline_rl import OfflineRLLossConfig, weighted_loss
from .modeling.guidance import ValueGuidedLogitsProcessor
from .modeling.policy import ValueHeadPolicy, is_peft_model
from .modeling.value_heads import ValueHeads
from .offline_rl_config import OfflineRLConfig

#: Batch keys the policy's forward consumes (the rest of the collated batch is ignored).
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "action_mask", "token_rewards", "token_dones", "turn_ids")


class PolyakCallback(TrainerCallback):
    """ILQL: ``target <- (1 - rate) * target + rate * online`` after every optimizer step."""

    def __init__(self, trainer: OfflineRLTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        heads = self.trainer.policy.heads
        if heads.is_ilql and self.trainer.args.polyak_rate > 0:
            heads.polyak_update(self.trainer.args.polyak_rate)
        return control


class RolloutEvalCallback(TrainerCallback):
    """Live evaluation of the value-guided policy every ``eval_rollout_steps`` optimizer steps.

    ``rollout_fn(policy, env, *, episodes, max_new_tokens, temperature, tokenizer)`` must return a
    mapping of metric name -> number (e.g. ``{"return_mean": ..., "success_rate": ...}``); ``policy``
    is a :class:`trainers.modeling.ValueGuidedPolicy` over the live model (nothing is copied). The
    metrics are logged with an ``eval_rollout/`` prefix and kept in ``trainer.rollout_history``.
    """

    def __init__(self, trainer: OfflineRLTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        steps = self.trainer.args.eval_rollout_steps
        if steps and state.global_step % steps == 0:
            self.trainer.evaluate_rollouts()
        return control


def env_rollout_fn(
    policy, env, *, episodes, max_new_tokens, temperature, tokenizer, tasks=None, batch_size=8, seed=0, autocast=None
):
    """The default ``rollout_fn``: :func:`trainers.envs.rollout.evaluate_policy` with the value guidance.

    ``env`` is a registered environment name, a zero-argument factory returning a ``TextEnv``, or a
    ``TextEnv`` instance (then episodes run one at a time on that instance). ``tasks`` default to
    ``env.tasks()``. Returns mean return, its standard error and the success rate.
    """
    from .envs.rollout import evaluate_policy

    if isinstance(env, str) or (callable(env) and not hasattr(env, "step")):
        factory = env
        probe = None
    else:
        probe = env
        factory = lambda: env  # noqa: E731 - a single shared instance
        batch_size = 1
    if tasks is None:
        if probe is None:
            from .envs import make_env

            probe = make_env(env) if isinstance(env, str) else env()
        tasks = list(probe.tasks())
    result = evaluate_policy(
        policy.model,
        factory,
        tasks,
        tokenizer=tokenizer,
        num_episodes=episodes,
        batch_size=batch_size,
        logits_processor=list(policy.logits_processor),
        max_new_tokens=max_new_tokens,
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else None,
        seed=seed,
        autocast=autocast,
        progress=False,
    )
    return {"return_mean": result.mean_return, "return_stderr": result.stderr, "success_rate": result.success_rate}


class OfflineRLTrainer(CrashSafeCheckpointMixin, Trainer):
    """Train value heads (MC returns or ILQL) on a causal LM from offline trajectories.

    Args:
        model: a model id/path (loaded with ``args.model_init_kwargs``; 4-bit when ``args.load_in_4bit``),
            a causal LM, a PEFT model, or a :class:`ValueHeadPolicy`.
        args: :class:`OfflineRLConfig`.
        train_dataset / eval_dataset: trajectory-schema datasets (``messages``, ``rewards``, ...) or
            datasets already tokenized with ``trainers.data.tokenization``; an optional ``weight``
            column gives fixed per-trajectory weights.
        processing_class: the tokenizer (loaded from ``model`` when it is a string).
        data_collator: defaults to :class:`TrajectoryCollator`.
        peft_config: a ``peft.LoraConfig`` to train LoRA adapters (QLoRA with ``args.load_in_4bit``).
        value_heads: existing :class:`ValueHeads` (default: new heads sized for the model).
        eval_env: live-evaluation environment: a registered env name, a zero-argument env factory,
            or a ``TextEnv`` instance.
        rollout_fn: ``rollout_fn(policy, env, *, episodes, max_new_tokens, temperature, tokenizer)``
            returning metrics; default :func:`env_rollout_fn` (the rollout harness) on ``eval_tasks``.
        eval_tasks: tasks for the default ``rollout_fn`` (default: all of ``eval_env``'s tasks).
    """

    _tag_names = ["trainers", "offline-rl"]

    def __init__(
        self,
        model: str | nn.Module,
        args: OfflineRLConfig | None = None,
        train_dataset: datasets.Dataset | None = None,
        eval_dataset: datasets.Dataset | dict[str, datasets.Dataset] | None = None,
        processing_class=None,
        data_collator=None,
        peft_config=None,
        value_heads: ValueHeads | None = None,
        eval_env: Any = None,
        rollout_fn: Callable[..., Mapping[str, float]] | None = None,
        eval_tasks=None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers=(None, None),
        **kwargs,
    ):
        if args is None:
            name = model if isinstance(model, str) else type(model).__name__
            args = OfflineRLConfig(output_dir=f"{str(name).split('/')[-1]}-offline-rl")
        if not isinstance(args, OfflineRLConfig):
            raise TypeError(f"args must be an OfflineRLConfig, got {type(args).__name__}")
        if launched_by_accelerate() and not torch.cuda.is_available():
            # accelerate launch leaves each CPU process one thread unless the user chose a count
            configure_threads()
        model_name = model if isinstance(model, str) else None
        if processing_class is None:
            if model_name is None:
                raise ValueError("processing_class (the tokenizer) is required when model is not a model id/path")
            from .models import load_tokenizer

            processing_class = load_tokenizer(model_name)
        processing_class = prepare_tokenizer(processing_class, args.chat_template)

        # new value heads / LoRA weights are drawn here, before Trainer.__init__ seeds itself: seed first so
        # two runs with the same args (and a resumed run) start from the same weights
        set_seed(args.seed)
        policy = self._extend_policy(self._build_policy(model, args, peft_config, value_heads), args)
        self.loss_config = OfflineRLLossConfig.from_any(args)
        if policy.heads.loss_type != args.loss_type:
            raise ValueError(
                f"args.loss_type={args.loss_type!r} but the value heads are {policy.heads.loss_type!r} heads"
            )

        train_dataset = (
            self._prepare_dataset(train_dataset, processing_class, args, "train") if train_dataset is not None else None
        )
        if isinstance(eval_dataset, Mapping):
            eval_dataset = {
                k: self._prepare_dataset(v, processing_class, args, f"eval[{k}]") for k, v in eval_dataset.items()
            }
        elif eval_dataset is not None:
            eval_dataset = self._prepare_dataset(eval_dataset, processing_class, args, "eval")
        if data_collator is None:
            data_collator = TrajectoryCollator(pad_token_id=processing_class.pad_token_id)

        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        # non-padding tokens trained on (BilevelReweightTrainer counts its phases here too)
        self._tokens_seen = 0
        if rollout_fn is not None and eval_env is None:
            raise ValueError(
                "live evaluation needs both eval_env and rollout_fn (rollout_fn was given without eval_env)"
            )
        if eval_env is not None and rollout_fn is None:
            rollout_fn = functools.partial(
                env_rollout_fn, tasks=eval_tasks, batch_size=args.eval_rollout_batch_size, seed=args.seed
            )
        self.eval_env = eval_env
        self.rollout_fn = rollout_fn
        self.rollout_history: list[dict[str, float]] = []
        super().__init__(
            model=policy,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            **kwargs,
        )
        self.model_accepts_loss_kwargs = False
        self.add_callback(PolyakCallback(self))
        if eval_env is not None:
            self.add_callback(RolloutEvalCallback(self))

    # ------------------------------------------------------------------------------ building
    @staticmethod
    def _build_policy(model, args: OfflineRLConfig, peft_config, value_heads) -> ValueHeadPolicy:
        if isinstance(model, ValueHeadPolicy):
            if peft_config is not None and not model.is_peft:
                raise ValueError("peft_config given but the ValueHeadPolicy's base is already built; apply PEFT first")
            return model
        if isinstance(model, str):
            model = OfflineRLTrainer._load_model(model, args)
        if args.load_in_4bit and peft_config is None and not is_peft_model(model):
            raise ValueError("load_in_4bit (QLoRA) trains LoRA adapters on a frozen 4-bit base: pass peft_config")
        if peft_config is not None and not is_peft_model(model):
            from peft import get_peft_model, prepare_model_for_kbit_training

            if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
                model = prepare_model_for_kbit_training(
                    model, use_gradient_checkpointing=bool(getattr(args, "activation_checkpointing", False))
                )
            model = get_peft_model(model, peft_config)
        base = model if not is_peft_model(model) else model.get_base_model()
        output_embeddings = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
        # under ZeRO-3 the weights may be partitioned at load (zero.Init): the heads read (and check)
        # their sizes from the output embedding, so it is gathered while the policy is assembled
        with _gathered([output_embeddings.weight] if output_embeddings is not None else []):
            return OfflineRLTrainer._assemble_policy(model, base, args, value_heads)

    @staticmethod
    def _assemble_policy(model, base, args: OfflineRLConfig, value_heads) -> ValueHeadPolicy:
        if value_heads is None:
            value_heads = ValueHeads.for_model(
                base,
                loss_type=args.loss_type,
                q_head_type=args.q_head_type,
                mlp_hidden_size=args.mlp_hidden_size,
            )
        # heads keep fp32 master weights whatever the base dtype (autocast does the fast matmuls)
        value_heads = value_heads.float().to(_first_device(model))
        if value_heads.is_ilql:
            for parameter in value_heads.target_q_heads.parameters():
                parameter.requires_grad_(False)
        for parameter in value_heads.q_heads.parameters():
            parameter.requires_grad_(True)
        return ValueHeadPolicy(model, value_heads)

    def _extend_policy(self, policy: ValueHeadPolicy, args: OfflineRLConfig) -> ValueHeadPolicy:
        """Hook for subclasses to add modules to the freshly built policy (still inside the seeded region)."""
        return policy

    @staticmethod
    def _load_model(name: str, args: OfflineRLConfig) -> PreTrainedModel:
        from .models import load_causal_lm

        if os.path.isdir(name):
            from pathlib import Path

            from .modeling.policy import check_weight_files

            check_weight_files(Path(name))  # a truncated weights file is named before the loader fails on it

        kwargs = dict(args.model_init_kwargs or {})
        if args.load_in_4bit:
            import torch as _torch
            from transformers import BitsAndBytesConfig

            kwargs.setdefault(
                "quantization_config",
                BitsAndBytesConfig(
                    load_in_4bit=True,
                    bnb_4bit_quant_type="nf4",
                    bnb_4bit_use_double_quant=True,
                    bnb_4bit_compute_dtype=_torch.bfloat16 if args.bf16 else _torch.float32,
                ),
            )
            if "device_map" not in kwargs:
                # quantized weights are placed at load time: one device per process
                from accelerate import PartialState

                kwargs["device_map"] = {"": PartialState().local_process_index} if _torch.cuda.is_available() else "cpu"
        kwargs.setdefault("dtype", torch.float32)
        dtype = kwargs.pop("dtype")
        return load_causal_lm(name, dtype=dtype, **kwargs)

    @staticmethod
    def _prepare_dataset(dataset, tokenizer, args: OfflineRLConfig, split: str):
        columns = set(dataset.column_names)
        if len(dataset) == 0:
            raise ValueError(f"{split} dataset has no rows: there is nothing to train or evaluate on")
        if "weight" in columns:
            validate_weight_column(dataset, f"{split} dataset")
        if "input_ids" in columns:
            missing = [c for c in TOKENIZED_COLUMNS if c not in columns]
            if missing:
                raise ValueError(
                    f"{split} dataset is pre-tokenized but lacks {missing}; tokenize it with "
                    "trainers.data.tokenization.tokenize_dataset or pass trajectory-schema rows"
                )
            validate_tokenized(dataset, f"{split} dataset")
            return dataset
        if "messages" not in columns or "rewards" not in columns:
            raise ValueError(
                f"{split} dataset has columns {sorted(columns)}: expected trajectory rows ('messages', 'rewards', ...) "
                "or tokenized rows ('input_ids', 'action_mask', 'token_rewards', ...)"
            )
        from .data.schema import validate_trajectories

        validate_trajectories(dataset)
        return tokenize_dataset(dataset, tokenizer, max_length=args.max_length, num_proc=args.dataset_num_proc)

    # ------------------------------------------------------------------------------ access
    @property
    def policy(self) -> ValueHeadPolicy:
        """The :class:`ValueHeadPolicy` being trained (unwrapped from DDP / accelerate)."""
        return self.accelerator.unwrap_model(self.model) if hasattr(self, "accelerator") else self.model

    @property
    def value_heads(self) -> ValueHeads:
        return self.policy.heads

    # ------------------------------------------------------------------------------ losses
    def compute_per_trajectory_losses(
        self, model: nn.Module, inputs: dict[str, torch.Tensor], heads: ValueHeads | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-trajectory offline RL losses ``[B]`` (with graph) and detached metrics.

        ``heads`` evaluates other value heads (e.g. BOOST's auxiliary ψ heads) on the same backbone;
        by default the policy's own heads. ``model`` is what ``compute_loss`` receives (possibly
        wrapped by DDP); its forward runs the backbone and the losses.
        """
        model_inputs = {key: inputs[key] for key in MODEL_INPUT_KEYS if key in inputs}
        output = model(**model_inputs, heads=heads, loss_config=self.loss_config)
        return output["losses"], output["metrics"]

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        losses, metrics = self.compute_per_trajectory_losses(model, inputs)
        weights = inputs.get("weights")
        if weights is not None and not weights.requires_grad and float(weights.sum()) == 0.0:
            # a batch drawn only from weight-0 rows (the column was checked: >= 0, not all zero) teaches nothing
            loss = (losses * 0.0).sum()
        else:
            loss = weighted_loss(losses, weights)
        mode = "train" if self.model.training else "eval"
        for name, value in metrics.items():
            self._metrics[mode][name].append(float(value))
        if mode == "train":
            self._tokens_seen += (
                int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else inputs["input_ids"].numel()
            )
        if return_outputs:
            return loss, {"losses": losses.detach(), "metrics": metrics}
        return loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        self._metrics["eval"].clear()
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        for name, values in self._metrics["eval"].items():
            if values:
                output.metrics[f"{metric_key_prefix}_{name}"] = sum(values) / len(values)
        self._metrics["eval"].clear()
        return output

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        prefix = "" if mode == "train" else "eval_"
        averaged = {}
        for name, values in self._metrics[mode].items():
            if values:
                averaged[f"{prefix}{name}"] = sum(values) / len(values)
        logs = {**logs, **averaged}
        self._metrics[mode].clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------ saving
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        self.policy.heads.training_details = self._training_details()
        self.policy.save_pretrained(
            output_dir,
            tokenizer=self.processing_class,
            beta=self.args.beta,
            state_dict=state_dict,
            extra={"gamma": self.args.gamma, "tau": self.args.tau, "cql_weight": self.args.cql_weight},
            # before the policy's completeness marker: a folder with the marker holds one save, not a mix
            extra_artifacts=lambda directory: self._save_extra_artifacts(str(directory), state_dict),
        )
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _save_extra_artifacts(self, output_dir: str, state_dict: dict | None = None) -> None:
        """Hook: write subclass artifacts into a save; runs before the folder is marked complete."""

    def _training_details(self) -> str:
        a = self.args
        items = {
            "trainer": type(self).__name__,
            "loss_type": a.loss_type,
            "gamma (per assistant turn)": a.gamma,
            "tau (expectile)": a.tau,
            "cql_weight": a.cql_weight,
            "bc_weight": a.bc_weight,
            "polyak_rate": a.polyak_rate,
            "beta (guidance)": a.beta,
            "learning_rate": a.learning_rate,
            "per_device_train_batch_size": a.per_device_train_batch_size,
            "gradient_accumulation_steps": a.gradient_accumulation_steps,
            "optimizer steps": self.state.global_step,
            "LoRA": self.policy.is_peft,
            "4-bit base": a.load_in_4bit,
        }
        return "\n".join(f"- {name}: `{value}`" for name, value in items.items())

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        target = self.accelerator.unwrap_model(model) if model is not None else self.policy
        if not isinstance(target, ValueHeadPolicy):
            raise TypeError(f"cannot resume into a {type(target).__name__}; expected a ValueHeadPolicy")
        target.load_weights_from(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        if best is None or not os.path.isdir(best):
            raise FileNotFoundError(f"best model checkpoint {best!r} is missing; cannot load_best_model_at_end")
        self.policy.load_weights_from(best)

    # ------------------------------------------------------------------------------ live evaluation
    def guided_policy(self, beta: float | None = None):
        """A :class:`trainers.modeling.ValueGuidedPolicy` over the live model (nothing copied)."""
        from .modeling.guidance import ValueGuidedPolicy

        return ValueGuidedPolicy(self.policy, self.processing_class, beta=self.args.beta if beta is None else beta)

    def evaluate_rollouts(self, beta: float | None = None) -> dict[str, float]:
        """Run ``rollout_fn`` on ``eval_env`` with the value-guided policy; log and return its metrics."""
        if self.eval_env is None or self.rollout_fn is None:
            raise ValueError("evaluate_rollouts needs eval_env and rollout_fn passed to the trainer")
        policy = self.guided_policy(beta)
        was_training = self.policy.training
        self.policy.eval()
        started = time.time()
        try:
            with torch.no_grad():
                results = self.rollout_fn(
                    policy,
                    self.eval_env,
                    episodes=self.args.eval_rollout_episodes,
                    max_new_tokens=self.args.eval_rollout_max_new_tokens,
                    temperature=self.args.eval_rollout_temperature,
                    tokenizer=self.processing_class,
                )
        finally:
            policy.processor.detach()
            self.policy.train(was_training)
        metrics = {
            f"eval_rollout/{k}": float(v)
            for k, v in dict(results).items()
            if isinstance(v, (int, float)) and math.isfinite(float(v))
        }
        metrics["eval_rollout/seconds"] = time.time() - started
        self.rollout_history.append({"step": self.state.global_step, **metrics})
        super().log(metrics)
        return metrics


def _gathered(parameters, modifier_rank: int | None = None):
    """``deepspeed.zero.GatheredParameters`` over the ZeRO-3-partitioned ones among ``parameters``; else a no-op."""
    import contextlib

    partitioned = [p for p in parameters if p is not None and hasattr(p, "ds_id")]
    if not partitioned:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(partitioned, modifier_rank=modifier_rank)


def _first_device(model) -> torch.device:
    for parameter in model.parameters():
        if parameter.device.type != "meta":
            return parameter.device
    return torch.device("cpu")


__all__ = ["OfflineRLTrainer", "PolyakCallback", "RolloutEvalCallback", "ValueGuidedLogitsProcessor", "env_rollout_fn"]
