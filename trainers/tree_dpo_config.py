"""Configuration of :class:`~trainers.TreeDPOTrainer` (W2SG tree-DPO)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig


@dataclass
class TreeDPOConfig(DPOConfig):
    """TRL's :class:`~trl.DPOConfig` plus the settings of tree-derived preference pairs.

    Every field of ``DPOConfig`` keeps its meaning. The ones whose defaults matter here:

    * ``beta`` (default 0.1; paper 0.1, and 0.5 was worse on ScienceWorld: 49.2 vs 54.9 avg reward);
    * ``learning_rate`` (default 2e-5, the paper's DPO-phase value with LoRA r=64 / alpha=128;
      TRL's own default is 1e-6);
    * ``precompute_ref_log_probs`` (default False; forced on when the reference model has a
      different tokenizer than the policy, since its log-probs must come from its own
      tokenization and are computed once before training).

    Parameters:
        mask_continuation_observations (`bool`, defaults to `True`):
            Train only on the continuation's assistant turns: the user observations inside a
            multi-step continuation (and the chat template's role headers) get no loss, for the
            policy and for the reference alike. With `False`, every token of the continuation
            counts, which is exactly TRL's DPO loss. Paper: actions only (Eq. 2).
        ref_max_length (`int` or `None`, defaults to `None`):
            Token budget of the reference model's own tokenization when it differs from the
            policy's; `None` uses `max_length`. Sequences are cut keeping their start, like the
            policy's.
        foreign_ref_calibration (`str`, defaults to `"per_token"`):
            How to use the log-probs of a reference model with another tokenizer. `"per_token"`:
            each continuation's reference log-prob becomes its per-token average, shifted by the
            dataset-wide gap between the reference's and the policy's mean per-token log-prob,
            times the policy's token count (one extra forward pass of the policy over the pairs
            before training). Without it the two models' different token counts and confidence
            levels enter the DPO margin in proportion to length, and pairs whose continuations
            differ in length start saturated (a loss near 0, so no gradient). `"none"`: the raw
            summed log-probs. Paper: weak and strong models shared a tokenizer, so the question
            did not arise.
        pair_margin (`float`, defaults to `0.0`):
            When the trainer mines pairs from a forest: a pair needs
            `mean(chosen) - mean(rejected) > pair_margin`. Paper: any difference.
        pair_continuation (`str`, defaults to `"path"`):
            `"path"`: the child's step and the best (chosen) / worst (rejected) path below it;
            `"step"`: the child's step only. Paper: continuations sigma+ / sigma- from the
            divergence point.
        pair_strategy (`str`, defaults to `"all"`):
            `"all"` pairs every two siblings whose outcomes differ; `"best_vs_worst"` keeps one
            pair per divergence point. Paper: not specified.
    """

    learning_rate: float = field(default=2e-5, metadata={"help": "AdamW learning rate. Paper (DPO phase): 2e-5."})
    beta: float = field(
        default=0.1,
        metadata={"help": "DPO temperature / KL strength against the weak SFT reference. Paper: 0.1 (0.5 was worse)."},
    )
    mask_continuation_observations: bool = field(
        default=True,
        metadata={"help": "Loss only on the continuation's assistant turns (observations masked out)."},
    )
    ref_max_length: int | None = field(
        default=None,
        metadata={"help": "Max tokens of the reference's own tokenization when its tokenizer differs; None: max_length."},
    )
    foreign_ref_calibration: str = field(
        default="per_token",
        metadata={"help": "Reference with another tokenizer: 'per_token' calibration or 'none'.", "choices": ["per_token", "none"]},
    )
    pair_margin: float = field(default=0.0, metadata={"help": "Minimum mean-outcome gap of a mined pair (strict)."})
    pair_continuation: str = field(
        default="path", metadata={"help": "Continuation of mined pairs: 'path' or 'step'.", "choices": ["path", "step"]}
    )
    pair_strategy: str = field(
        default="all",
        metadata={"help": "Which siblings to pair: 'all' or 'best_vs_worst'.", "choices": ["all", "best_vs_worst"]},
    )

    def __post_init__(self):
        if self.pair_continuation not in ("path", "step"):
            raise ValueError(f"pair_continuation must be 'path' or 'step', got {self.pair_continuation!r}")
        if self.pair_strategy not in ("all", "best_vs_worst"):
            raise ValueError(f"pair_strategy must be 'all' or 'best_vs_worst', got {self.pair_strategy!r}")
        if self.foreign_ref_calibration not in ("per_token", "none"):
            raise ValueError(f"foreign_ref_calibration must be 'per_token' or 'none', got {self.foreign_ref_calibration!r}")
        if self.pair_margin < 0:
            raise ValueError(f"pair_margin must be >= 0, got {self.pair_margin}")
        super().__post_init__()
