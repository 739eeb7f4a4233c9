"""Configuration of :class:`~trainers.TreeDPOTrainer` (W2SG tree-DPO)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from trl import DPOConfig

__all__ = ["TreeDPOConfig", "check_choices", "check_number"]


def check_number(
    config,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    allow_none: bool = False,
) -> None:
    """Raise ``ValueError`` naming ``name`` when ``config.<name>`` is NaN, infinite or out of range."""
    value = getattr(config, name)
    if value is None:
        if allow_none:
            return
        raise ValueError(f"{name} must be a number, got None")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        raise ValueError(f"{name} must be {'>=' if low_inclusive else '>'} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")


def check_choices(config, names) -> None:
    """Raise ``ValueError`` naming the field when one of ``names`` is not among its ``metadata["choices"]``."""
    for f in fields(config):
        choices = f.metadata.get("choices") if f.name in names else None
        if choices is not None and getattr(config, f.name) not in choices:
            raise ValueError(f"{f.name} must be one of {choices}, got {getattr(config, f.name)!r}")


@dataclass
class TreeDPOConfig(DPOConfig):
    r"""
    Configuration class for the [`~trainers.TreeDPOTrainer`]: TRL's [`~trl.DPOConfig`] plus the settings of
    preference pairs mined from weak-model trajectory trees (W2SG paper, section 3.2).

    Every field of `DPOConfig` keeps its meaning; the defaults that differ are listed first. Using
    [`~transformers.HfArgumentParser`] this class becomes command-line arguments.

    Parameters:
        > Defaults that differ from `DPOConfig`

        learning_rate (`float`, *optional*, defaults to `2e-5`):
            AdamW learning rate. Paper (DPO phase, LoRA r=64 / alpha=128): 2e-5; TRL's own default is 1e-6.
        beta (`float`, *optional*, defaults to `0.1`):
            DPO temperature, the strength of the implicit KL penalty against the weak SFT reference. Paper: 0.1
            (0.5 was worse on ScienceWorld: 49.2 vs 54.9 average reward).

        > Parameters that control the loss

        chosen_nll_weight (`float`, *optional*, defaults to `0.0`):
            Weight of a negative log-likelihood term on the chosen continuation, added to DPO's sigmoid loss:
            `loss = -log sigmoid(beta * margin) + chosen_nll_weight * NLL(chosen)`. A positive value sets TRL's
            `loss_type=["sigmoid", "sft"]` with `loss_weights=[1.0, chosen_nll_weight]` (appended to other loss
            types already given). The NLL keeps the policy's likelihood of the preferred actions from falling,
            which plain DPO allows and which hurts on small preference sets. `0.0`: plain DPO. Paper: plain DPO.
        mask_continuation_observations (`bool`, *optional*, defaults to `True`):
            Train only on the continuation's assistant turns: the user observations inside a multi-step
            continuation (and the chat template's role headers) get no loss, for the policy and for the reference
            alike. With `False`, every token of the continuation counts, which is exactly TRL's DPO loss. Paper:
            actions only (Eq. 2).

        > Parameters that control the pairs mined from a forest

        pair_margin (`float`, *optional*, defaults to `0.0`):
            A pair needs `mean(chosen) - mean(rejected) > pair_margin` (outcomes are in [0, 1]). Paper: any
            difference.
        pair_continuation (`str`, *optional*, defaults to `"path"`):
            `"path"`: the child's step and the best (chosen) / worst (rejected) path below it; `"step"`: the
            child's step only. Paper: continuations sigma+ / sigma- from the divergence point.
        pair_strategy (`str`, *optional*, defaults to `"all"`):
            `"all"` pairs every two siblings whose outcomes differ; `"best_vs_worst"` keeps one pair per divergence
            point. Paper: not specified.
        pair_no_effect_pattern (`str` or `None`, *optional*, defaults to `None`):
            Regular expression of the environment's answers to actions that change nothing (ScienceWorld:
            `trainers.envs.scienceworld.NO_EFFECT_PATTERN`, e.g. "No known action matches that input.", "The door
            is already open."). A branch whose first action had no effect is never the chosen side of a pair:
            only what came after it made its outcome better. `None` keeps every branch. Paper: not specified.

        > Parameters that control a reference model with another tokenizer

        ref_max_length (`int` or `None`, *optional*, defaults to `None`):
            Token budget of the reference model's own tokenization when it differs from the policy's; `None` uses
            `max_length`. Sequences are cut keeping their start, like the policy's.
        foreign_ref_calibration (`str`, *optional*, defaults to `"per_token"`):
            How to use the log-probs of a reference model with another tokenizer. `"per_token"`: each
            continuation's reference log-prob becomes its per-token average, shifted by the dataset-wide gap
            between the reference's and the policy's mean per-token log-prob, times the policy's token count (one
            extra forward pass of the policy over the pairs before training). Without it the two models' different
            token counts and confidence levels enter the DPO margin in proportion to length, and pairs whose
            continuations differ in length start saturated (a loss near 0, so no gradient). `"none"`: the raw
            summed log-probs. Paper: weak and strong models shared a tokenizer, so the question did not arise.
            `precompute_ref_log_probs` is forced on with such a reference: its log-probs must come from its own
            tokenization and are computed once before training.
    """

    learning_rate: float = field(
        default=2e-5,
        metadata={
            "help": "AdamW learning rate. Paper (DPO phase, LoRA r=64 / alpha=128): 2e-5; TRL's own default is 1e-6."
        },
    )
    beta: float = field(
        default=0.1,
        metadata={
            "help": "DPO temperature, the strength of the implicit KL penalty against the weak SFT reference. "
            "Paper: 0.1 (0.5 was worse on ScienceWorld: 49.2 vs 54.9 average reward)."
        },
    )
    chosen_nll_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of a negative log-likelihood term on the chosen continuation, added to DPO's sigmoid "
            "loss. A positive value sets TRL's loss_type=['sigmoid', 'sft'] with loss_weights=[1.0, "
            "chosen_nll_weight] (appended to other loss types already given). It keeps the likelihood "
            "of the preferred actions from falling, which plain DPO allows and which hurts on small "
            "preference sets. 0.0: plain DPO. Paper: plain DPO."
        },
    )
    mask_continuation_observations: bool = field(
        default=True,
        metadata={
            "help": "Train only on the continuation's assistant turns: observations inside a multi-step "
            "continuation and the template's role headers get no loss, for the policy and the "
            "reference alike. False: every continuation token counts (TRL's DPO loss). Paper: actions "
            "only (Eq. 2)."
        },
    )
    pair_margin: float = field(
        default=0.0,
        metadata={
            "help": "A mined pair needs mean(chosen) - mean(rejected) > pair_margin (outcomes in [0, 1]). "
            "Paper: any difference."
        },
    )
    pair_continuation: str = field(
        default="path",
        metadata={
            "help": "'path': the child's step and the best (chosen) / worst (rejected) path below it; 'step': "
            "the child's step only. Paper: continuations from the divergence point.",
            "choices": ["path", "step"],
        },
    )
    pair_strategy: str = field(
        default="all",
        metadata={
            "help": "'all' pairs every two siblings whose outcomes differ; 'best_vs_worst' keeps one pair per "
            "divergence point. Paper: not specified.",
            "choices": ["all", "best_vs_worst"],
        },
    )
    pair_no_effect_pattern: str | None = field(
        default=None,
        metadata={
            "help": "Regular expression of the environment's answers to actions that change nothing; a branch "
            "whose first action had no effect is never a pair's chosen side. None keeps every branch."
        },
    )
    ref_max_length: int | None = field(
        default=None,
        metadata={
            "help": "Token budget of the reference's own tokenization when its tokenizer differs from the "
            "policy's; None uses max_length. Sequences keep their start."
        },
    )
    foreign_ref_calibration: str = field(
        default="per_token",
        metadata={
            "help": "Reference with another tokenizer: 'per_token' moves each continuation's reference "
            "log-prob onto the policy's token count and per-token level (one extra policy pass before "
            "training), so pairs of different lengths do not start saturated; 'none' uses the raw "
            "summed log-probs. precompute_ref_log_probs is forced on with such a reference.",
            "choices": ["per_token", "none"],
        },
    )

    def __post_init__(self):
        check_choices(self, ("pair_continuation", "pair_strategy", "foreign_ref_calibration"))
        check_number(self, "learning_rate", low=0.0)
        check_number(self, "beta", low=0.0, low_inclusive=False)
        check_number(self, "chosen_nll_weight", low=0.0)
        check_number(self, "pair_margin", low=0.0, high=1.0)
        check_number(self, "ref_max_length", low=1, allow_none=True)
        super().__post_init__()  # TRL turns a string loss_type into a list and checks loss_weights' length
        if self.chosen_nll_weight > 0:
            weights = list(self.loss_weights) if self.loss_weights is not None else [1.0] * len(self.loss_type)
            if "sft" in self.loss_type:
                # a config rebuilt from its own dict (to_dict / replace) already holds the term: accept it once
                if weights[self.loss_type.index("sft")] != float(self.chosen_nll_weight):
                    raise ValueError(
                        f"chosen_nll_weight={self.chosen_nll_weight} adds TRL's 'sft' loss itself, but loss_type "
                        f"{self.loss_type} already holds 'sft' with weight {weights[self.loss_type.index('sft')]}: "
                        "give the NLL weight in one place only"
                    )
                return
            self.loss_type = [*self.loss_type, "sft"]
            self.loss_weights = [*weights, float(self.chosen_nll_weight)]
