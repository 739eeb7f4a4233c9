"""Configuration of :class:`trainers.BilevelReweightTrainer` (BOOST, Algorithm 1)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .offline_rl_config import OfflineRLConfig

METHODS = ("vanilla", "vanilla_synthetic", "bilevel", "boost")
AUX_MODES = ("shared_backbone", "separate_adapters")


@dataclass
class BilevelReweightConfig(OfflineRLConfig):
    r"""Arguments of :class:`trainers.BilevelReweightTrainer`; every :class:`OfflineRLConfig` field applies too.

    One optimizer step of the ``Trainer`` is one inner step of Algorithm 1. An outer iteration is
    ``k_psi + k_theta + k_phi`` optimizer steps: ``k_psi`` steps on the auxiliary policy ψ, the copy
    θ ← ψ, ``k_theta`` steps on the primary policy θ, ``k_phi`` steps on the reweighting head φ. So
    ``max_steps`` counts inner steps, and checkpoints can fall anywhere inside an outer iteration.

    BOOST appendix D (table 2) per environment / algorithm, all with lr 1e-4, CQL weight 10, K_φ = 1,
    train-category fraction 0.6, validation split 0.3:

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

    K_θ = K_ψ = 20 for Twenty Questions, 32 for Car Dealer and WebShop. Reweighting head depth
    (appendix G.4): 2 for Twenty Questions and Car Dealer, 4 for WebShop.

    Method
        method (`str`, default ``"boost"``): one switch for the four methods of table 1:
            ``"vanilla"`` (real data, uniform weights: exactly :class:`OfflineRLTrainer`),
            ``"vanilla_synthetic"`` (real + synthetic, uniform), ``"bilevel"`` (real data, learned
            weights), ``"boost"`` (real + synthetic, learned weights). Synthetic data is required by
            ``vanilla_synthetic`` / ``boost``, validation data by ``bilevel`` / ``boost``.
        alpha (`float`, default ``1.0``): penalty α of the minimax objective (Eq. 2). Paper: 0 / 1 / 10
            / 1 / 0.1 / 0.1 (table above, listed as "α (init)").
        alpha_increment (`float`, default ``0.0``): α grows by this much after every outer iteration
            (F2SA grows its penalty; BOOST only states the initial value). With α = 0 and no increment
            φ receives no gradient (its objective's φ-dependent part is α-scaled).
        k_psi (`int`, default ``20``): K_ψ, optimizer steps on ψ per outer iteration. Paper: 20 / 32.
        k_theta (`int`, default ``20``): K_θ, steps on θ per outer iteration. Paper: 20 / 32.
        k_phi (`int`, default ``1``): K_φ, steps on φ per outer iteration. Paper: 1.
        aux_mode (`str`, default ``"shared_backbone"``): how ψ and θ are stored.
            ``"shared_backbone"`` (BOOST appendix G.3, memory-efficient): one backbone, separate value
            heads. The ψ phase updates the ψ value heads only (the backbone runs without gradient);
            the θ phase updates the θ value heads and the backbone (all of it, or its LoRA adapter)
            and the LM head's behaviour-cloning term; the φ phase updates φ only. ``θ ← ψ`` copies the
            ψ heads into the θ heads. ``"separate_adapters"``: one frozen base with two LoRA adapters
            (PEFT multi-adapter, ``set_adapter``); the ψ phase updates the ψ adapter + ψ heads, the θ
            phase the θ adapter + θ heads, ``θ ← ψ`` copies adapter and heads. Needs ``peft_config``.
        split_theta_backward (`bool`, default ``True``): each θ micro-step runs L_val's forward and
            backward, then α·L_train's, so only one pass's activations are alive at a time (same
            gradients as one backward of the sum; under DDP the first runs in ``no_sync``). ``False``
            runs both in one forward and one backward (about the activation memory of both batches);
            DeepSpeed always uses the single pass, because its engine steps inside its backward.

    Reweighting head φ
        reweight_learning_rate (`float` or `None`, default ``None``): φ's own AdamW learning rate;
            ``None`` = ``learning_rate / 10`` (paper: up to an order of magnitude below the policy's).
        reweight_weight_decay (`float`, default ``0.0``): φ's AdamW weight decay.
        reweight_max_grad_norm (`float`, default ``1.0``): gradient clipping of φ (0 = off).
        reweight_depth (`int`, default ``2``): linear layers of the MLP. Paper: 2 (20Q, Car Dealer), 4 (WebShop).
        reweight_hidden_dim (`int`, default ``256``): hidden width (not stated in the paper).

    Data
        val_batch_size (`int` or `None`, default ``None``): validation trajectories per micro-batch for
            L_val; ``None`` = ``per_device_train_batch_size``. Drawn deterministically from (seed, step),
            so resuming reproduces them.
        embedding_batch_size (`int`, default ``8``): trajectories per forward pass when embedding.
        embedding_max_length (`int` or `None`, default ``None``): tokens kept (the last ones) when
            embedding; ``None`` = ``max_length``.
        embedding_cache_dir (`str` or `None`, default ``None``): embedding cache folder (default
            ``$HF_HOME/trainers/trajectory_embeddings``); shared by every method and run.

    Distributed training (DDP, DeepSpeed ZeRO-1/2/3)
        The reweighting softmax is normalised per process: each rank's weights are the softmax over
        its own micro-batch (as in one process, where each micro-batch of a gradient-accumulation
        step has its own softmax), and φ's gradient is averaged over the ranks before φ's optimizer
        steps. Two ranks holding two trajectories each therefore give exactly the φ gradient of one
        process accumulating the same two micro-batches (not that of one softmax over all four).
        Each phase updates only its own parameter group on every backend: DDP runs with
        ``ddp_find_unused_parameters=True`` (set here for the bilevel methods; ``False`` is
        rejected) so the groups outside the phase keep undefined gradients; under DeepSpeed, whose
        ZeRO optimizers see zeros for them, the optimizer step skips their parameter groups. This
        is not TRL's or the paper's setting: BOOST was trained on one device.
    """

    method: str = field(default="boost", metadata={"help": "vanilla | vanilla_synthetic | bilevel | boost."})
    alpha: float = field(default=1.0, metadata={"help": "Penalty alpha (paper: 0, 1, 10, 0.1 by env)."})
    alpha_increment: float = field(default=0.0, metadata={"help": "Alpha growth per outer iteration."})
    k_psi: int = field(default=20, metadata={"help": "Steps on psi per outer iteration (paper 20 / 32)."})
    k_theta: int = field(default=20, metadata={"help": "Steps on theta per outer iteration (paper 20 / 32)."})
    k_phi: int = field(default=1, metadata={"help": "Steps on phi per outer iteration (paper 1)."})
    aux_mode: str = field(default="shared_backbone", metadata={"help": "shared_backbone | separate_adapters."})
    split_theta_backward: bool = field(default=True, metadata={"help": "Theta steps: L_val backward, then L_train backward."})
    reweight_learning_rate: float | None = field(default=None, metadata={"help": "phi lr (None = lr / 10)."})
    reweight_weight_decay: float = field(default=0.0, metadata={"help": "phi weight decay."})
    reweight_max_grad_norm: float = field(default=1.0, metadata={"help": "phi gradient clipping (0 = off)."})
    reweight_depth: int = field(default=2, metadata={"help": "MLP depth (paper 2; 4 on WebShop)."})
    reweight_hidden_dim: int = field(default=256, metadata={"help": "MLP hidden width."})
    val_batch_size: int | None = field(default=None, metadata={"help": "Validation batch (None = train batch)."})
    embedding_batch_size: int = field(default=8, metadata={"help": "Trajectories per embedding forward."})
    embedding_max_length: int | None = field(default=None, metadata={"help": "Embedding token budget (None = max_length)."})
    embedding_cache_dir: str | None = field(default=None, metadata={"help": "Embedding cache folder."})

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.aux_mode not in AUX_MODES:
            raise ValueError(f"aux_mode must be one of {', '.join(AUX_MODES)}, got {self.aux_mode!r}")
        for name in ("k_psi", "k_theta", "k_phi"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (Algorithm 1 runs every phase each outer iteration), got {getattr(self, name)}")
        if self.alpha < 0 or self.alpha_increment < 0:
            raise ValueError(f"alpha and alpha_increment must be >= 0, got {self.alpha} and {self.alpha_increment}")
        if self.reweight_depth < 1:
            raise ValueError(f"reweight_depth must be >= 1, got {self.reweight_depth}")
        if self.method in ("bilevel", "boost"):
            if self.ddp_find_unused_parameters is False:
                raise ValueError(
                    f"method={self.method!r} needs ddp_find_unused_parameters=True under DDP: each phase's backward "
                    "reaches only its own parameter group (psi heads, or theta heads + backbone, or nothing for phi)"
                )
            self.ddp_find_unused_parameters = True
        super().__post_init__()
        if self.reweight_learning_rate is None:
            self.reweight_learning_rate = self.learning_rate / 10.0

    @property
    def is_bilevel(self) -> bool:
        return self.method in ("bilevel", "boost")

    @property
    def uses_synthetic(self) -> bool:
        return self.method in ("vanilla_synthetic", "boost")

    @property
    def outer_length(self) -> int:
        """Optimizer steps per outer iteration: ``k_psi + k_theta + k_phi``."""
        return self.k_psi + self.k_theta + self.k_phi


__all__ = ["AUX_MODES", "BilevelReweightConfig", "METHODS"]
