"""Configuration of :class:`trainers.BilevelReweightTrainer` (BOOST, Algorithm 1)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..offline_rl_config import OfflineRLConfig
from .reweighting_head import INPUT_NORMALIZATIONS
from .trajectory_embeddings import POOLINGS as EMBEDDING_POOLINGS

METHODS = ("vanilla", "vanilla_synthetic", "bilevel", "boost")
AUX_MODES = ("shared_backbone", "separate_adapters")
PHI_SIGNALS = ("val_alignment", "adapter_alignment", "paper")
#: the methods that train on synthetic data as well as real
SYNTHETIC_METHODS = ("vanilla_synthetic", "boost")


def _help(text: str, choices: tuple[str, ...] | None = None) -> dict:
    metadata: dict = {"help": " ".join(text.split())}
    if choices is not None:
        metadata["choices"] = list(choices)
    return metadata


@dataclass
class BilevelReweightConfig(OfflineRLConfig):
    r"""
    Configuration class for :class:`trainers.BilevelReweightTrainer` (BOOST). Every
    :class:`trainers.OfflineRLConfig` and ``TrainingArguments`` field applies too.

    One optimizer step of the ``Trainer`` is one inner step of Algorithm 1. An outer iteration is
    ``k_psi + k_theta + k_phi`` optimizer steps: ``k_psi`` steps on the auxiliary policy ψ, the copy
    θ ← ψ, ``k_theta`` steps on the primary policy θ, ``k_phi`` steps on the reweighting head φ. So
    ``max_steps`` counts inner steps, and checkpoints can fall anywhere inside an outer iteration.

    BOOST appendix D (table 2), all with lr 1e-4, CQL weight 10, K_φ = 1, train-category fraction 0.6,
    validation split 0.3; K_θ = K_ψ = 20 (Twenty Questions) or 32 (Car Dealer, WebShop); reweighting
    head depth 2 (Twenty Questions, Car Dealer) or 4 (WebShop):

    ==================  =====  =================  =====  ==========  =============
    environment         algo   model              α      batch       grad. accum.
    ==================  =====  =================  =====  ==========  =============
    Twenty Questions    MC     GPT-2              0      8           16
    Twenty Questions    ILQL   GPT-2              1      8           16
    Car Dealer          MC     GPT-2              10     8           2
    Car Dealer          ILQL   GPT-2              1      8           2
    WebShop             MC     Llama-3-8B QLoRA   0.1    4           4
    WebShop             ILQL   Llama-3-8B QLoRA   0.1    1           16
    ==================  =====  =================  =====  ==========  =============

    Parameters:
        > Parameters that select the method and Algorithm 1's schedule

        method (`str`, *optional*, defaults to `"boost"`):
            One switch for the four methods of table 1: `"vanilla"` (real data, uniform weights:
            exactly `OfflineRLTrainer`), `"vanilla_synthetic"` (real + synthetic, uniform), `"bilevel"`
            (real data, learned weights), `"boost"` (real + synthetic, learned weights). Synthetic data is
            required by `vanilla_synthetic` / `boost`, validation data by `bilevel` / `boost`.
        alpha (`float`, *optional*, defaults to `1.0`):
            Penalty α of the minimax objective (Eq. 2): the weight of the train loss in θ's step and, with
            `phi_signal="paper"`, the scale of φ's objective. Paper: 0 / 1 / 10 / 1 / 0.1 / 0.1 (table above).
        alpha_increment (`float`, *optional*, defaults to `0.0`):
            α grows by this much after every outer iteration (F2SA grows its penalty; BOOST only states the
            initial value).
        k_psi (`int`, *optional*, defaults to `20`):
            K_ψ, optimizer steps on ψ per outer iteration. Paper: 20 / 32.
        k_theta (`int`, *optional*, defaults to `20`):
            K_θ, optimizer steps on θ per outer iteration. Paper: 20 / 32.
        k_phi (`int`, *optional*, defaults to `1`):
            K_φ, optimizer steps on φ per outer iteration. Paper: 1.
        phi_warmup_steps (`int`, *optional*, defaults to `0`):
            φ steps on the initial policy before the first outer iteration (they count in `max_steps`), so
            that θ's first steps use learned weights rather than uniform ones: with few outer iterations,
            half of θ's updates otherwise train on every synthetic trajectory alike. Needs
            `phi_signal="val_alignment"` (the paper's signal is zero while θ = ψ). Paper: 0.
        aux_mode (`str`, *optional*, defaults to `"shared_backbone"`):
            How ψ and θ are stored. `"shared_backbone"` (appendix G.3): one backbone, separate value heads;
            the ψ phase updates the ψ heads only, the θ phase the θ heads, the backbone (or its LoRA
            adapter) and the LM head's behaviour-cloning term; θ ← ψ copies the heads.
            `"separate_adapters"`: one frozen base with a θ and a ψ LoRA adapter (needs `peft_config`);
            θ ← ψ copies adapter and heads.
        split_theta_backward (`bool`, *optional*, defaults to `True`):
            Each θ micro-step runs L_val's forward and backward, then α·L_train's, so only one pass's
            activations are alive at a time (same gradients as one backward of the sum). `False` runs both
            in one pass. DeepSpeed always uses the single pass (its engine steps inside its backward).

        > Parameters of φ's learning signal (where the default departs from the paper)

        phi_signal (`str`, *optional*, defaults to `"val_alignment"`):
            What φ learns from. `"paper"`: Algorithm 1 as written, φ ← φ − η_φ ∇_φ α Σ_i w̃_i (l_i(θ) −
            l_i(ψ)); the gap also measures the K_θ extra training steps θ has had, and nothing bounds how
            far the weights move. `"val_alignment"`: each trajectory's signal is the cosine between its loss
            gradient and the validation loss gradient on θ's output layers, standardised over the batch;
            φ minimises −Σ_i w̃_i ŝ_i + τ·KL(w̃ ‖ uniform), whose optimum is w̃_i ∝ exp(ŝ_i / τ). On
            controlled corruptions both track quality with the default head input and lr (docs/boost.md).
            `"adapter_alignment"`: the same objective, with the cosine taken over θ's LoRA adapter weights and
            both gradients centred on the φ batch's mean gradient; it sees corruptions that keep the actions
            and rearrange the observations (shuffled turns, another task's observations), which the output
            layers do not, at the cost of one backbone backward per trajectory. Needs `peft_config`; not
            with DeepSpeed.
        weight_temperature (`float`, *optional*, defaults to `1.0`):
            τ of the KL floor (`phi_signal="val_alignment"` only): smaller values let the weights move
            further from uniform; n_eff cannot collapse below what exp(ŝ/τ) of a unit-variance ŝ gives.
        embedding_pooling (`str`, *optional*, defaults to `"action_mean_nll"`):
            How the frozen model's token states become the head's input. `"last_token"` (appendix G.5):
            the final token, which under a chat template is a template token (e.g. the trailing newline),
            so embeddings of different trajectories are nearly identical. `"action_mean"`: mean over the
            agent's action tokens. `"action_mean_nll"`: that, plus the mean and max negative
            log-likelihood of the action tokens under the frozen model. `"action_context_nll"`: the
            same with the mean over every token added (twice as wide): it carries the observations and
            the turns' order, which action states alone barely reflect. `"mean"`: mean over all tokens.

        > Parameters of the reweighting head φ

        reweight_learning_rate (`float` or `None`, *optional*, defaults to `None`):
            φ's own AdamW learning rate. `None` = `1e-3` with `phi_signal="val_alignment"`, and
            `learning_rate / 10` with `"paper"` (paper: up to an order of magnitude below the policy's).
        reweight_weight_decay (`float`, *optional*, defaults to `0.0`):
            φ's AdamW weight decay.
        reweight_max_grad_norm (`float`, *optional*, defaults to `1.0`):
            Gradient clipping of φ (0 = off).
        reweight_depth (`int`, *optional*, defaults to `2`):
            Linear layers of the MLP. Paper: 2 (Twenty Questions, Car Dealer), 4 (WebShop).
        reweight_hidden_dim (`int`, *optional*, defaults to `256`):
            Hidden width of the MLP (not stated in the paper).
        reweight_input_normalization (`str`, *optional*, defaults to `"none"`):
            How the head's input is normalised with the training set's embedding statistics (saved with
            the head): `"none"` (raw embeddings), `"center"` (subtract the mean embedding, divide by one
            overall scale) or `"standardize"` (each channel by its own standard deviation). A frozen LM's
            pooled states share one large direction, so on raw input the MLP's hidden units see nearly
            the same value for every trajectory. Not in the paper.

        > Parameters of the validation batches and the embeddings

        phi_batch_size (`int` or `None`, *optional*, defaults to `None`):
            Training trajectories per φ micro-step with `phi_signal="val_alignment"`, drawn from the whole
            training set per (seed, step); `None` = the micro-batch the data loader gives. The signal is
            standardised within this batch, so over a micro-batch of 2 (WebShop's) it only says which of
            the two is better; over 8-16 the head learns a ranking. Costs one no-gradient forward of
            these trajectories and one small output-layer backward each. Not in the paper.
        val_batch_size (`int` or `None`, *optional*, defaults to `None`):
            Validation trajectories per micro-batch for L_val (and for the alignment signal); `None` =
            `per_device_train_batch_size`. Drawn deterministically from (seed, step), so resuming
            reproduces them.
        embedding_batch_size (`int`, *optional*, defaults to `8`):
            Trajectories per forward pass when embedding. The pass runs in bf16 where the hardware runs
            bf16 natively and `bf16` is on (`trainers.hardware.pick_dtype("embedding")`, which
            `TRAINERS_PRECISION_EMBEDDING` can force), else in fp32.
        embedding_max_length (`int` or `None`, *optional*, defaults to `None`):
            Tokens kept (the last ones) when embedding; `None` = `max_length`.
        embedding_cache_dir (`str` or `None`, *optional*, defaults to `None`):
            Embedding cache folder (default `$HF_HOME/trainers/trajectory_embeddings`), shared by every
            method and run.

    Distributed training (DDP, DeepSpeed ZeRO-1/2/3): the reweighting softmax is normalised per process
    (each rank's weights are the softmax over its own micro-batch), and φ's gradient is averaged over
    the ranks before φ's optimizer steps. Each phase updates only its own parameter group on every
    backend: DDP runs with `ddp_find_unused_parameters=True` (set here for the bilevel methods; `False`
    is rejected); under DeepSpeed the optimizer step skips the other phases' parameter groups. BOOST
    itself was trained on one device.
    """

    field_ranges: ClassVar[dict[str, str]] = {
        **OfflineRLConfig.field_ranges,
        # Algorithm 1 runs every phase in each outer iteration
        "k_psi": "[1, inf)",
        "k_theta": "[1, inf)",
        "k_phi": "[1, inf)",
        "phi_warmup_steps": "[0, inf)",
        "alpha": "[0, inf)",
        "alpha_increment": "[0, inf)",
        "reweight_learning_rate": "[0, inf)",
        "reweight_weight_decay": "[0, inf)",
        "reweight_max_grad_norm": "[0, inf)",
        "weight_temperature": "(0, inf)",
        "reweight_depth": "[1, inf)",
        "reweight_hidden_dim": "[1, inf)",
        "embedding_batch_size": "[1, inf)",
        "embedding_max_length": "[1, inf)",
        "val_batch_size": "[1, inf)",
        "phi_batch_size": "[2, inf)",
    }

    method: str = field(
        default="boost",
        metadata=_help(
            "vanilla, vanilla_synthetic, bilevel (real data, learned "
            "weights) or boost (real + synthetic, learned weights).",
            METHODS,
        ),
    )
    alpha: float = field(
        default=1.0,
        metadata=_help(
            "Penalty alpha of Eq. 2: weight of the train loss in theta's "
            "step (and scale of phi's objective with phi_signal='paper'). Paper: 0 / 1 / 10 / 0.1 by env."
        ),
    )
    alpha_increment: float = field(default=0.0, metadata=_help("Alpha grows by this much after every outer iteration."))
    k_psi: int = field(default=20, metadata=_help("K_psi, optimizer steps on psi per outer iteration. Paper: 20 / 32."))
    k_theta: int = field(default=20, metadata=_help("K_theta, steps on theta per outer iteration. Paper: 20 / 32."))
    k_phi: int = field(default=1, metadata=_help("K_phi, steps on phi per outer iteration. Paper: 1."))
    phi_warmup_steps: int = field(
        default=0,
        metadata=_help(
            "Phi steps on the initial policy before the first outer iteration (counted in max_steps), so theta's "
            "first steps already use learned weights (phi_signal='val_alignment' only). Paper: 0."
        ),
    )
    aux_mode: str = field(
        default="shared_backbone",
        metadata=_help(
            "How psi and theta are stored: one backbone with "
            "separate value heads (appendix G.3) or two LoRA adapters (needs peft_config).",
            AUX_MODES,
        ),
    )
    split_theta_backward: bool = field(
        default=True,
        metadata=_help(
            "Theta micro-steps: L_val's backward, then alpha * L_train's (one graph alive at a time; same gradients)."
        ),
    )
    phi_signal: str = field(
        default="val_alignment",
        metadata=_help(
            "What phi learns from: 'val_alignment' (cosine "
            "of each trajectory's output-layer gradient with the validation gradient, standardised "
            "per batch, with a KL floor), 'adapter_alignment' (the same over theta's LoRA adapter, gradients "
            "centred on the batch mean; needs peft_config) or 'paper' (Algorithm 1: alpha * (l_i(theta) - l_i(psi))).",
            PHI_SIGNALS,
        ),
    )
    weight_temperature: float = field(
        default=1.0,
        metadata=_help(
            "Tau of the KL floor (val_alignment): optimum weights proportional to exp(standardised signal / tau)."
        ),
    )
    embedding_pooling: str = field(
        default="action_mean_nll",
        metadata=_help(
            "Head input from the frozen model: "
            "mean over action tokens plus their mean and max NLL, the same with the mean over every token "
            "added, mean over action tokens, mean over all tokens, or the last token (appendix G.5).",
            EMBEDDING_POOLINGS,
        ),
    )
    reweight_learning_rate: float | None = field(
        default=None,
        metadata=_help("Phi's AdamW learning rate; None = 1e-3 (val_alignment) or learning_rate / 10 (paper)."),
    )
    reweight_weight_decay: float = field(default=0.0, metadata=_help("Phi's AdamW weight decay."))
    reweight_max_grad_norm: float = field(default=1.0, metadata=_help("Gradient clipping of phi (0 = off)."))
    reweight_depth: int = field(
        default=2,
        metadata=_help("Linear layers of the reweighting MLP. Paper: 2 (Twenty Questions, Car Dealer), 4 (WebShop)."),
    )
    reweight_hidden_dim: int = field(
        default=256, metadata=_help("Hidden width of the reweighting MLP (not in the paper).")
    )
    reweight_input_normalization: str = field(
        default="none",
        metadata=_help(
            "Normalise the reweighting head's input with the training set's embedding statistics (saved "
            "with the head): none, center (mean removed, one overall scale) or standardize (per channel). "
            "Not in the paper.",
            INPUT_NORMALIZATIONS,
        ),
    )
    phi_batch_size: int | None = field(
        default=None,
        metadata=_help(
            "Training trajectories per phi micro-step (val_alignment), drawn from the whole training set per "
            "(seed, step); None = the micro-batch the data loader gives. The signal is standardised within it."
        ),
    )
    val_batch_size: int | None = field(
        default=None,
        metadata=_help(
            "Validation trajectories per micro-batch; None = per_device_train_batch_size. Drawn from (seed, step)."
        ),
    )
    embedding_batch_size: int = field(default=8, metadata=_help("Trajectories per forward pass when embedding."))
    embedding_max_length: int | None = field(
        default=None, metadata=_help("Tokens kept (the last ones) when embedding; None = max_length.")
    )
    embedding_cache_dir: str | None = field(
        default=None, metadata=_help("Embedding cache folder (default $HF_HOME/trainers/trajectory_embeddings).")
    )

    def __post_init__(self):
        # choices, finite floats and the ranges above are checked once, by OfflineRLConfig.__post_init__
        if self.method in ("bilevel", "boost"):
            if self.ddp_find_unused_parameters is False:
                raise ValueError(
                    f"method={self.method!r} needs ddp_find_unused_parameters=True under DDP: each phase's backward "
                    "reaches only its own parameter group (psi heads, or theta heads + backbone, or nothing for phi)"
                )
            self.ddp_find_unused_parameters = True
        super().__post_init__()
        if self.phi_batch_size and self.phi_signal == "paper":
            raise ValueError(
                "phi_batch_size needs phi_signal='val_alignment' (the paper's phi step reuses theta's batch)"
            )
        if self.phi_warmup_steps and self.phi_signal == "paper":
            raise ValueError(
                "phi_warmup_steps needs phi_signal='val_alignment': the paper's signal l_i(theta) - l_i(psi) is 0 "
                "before theta and psi have trained"
            )
        if self.phi_signal == "adapter_alignment" and self.deepspeed:
            raise ValueError(
                "phi_signal='adapter_alignment' takes per-trajectory gradients of the LoRA weights, which DeepSpeed "
                "partitions or hooks; use phi_signal='val_alignment' with DeepSpeed"
            )
        if self.reweight_learning_rate is None:
            self.reweight_learning_rate = self.learning_rate / 10.0 if self.phi_signal == "paper" else 1e-3

    @property
    def is_bilevel(self) -> bool:
        return self.method in ("bilevel", "boost")

    @property
    def uses_synthetic(self) -> bool:
        return self.method in SYNTHETIC_METHODS

    @property
    def schedule(self) -> tuple[int, int, int, int]:
        """``(k_psi, k_theta, k_phi, phi_warmup_steps)``: with the step number, all that fixes a step's phase."""
        return self.k_psi, self.k_theta, self.k_phi, self.phi_warmup_steps

    @property
    def outer_length(self) -> int:
        """Optimizer steps per outer iteration: ``k_psi + k_theta + k_phi``."""
        return self.k_psi + self.k_theta + self.k_phi


__all__ = ["AUX_MODES", "BilevelReweightConfig", "EMBEDDING_POOLINGS", "METHODS", "PHI_SIGNALS"]
