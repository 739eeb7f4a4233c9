"""Configuration of :class:`trainers.OfflineRLTrainer` (MC returns and ILQL on trajectory data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from transformers import TrainingArguments

from .config_checks import check_fields
from .losses.offline_rl import CQL_IMPLEMENTATIONS, LOSS_FIELD_RANGES, LOSS_TYPES

Q_HEAD_TYPES = ("linear", "mlp")


def _fast_bf16_available() -> bool:
    try:
        import torch

        from .models import default_dtype

        return default_dtype() == torch.bfloat16
    except ImportError:  # models.py is optional for this module
        import torch

        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False


@dataclass
class OfflineRLConfig(TrainingArguments):
    r"""
    Configuration class for the [`OfflineRLTrainer`].

    This class includes only the parameters that are specific to offline RL on trajectories; every field of
    [`~transformers.TrainingArguments`] is accepted too, and some of its defaults differ (last group below). With
    [`~transformers.HfArgumentParser`] (or `python -m trainers offline-rl`) every field is a command-line flag.

    Values quoted per field: the default here, BOOST's value (appendix D / G.2) and the anchors' (LMRL-Gym's MC
    returns and ILQL, Snell et al.'s ILQL) where they differ. The loss equations are in [`trainers.losses.offline_rl`].

    Parameters:
        > Parameters that control the offline RL loss

        loss_type (`str`, *optional*, defaults to `"mc"`):
            Value loss: `"mc"` (regression of Q onto Monte Carlo returns) or `"ilql"` (implicit Q-learning with a V
            head and target Q heads). BOOST runs both.
        gamma (`float`, *optional*, defaults to `0.99`):
            Discount per assistant turn, in [0, 1]; tokens inside one turn are not discounted, since one utterance
            is one decision of the agent. Anchors: 0.99; BOOST's analysis: 1.
        reward_scale (`float`, *optional*, defaults to `1.0`):
            Every reward is multiplied by this before returns and TD targets are computed, so the Q / V heads
            learn values in that scale. Returns of tens (Twenty Questions' reward is the number of questions
            left, up to 19) make the squared value error swamp the behaviour-cloning and CQL gradients after
            clipping; scaling them to about [0, 1] keeps every term's gradient in play. The value guidance
            `exp(beta * Q)` then sees the scaled Q. Papers: 1 (unscaled).
        tau (`float`, *optional*, defaults to `0.7`):
            Expectile of ILQL's V loss, in (0, 1). Anchors: 0.7.
        cql_weight (`float`, *optional*, defaults to `10.0`):
            Weight of the CQL term, the cross-entropy of each Q head's vocabulary logits on the taken token. BOOST
            (appendix D): 10 in every setting; anchors: 0.01 to 0.1.
        bc_weight (`float`, *optional*, defaults to `1.0`):
            Weight of a behaviour-cloning cross-entropy on the LM head. The value heads and the LM head share the
            trunk, so when the trunk trains (LoRA or full) the value losses move the hidden states the LM head
            reads; this term keeps the base policy imitating the (weighted) data, as the guided policy
            `pi_base * exp(beta * Q)` assumes and as ILQL's joint behaviour-cloning term does. 0 trains the heads
            alone, on a frozen trunk.
        polyak_rate (`float`, *optional*, defaults to `0.005`):
            ILQL target update after every optimizer step, `target <- (1 - rate) * target + rate * online`, in
            [0, 1]. Anchors: 0.005.
        cql_chunk_size (`int`, *optional*, defaults to `256`):
            Action positions per chunk of the vocabulary-wide cross-entropies (CQL and behaviour cloning), which
            bounds the logits held at once to `cql_chunk_size * vocabulary size`.
        cql_implementation (`str`, *optional*, defaults to `"chunked"`):
            `"chunked"`, or `"naive"`, which materialises all logits (for comparisons and benchmarks only).

        > Parameters that control the value heads and the extracted policy

        q_head_type (`str`, *optional*, defaults to `"linear"`):
            `"linear"` (BOOST appendix G.2: `W_Q h + b_Q`) or `"mlp"`.
        mlp_hidden_size (`int` or `None`, *optional*, defaults to `None`):
            Hidden width of MLP heads; `None` uses twice the model's hidden size.
        beta (`float`, *optional*, defaults to `1.0`):
            Guidance temperature of the extracted policy, `log pi_base + beta * Q` (MC) or
            `log pi_base + beta * (min targetQ - V)` (ILQL); saved with the model for `load_value_guided_policy`.
            Anchors: 1 to 16.

        > Parameters that control the data preprocessing

        max_length (`int` or `None`, *optional*, defaults to `1024`):
            Token budget per trajectory; longer trajectories drop their oldest turns, never the last reward-bearing
            one. `None`: no limit. BOOST and LMRL-Gym (GPT-2 runs): 1024.
        chat_template (`str` or `None`, *optional*, defaults to `None`):
            `"plain"` installs the library's plain template for base models without one; any other string is used
            as a Jinja chat template. `None` keeps the tokenizer's own.
        dataset_num_proc (`int` or `None`, *optional*, defaults to `None`):
            Processes for tokenization; `None` tokenizes in the calling process.

        > Parameters that control the model

        model_init_kwargs (`dict[str, Any]` or `None`, *optional*, defaults to `None`):
            Keyword arguments for `from_pretrained` when `model` is a string; `dtype` defaults to float32 master
            weights.
        load_in_4bit (`bool`, *optional*, defaults to `False`):
            QLoRA: load the base model in 4-bit NF4 through bitsandbytes (needs `peft_config`). BOOST: QLoRA for
            Llama-3-8B on WebShop.

        > Parameters that control the live evaluation

        eval_rollout_steps (`int`, *optional*, defaults to `0`):
            Run the live rollout evaluation every this many optimizer steps; 0 runs it only when
            `evaluate_rollouts()` is called.
        eval_rollout_episodes (`int`, *optional*, defaults to `16`):
            Episodes per live evaluation. BOOST (table 1): 64.
        eval_rollout_max_new_tokens (`int`, *optional*, defaults to `64`):
            Generation budget per agent turn.
        eval_rollout_temperature (`float`, *optional*, defaults to `0.0`):
            Sampling temperature of the live evaluation; 0 is greedy, as BOOST evaluates.
        eval_rollout_batch_size (`int`, *optional*, defaults to `8`):
            Episodes generated together.

        > Parameters whose defaults differ from TrainingArguments

        learning_rate (`float`, *optional*, defaults to `1e-4`):
            Initial AdamW learning rate. BOOST: 1e-4.
        per_device_train_batch_size (`int`, *optional*, defaults to `8`):
            Trajectories per device and optimizer step. BOOST: 8 (4 or 1 on WebShop).
        remove_unused_columns (`bool`, *optional*, defaults to `False`):
            Keep the dataset's columns: the trajectory collator needs them.
        logging_steps (`float`, *optional*, defaults to `10`):
            Log every this many optimizer steps (a value below 1 is a fraction of the total steps).
        bf16 (`bool` or `None`, *optional*, defaults to `None`):
            bf16 mixed precision; `None` turns it on where the CPU or GPU runs bf16 natively.
    """

    # Checked once, with the choices in each field's metadata, by trainers.config_checks.check_fields.
    field_ranges: ClassVar[dict[str, str]] = {
        **LOSS_FIELD_RANGES,
        "polyak_rate": "[0, 1]",
        "mlp_hidden_size": "[1, inf)",
        "beta": "[0, inf)",
        "max_length": "[1, inf)",
        "dataset_num_proc": "[1, inf)",
        "eval_rollout_steps": "[0, inf)",
        "eval_rollout_episodes": "[1, inf)",
        "eval_rollout_max_new_tokens": "[1, inf)",
        "eval_rollout_temperature": "[0, inf)",
        "eval_rollout_batch_size": "[1, inf)",
        "learning_rate": "[0, inf)",
        "per_device_train_batch_size": "[1, inf)",
    }

    # Parameters that control the offline RL loss
    loss_type: str = field(
        default="mc",
        metadata={
            "help": 'Value loss: `"mc"` (regression of Q onto Monte Carlo returns) or `"ilql"` (implicit '
            "Q-learning with a V head and target Q heads). BOOST runs both.",
            "choices": LOSS_TYPES,
        },
    )
    gamma: float = field(
        default=0.99,
        metadata={
            "help": "Discount per assistant turn, in [0, 1]; tokens inside one turn are not discounted, since one "
            "utterance is one decision of the agent. Anchors: 0.99; BOOST's analysis: 1."
        },
    )
    reward_scale: float = field(
        default=1.0,
        metadata={
            "help": "Every reward is multiplied by this before returns and TD targets are computed, so the Q / V "
            "heads learn values in that scale. Returns of tens (Twenty Questions' reward is the number of questions "
            "left, up to 19) make the squared value error swamp the behaviour-cloning and CQL gradients after "
            "clipping; scaling them to about [0, 1] keeps every term's gradient in play. The value guidance "
            "`exp(beta * Q)` then sees the scaled Q. Papers: 1 (unscaled)."
        },
    )
    tau: float = field(default=0.7, metadata={"help": "Expectile of ILQL's V loss, in (0, 1). Anchors: 0.7."})
    cql_weight: float = field(
        default=10.0,
        metadata={
            "help": "Weight of the CQL term, the cross-entropy of each Q head's vocabulary logits on the taken "
            "token. BOOST (appendix D): 10 in every setting; anchors: 0.01 to 0.1."
        },
    )
    bc_weight: float = field(
        default=1.0,
        metadata={
            "help": "Weight of a behaviour-cloning cross-entropy on the LM head. The value heads and the LM head "
            "share the trunk, so when the trunk trains (LoRA or full) the value losses move the hidden states the "
            "LM head reads; this term keeps the base policy imitating the (weighted) data, as the guided policy "
            "`pi_base * exp(beta * Q)` assumes and as ILQL's joint behaviour-cloning term does. 0 trains the heads "
            "alone, on a frozen trunk."
        },
    )
    polyak_rate: float = field(
        default=0.005,
        metadata={
            "help": "ILQL target update after every optimizer step, `target <- (1 - rate) * target + rate * "
            "online`, in [0, 1]. Anchors: 0.005."
        },
    )
    cql_chunk_size: int = field(
        default=256,
        metadata={
            "help": "Action positions per chunk of the vocabulary-wide cross-entropies (CQL and behaviour "
            "cloning), which bounds the logits held at once to `cql_chunk_size * vocabulary size`."
        },
    )
    cql_implementation: str = field(
        default="chunked",
        metadata={
            "help": '`"chunked"`, or `"naive"`, which materialises all logits (for comparisons and benchmarks only).',
            "choices": CQL_IMPLEMENTATIONS,
        },
    )

    # Parameters that control the value heads and the extracted policy
    q_head_type: str = field(
        default="linear",
        metadata={"help": '`"linear"` (BOOST appendix G.2: `W_Q h + b_Q`) or `"mlp"`.', "choices": Q_HEAD_TYPES},
    )
    mlp_hidden_size: int | None = field(
        default=None, metadata={"help": "Hidden width of MLP heads; `None` uses twice the model's hidden size."}
    )
    beta: float = field(
        default=1.0,
        metadata={
            "help": "Guidance temperature of the extracted policy, `log pi_base + beta * Q` (MC) or `log pi_base + "
            "beta * (min targetQ - V)` (ILQL); saved with the model for `load_value_guided_policy`. Anchors: 1 to 16."
        },
    )

    # Parameters that control the data preprocessing
    max_length: int | None = field(
        default=1024,
        metadata={
            "help": "Token budget per trajectory; longer trajectories drop their oldest turns, never the last "
            "reward-bearing one. `None`: no limit. BOOST and LMRL-Gym (GPT-2 runs): 1024."
        },
    )
    chat_template: str | None = field(
        default=None,
        metadata={
            "help": '`"plain"` installs the library\'s plain template for base models without one; any other '
            "string is used as a Jinja chat template. `None` keeps the tokenizer's own."
        },
    )
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Processes for tokenization; `None` tokenizes in the calling process."}
    )

    # Parameters that control the model
    model_init_kwargs: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments for `from_pretrained` when `model` is a string; `dtype` defaults to float32 "
            "master weights."
        },
    )
    load_in_4bit: bool = field(
        default=False,
        metadata={
            "help": "QLoRA: load the base model in 4-bit NF4 through bitsandbytes (needs `peft_config`). BOOST: "
            "QLoRA for Llama-3-8B on WebShop."
        },
    )

    # Parameters that control the live evaluation
    eval_rollout_steps: int = field(
        default=0,
        metadata={
            "help": "Run the live rollout evaluation every this many optimizer steps; 0 runs it only when "
            "`evaluate_rollouts()` is called."
        },
    )
    eval_rollout_episodes: int = field(
        default=16, metadata={"help": "Episodes per live evaluation. BOOST (table 1): 64."}
    )
    eval_rollout_max_new_tokens: int = field(default=64, metadata={"help": "Generation budget per agent turn."})
    eval_rollout_temperature: float = field(
        default=0.0, metadata={"help": "Sampling temperature of the live evaluation; 0 is greedy, as BOOST evaluates."}
    )
    eval_rollout_batch_size: int = field(default=8, metadata={"help": "Episodes generated together."})

    # Parameters whose defaults differ from TrainingArguments
    learning_rate: float = field(default=1e-4, metadata={"help": "Initial AdamW learning rate. BOOST: 1e-4."})
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "Trajectories per device and optimizer step. BOOST: 8 (4 or 1 on WebShop)."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep the dataset's columns: the trajectory collator needs them."}
    )
    logging_steps: float = field(
        default=10,
        metadata={"help": "Log every this many optimizer steps (a value below 1 is a fraction of the total steps)."},
    )
    bf16: bool | None = field(
        default=None,
        metadata={"help": "bf16 mixed precision; `None` turns it on where the CPU or GPU runs bf16 natively."},
    )

    def __post_init__(self):
        check_fields(self, self.field_ranges, upstream=TrainingArguments)
        if self.bf16 is None:
            import torch

            self.bf16 = _fast_bf16_available() and not self.fp16
            if self.bf16 and not torch.cuda.is_available():
                # TrainingArguments only accepts bf16 on CPU when told it runs on CPU; there is nothing else here
                self.use_cpu = True
        super().__post_init__()
