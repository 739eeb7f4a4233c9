"""BilevelReweightTrainer: the ``Trainer`` wiring around BOOST's Algorithm 1 (:mod:`trainers.boost.algorithm`).

What this module does, and only this: choose the phase of each optimizer step, build the phase's
inputs (weights, validation batch, :class:`PhaseSpec`), call the phase function, log, step φ's own
optimizer, keep each phase's optimizer groups apart, and save / resume.

Distributed (DDP, DeepSpeed ZeRO-1/2/3): the optimizer's groups are split into θ and ψ groups and
each step steps only the phase's groups, which keeps weights and Adam state of the other groups
untouched also under ZeRO (whose optimizers give them zero gradients instead of none). φ is not
wrapped: its per-rank gradient (softmax over the rank's own micro-batch) is averaged over the ranks
before its step. Under ZeRO the θ ← ψ copy gathers partitioned heads and also updates the
optimizer's fp32 master weights; ``save_model`` writes ψ's heads from the gathered state dict.

Because the phase is a function of the step, resuming from any checkpoint continues exactly: the
checkpoint holds the θ policy (``OfflineRLTrainer``'s layout), ``psi_value_heads/`` (and the ψ
adapter in ``separate_adapters`` mode), ``reweighting_head/``, φ's optimizer state and
``bilevel_state.json`` (:meth:`BilevelReweightTrainer.save_boost_extras` /
:meth:`~BilevelReweightTrainer.load_boost_extras`). Validation batches are drawn from (seed, step).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from torch import nn
from transformers import TrainerCallback

from .. import hardware
from ..data.tokenization import prepare_tokenizer, tokenize_dataset
from ..losses.offline_rl import OfflineRLLossConfig
from ..modeling.policy import ValueHeadPolicy, base_model_name, is_peft_model, unwrap_base
from ..modeling.value_heads import ValueHeads
from ..offline_rl_trainer import MODEL_INPUT_KEYS, OfflineRLTrainer, PolyakCallback, _gathered
from . import algorithm, checkpoint
from .algorithm import PHASE_CODES, PSI_ADAPTER, BilevelPolicy, PhasePosition, PhaseResult, PhaseSpec
from .checkpoint import (  # noqa: F401  (re-exported: the old module's names)
    PHI_OPTIMIZER_FILE,
    PSI_HEADS_SUBFOLDER,
    REWEIGHTING_SUBFOLDER,
    STATE_FILE,
    load_bilevel_artifacts,
)
from .config import BilevelReweightConfig
from .data import check_val, select_rows
from .reweighting_head import ReweightingHead, effective_sample_size
from .trajectory_embeddings import TrajectoryEmbeddingCache, model_fingerprint


@dataclass
class ThetaMicroStep:
    """A θ micro-step whose validation forward and backward ``training_step`` already ran (split backward)."""

    step: int
    micro: int
    val_loss: torch.Tensor


class BilevelCallback(TrainerCallback):
    """Phase bookkeeping around each optimizer step: φ's optimizer step, θ ← ψ, Polyak updates."""

    def __init__(self, trainer: BilevelReweightTrainer):
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self.trainer.phase_at(state.global_step).phase == "phi":
            self.trainer._step_reweighting_head()
        # a ψ step leaves ψ's adapter active until its backward is done; θ is the policy everyone else sees
        self.trainer._activate("theta")
        return control

    def on_step_end(self, args, state, control, **kwargs):
        trainer = self.trainer
        finished = trainer.phase_at(state.global_step - 1).phase
        if trainer.args.loss_type == "ilql" and trainer.args.polyak_rate > 0 and finished != "phi":
            heads = trainer.psi_heads if finished == "psi" else trainer.policy.heads
            with _gathered(list(heads.parameters()), modifier_rank=0):
                heads.polyak_update(trainer.args.polyak_rate)
        upcoming = trainer.phase_at(state.global_step)
        if upcoming.phase == "theta" and upcoming.step_in_phase == 0:  # ψ's phase has just ended
            trainer.sync_theta_from_psi()
        return control


class BilevelReweightTrainer(OfflineRLTrainer):
    """BOOST: offline RL on real (+ synthetic) trajectories reweighted by a bilevel-trained head.

    Args:
        model: as for :class:`OfflineRLTrainer` (id/path, causal LM, PEFT model or ValueHeadPolicy).
        args: :class:`BilevelReweightConfig`.
        train_dataset: real training trajectories (schema rows). Rows with ``source == "synthetic"``
            count as synthetic data.
        val_dataset: real validation trajectories for L_val (required by ``bilevel`` / ``boost``).
        synthetic_dataset: synthetic trajectories (e.g. from
            :class:`trainers.boost.synthetic.SyntheticTrajectoryGenerator`), used by ``vanilla_synthetic``
            / ``boost``; every row counts as synthetic whatever its ``source`` says.
        reweighting_head: an existing :class:`ReweightingHead` (default: a new one, uniform at start).
        embedding_model: the frozen model whose hidden states embed the trajectories (default: the
            policy's base model before training, adapters disabled).
        embeddings: precomputed ``[len(training rows), d]`` embeddings (skips the cache).
        other arguments: as for :class:`OfflineRLTrainer`.
    """

    _tag_names = ["trainers", "offline-rl", "boost", "bilevel"]

    def __init__(
        self,
        model: str | nn.Module,
        args: BilevelReweightConfig | None = None,
        train_dataset: datasets.Dataset | None = None,
        val_dataset: datasets.Dataset | None = None,
        synthetic_dataset: datasets.Dataset | None = None,
        eval_dataset: datasets.Dataset | dict[str, datasets.Dataset] | None = None,
        processing_class=None,
        data_collator=None,
        peft_config=None,
        value_heads: ValueHeads | None = None,
        reweighting_head: ReweightingHead | None = None,
        embedding_model: nn.Module | None = None,
        embeddings: torch.Tensor | None = None,
        eval_env: Any = None,
        rollout_fn: Callable[..., Mapping[str, float]] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers=(None, None),
        **kwargs,
    ):
        if args is None:
            name = model if isinstance(model, str) else type(model).__name__
            args = BilevelReweightConfig(output_dir=f"{str(name).split('/')[-1]}-boost")
        if not isinstance(args, BilevelReweightConfig):
            raise TypeError(f"args must be a BilevelReweightConfig, got {type(args).__name__}")
        if train_dataset is None:
            raise ValueError("train_dataset (real training trajectories) is required")
        if processing_class is None:
            if not isinstance(model, str):
                raise ValueError("processing_class (the tokenizer) is required when model is not a model id/path")
            from ..models import load_tokenizer

            processing_class = load_tokenizer(model)
        processing_class = prepare_tokenizer(processing_class, args.chat_template)

        # ---- data: the rows this method trains on, in a fixed order (real first, then synthetic)
        self.training_rows = select_rows(args, train_dataset, synthetic_dataset)
        self.val_rows = check_val(args, val_dataset)
        tokenized = tokenize_dataset(
            self.training_rows,
            processing_class,
            max_length=args.max_length,
            num_proc=args.dataset_num_proc,
            keep_columns=("id", "source", "weight", "traj_index"),
        )
        self._theta_micro_step: ThetaMicroStep | None = None
        self._micro_position: tuple[int, int] = (-1, -1)  # (optimizer step, micro-step within it)

        # ---- the policy is built by OfflineRLTrainer (seeded there); _extend_policy adds ψ to it
        super().__init__(
            model,
            args=args,
            train_dataset=tokenized,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            data_collator=data_collator,
            peft_config=peft_config,
            value_heads=value_heads,
            eval_env=eval_env,
            rollout_fn=rollout_fn,
            callbacks=callbacks,
            optimizers=optimizers,
            **kwargs,
        )
        self.is_synthetic = torch.tensor([s == "synthetic" for s in self.training_rows["source"]], dtype=torch.bool)
        if not args.is_bilevel:
            self.reweighting_head = None
            self.embeddings = None
            return

        self.val_tokenized = self._prepare_dataset(self.val_rows, processing_class, args, "val")
        self.remove_callback(PolyakCallback)
        self.add_callback(BilevelCallback(self))
        self.loss_config_no_bc = OfflineRLLossConfig.from_any({**vars(self.loss_config), "bc_weight": 0.0})
        self._build_reweighting_head(args, processing_class, reweighting_head, embedding_model, embeddings)

    def _build_reweighting_head(self, args, tokenizer, head, embedding_model, embeddings) -> None:
        """φ: embeddings from the frozen pretrained model, the head and its own optimizer."""
        embed_model = embedding_model if embedding_model is not None else self.policy.base
        embed_id = base_model_name(embed_model) if hasattr(embed_model, "config") or is_peft_model(embed_model) else ""
        embed_id = embed_id or getattr(getattr(embed_model, "config", None), "_name_or_path", "") or "model"
        self.embedding_fingerprint = ""
        self.embedding_dtype: torch.dtype | None = None  # stays None when the caller passes embeddings
        if embeddings is None:
            fingerprint = model_fingerprint(unwrap_base(embed_model))
            # bf16 where the hardware runs it natively, unless the run itself is fp32 (bf16=False)
            self.embedding_dtype = hardware.pick_dtype(
                "embedding", device=next(embed_model.parameters()).device, override=None if args.bf16 else "fp32"
            )
            cache = TrajectoryEmbeddingCache(
                args.embedding_cache_dir,
                batch_size=args.embedding_batch_size,
                max_length=args.embedding_max_length or args.max_length or 1024,
                pooling=args.embedding_pooling,
                dtype=self.embedding_dtype,
            )
            # a model partitioned at load (ZeRO-3 zero.Init) embeds with its full weights, gathered for the pass
            with _gathered(list(embed_model.parameters())):
                embeddings = cache.embed(
                    embed_model, tokenizer, self.training_rows, model_id=embed_id, fingerprint=fingerprint
                )
            self.embedding_fingerprint = fingerprint
        if embeddings.shape[0] != len(self.training_rows):
            raise ValueError(
                f"embeddings have {embeddings.shape[0]} rows but the {args.method} training set has "
                f"{len(self.training_rows)} trajectories"
            )
        self.embeddings = embeddings.float().to(self.policy.device)
        if head is None:
            head = ReweightingHead(
                self.embeddings.shape[1],
                depth=args.reweight_depth,
                hidden_dim=args.reweight_hidden_dim,
                base_model_id=embed_id,
                embedding_fingerprint=self.embedding_fingerprint,
            )
            if args.reweight_input_normalization != "none":
                head.fit_input_normalization(self.embeddings, mode=args.reweight_input_normalization)
        else:
            head.check_compatible(
                base_model_id=embed_id,
                embedding_dim=self.embeddings.shape[1],
                embedding_fingerprint=self.embedding_fingerprint,
            )
        self.reweighting_head = head.float().to(self.policy.device)
        self.reweighting_optimizer = torch.optim.AdamW(
            self.reweighting_head.parameters(), lr=args.reweight_learning_rate, weight_decay=args.reweight_weight_decay
        )

    def _extend_policy(self, policy: ValueHeadPolicy, args: BilevelReweightConfig) -> ValueHeadPolicy:
        """ψ (and its adapter) live inside the policy so the optimizer, DDP / DeepSpeed and checkpoints see them."""
        if args.is_bilevel:
            psi_heads = copy.deepcopy(policy.heads)
            if type(policy) is ValueHeadPolicy:
                # same modules, a forward that runs a whole phase (see BilevelPolicy)
                policy = BilevelPolicy(policy.base, policy.heads, check=False)
            elif not isinstance(policy, BilevelPolicy):
                raise TypeError(f"the bilevel methods need a ValueHeadPolicy, got a {type(policy).__name__}")
            policy.add_module("psi_heads", psi_heads)
            if args.aux_mode == "separate_adapters":
                algorithm.add_psi_adapter(policy)
            if args.method == "boost" and args.phi_signal == "adapter_alignment" and not is_peft_model(policy.base):
                raise ValueError(
                    "phi_signal='adapter_alignment' needs a LoRA adapter on the policy (pass peft_config); "
                    "with full fine-tuning use phi_signal='val_alignment'"
                )
        elif args.aux_mode == "separate_adapters" and not is_peft_model(policy.base):
            raise ValueError("aux_mode='separate_adapters' needs a PEFT model (pass peft_config)")
        self._built_policy = policy
        return policy

    # ------------------------------------------------------------------------------ phases
    def phase_at(self, step: int) -> PhasePosition:
        """``(phase, outer iteration, step within the phase)`` of optimizer step ``step``."""
        return algorithm.phase_at(step, *self.args.schedule)

    def alpha_at(self, step: int) -> float:
        return self.args.alpha + self.args.alpha_increment * self.phase_at(step).outer

    @property
    def policy(self) -> ValueHeadPolicy:
        # the object built in __init__ (what unwrap_model returns); unwrapping on every access costs
        # ~20 ms per call in accelerate, paid several times per inner step
        cached = self.__dict__.get("_built_policy")
        return cached if cached is not None else super().policy

    @property
    def psi_heads(self) -> ValueHeads:
        return self.policy.psi_heads

    def _activate(self, which: str) -> None:
        """Make θ's or ψ's adapter the active one (``separate_adapters`` mode; a no-op otherwise).

        PEFT only lets the active adapter require gradients, so ψ's adapter must stay active until
        the backward pass of a ψ step is over: it is switched back in ``on_optimizer_step``.
        """
        if self.args.is_bilevel and self.args.aux_mode == "separate_adapters":
            self.policy.base.set_adapter(PSI_ADAPTER if which == "psi" else self._theta_adapter_name())

    def _theta_adapter_name(self) -> str:
        return [n for n in self.policy.base.peft_config if n != PSI_ADAPTER][0]

    def _spec(self, phase: str, **extra) -> PhaseSpec:
        adapters = (self._theta_adapter_name(), PSI_ADAPTER) if self.args.aux_mode == "separate_adapters" else None
        return PhaseSpec(phase, self.loss_config, self.loss_config_no_bc, adapters=adapters, **extra)

    def _drawn_batch(self, rows, size: int, step: int, micro: int, salt: int = 0) -> dict[str, torch.Tensor]:
        """``size`` rows of ``rows`` drawn from (seed, step, micro), collated: resuming draws the same."""
        generator = torch.Generator().manual_seed(int(self.args.seed) * 1_000_003 + step * 1009 + micro + salt)
        indices = torch.randperm(len(rows), generator=generator)[: min(size, len(rows))].tolist()
        return self._prepare_inputs(self.data_collator([rows[i] for i in indices]))

    def _val_batch(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        size = self.args.val_batch_size or self.args.per_device_train_batch_size
        batch = self._drawn_batch(self.val_tokenized, size, step, micro)
        return {key: batch[key] for key in MODEL_INPUT_KEYS if key in batch}

    def _micro_step(self, step: int) -> int:
        last_step, last_micro = self._micro_position
        self._micro_position = (step, last_micro + 1 if last_step == step else 0)
        return self._micro_position[1]

    def batch_weights(self, inputs: Mapping[str, torch.Tensor], grad: bool = False) -> torch.Tensor:
        """Softmax weights of the batch's trajectories (φ's graph kept when ``grad``)."""
        if "traj_index" not in inputs:
            raise KeyError(
                "batch has no 'traj_index': the bilevel trainer's collated batches carry the trajectory index"
            )
        index = inputs["traj_index"].to(self.embeddings.device)
        with torch.enable_grad() if grad else torch.no_grad():
            return self.reweighting_head.normalized_weights(self.embeddings[index])

    def training_step(self, model, inputs, num_items_in_batch=None):
        """θ steps run L_val's forward/backward before α·L_train's, so only one graph is alive at a time.

        The gradients add up to those of ``L_val + α·L_train`` in one backward, at the peak memory
        of the larger of the two passes instead of both. Under DDP the validation backward runs in
        ``no_sync`` and the train backward reduces the sum. Under DeepSpeed, whose engine steps inside
        its backward, θ keeps the single combined pass, as it does with ``split_theta_backward=False``.
        """
        step = self.state.global_step
        if (
            not self.args.is_bilevel
            or not self.args.split_theta_backward
            or self.is_deepspeed_enabled
            or self.phase_at(step).phase != "theta"
        ):
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        self._activate("theta")
        micro = self._micro_step(step)
        with self.accelerator.no_sync(model):
            with self.compute_loss_context_manager():
                val_loss = model(**self._val_batch(step, micro), loss_config=self.loss_config)["losses"].mean()
            self.accelerator.backward(val_loss / self.current_gradient_accumulation_steps)
        self._theta_micro_step = ThetaMicroStep(step, micro, val_loss.detach())
        loss = super().training_step(model, inputs, num_items_in_batch)
        return loss + val_loss.detach() / self.current_gradient_accumulation_steps

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        if not self.args.is_bilevel or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        step = self.state.global_step
        position = self.phase_at(step)
        alpha = self.alpha_at(step)
        # a θ micro-step whose validation half training_step ran has been counted there already
        prepared, self._theta_micro_step = self._theta_micro_step, None
        micro = prepared.micro if prepared is not None and prepared.step == step else self._micro_step(step)
        if position.phase == "phi" and self.args.phi_batch_size:
            # the signal is standardised within the batch: a wider one than the θ micro-batch lets φ rank
            salt = 7919 + 104_729 * self.args.process_index  # each process ranks rows of its own
            inputs = self._drawn_batch(self.train_dataset, self.args.phi_batch_size, step, micro, salt)
        batch = {key: inputs[key] for key in MODEL_INPUT_KEYS if key in inputs}
        result = self._run_phase(model, position.phase, batch, inputs, alpha, step, micro, prepared)
        metrics = self._metrics["train"]
        for name, value in {**result.loss_metrics, **result.logs}.items():
            metrics[name].append(float(value))
        self._log_weights(result.weights, inputs)
        metrics["phase"].append(PHASE_CODES[position.phase])
        metrics["outer_iteration"].append(float(position.outer))
        metrics["alpha"].append(alpha)
        mask = inputs.get("attention_mask")
        self._tokens_seen += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
        return (result.loss, {"losses": result.losses}) if return_outputs else result.loss

    def _run_phase(self, model, phase, batch, inputs, alpha, step, micro, prepared) -> PhaseResult:
        """One micro-step of ``phase``: Algorithm 1's phase function with this step's inputs."""
        if phase == "psi":
            self._activate("psi")  # switched back after the optimizer step (see _activate)
            return algorithm.psi_step(model, batch, self.batch_weights(inputs), self._spec("psi"))
        self._activate("theta")
        if phase == "theta":
            if prepared is not None and prepared.step == step:
                return algorithm.theta_step(
                    model, batch, self.batch_weights(inputs), alpha, self._spec("theta"), val_loss=prepared.val_loss
                )
            spec = self._spec("theta", val=self._val_batch(step, micro))
            return algorithm.theta_step(model, batch, self.batch_weights(inputs), alpha, spec)
        # DeepSpeed's ZeRO backward needs at least one gradient of the engine's parameters (ZeRO-1/2 set up
        # their reduction buckets in the first gradient hook), so there φ's loss carries 0 x ψ's losses
        spec = self._spec("phi", anchor=self.is_deepspeed_enabled)
        weights = self.batch_weights(inputs, grad=True)
        if self.args.phi_signal == "paper":
            return algorithm.phi_step_paper(model, batch, weights, alpha, spec)
        return algorithm.phi_step_val_alignment(
            model,
            self.policy,
            batch,
            self._val_batch(step, micro),
            weights,
            self.args.weight_temperature,
            spec,
            gathered=_gathered,
            signal=self.args.phi_signal,
        )

    def _log_weights(self, weights: torch.Tensor, inputs) -> None:
        metrics = self._metrics["train"]
        size = weights.numel()
        metrics["n_eff"].append(effective_sample_size(weights))
        metrics["n_eff_fraction"].append(effective_sample_size(weights) / size)
        synthetic = self.is_synthetic[inputs["traj_index"].cpu()]
        relative = weights.detach().float().cpu() * size
        for name, mask in (("real", ~synthetic), ("synthetic", synthetic)):
            if mask.any():
                metrics[f"weight_mean_{name}"].append(float(relative[mask].mean()))

    # ------------------------------------------------------------------------------ φ's optimizer, θ ← ψ, groups
    def _reduce_reweighting_gradients(self) -> list[torch.Tensor]:
        """Average φ's gradients over the processes (φ is outside DDP / DeepSpeed); returns the parameters with one.

        Each process's φ objective uses the softmax over its own micro-batch (see
        :class:`BilevelReweightConfig`), so the average is the gradient of the mean per-rank objective,
        the same as one process accumulating the ranks' micro-batches.
        """
        parameters = [p for p in self.reweighting_head.parameters() if p.grad is not None]
        if parameters and torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            for p in parameters:
                torch.distributed.all_reduce(p.grad)
                p.grad /= world
        return parameters

    def _step_reweighting_head(self) -> None:
        parameters = self._reduce_reweighting_gradients()
        if not parameters:
            return
        if self.args.reweight_max_grad_norm and self.args.reweight_max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(parameters, self.args.reweight_max_grad_norm)
            self._metrics["train"]["phi_grad_norm"].append(float(norm))
        self.reweighting_optimizer.step()
        self.reweighting_optimizer.zero_grad(set_to_none=True)

    def sync_theta_from_psi(self) -> None:
        """θ ← ψ (:func:`trainers.boost.algorithm.copy_psi_to_theta`)."""
        adapters = self.args.aux_mode == "separate_adapters"
        algorithm.copy_psi_to_theta(
            self.policy,
            theta_adapter=self._theta_adapter_name() if adapters else None,
            deepspeed=self.is_deepspeed_enabled and getattr(self, "deepspeed", None) is not None,
            gathered=_gathered,
        )

    def create_optimizer(self, model=None):
        if self.args.is_bilevel and self.args.aux_mode == "separate_adapters":
            # both adapters must be in the optimizer although PEFT marks only the active one trainable
            for name, parameter in self.policy.base.named_parameters():
                if "lora_" in name:
                    parameter.requires_grad_(True)
            try:
                optimizer = super().create_optimizer(model)
            finally:
                self.policy.base.set_adapter(self._theta_adapter_name())
        else:
            optimizer = super().create_optimizer(model)
        if self.args.is_bilevel and not getattr(optimizer, "_bilevel_groups", False):
            self._split_phase_groups(optimizer)
        return optimizer

    def _split_phase_groups(self, optimizer) -> None:
        """Split every optimizer group into a θ and a ψ group; each step only steps the phase's groups.

        Single-process and DDP leave the gradients of parameters outside the phase's graph undefined,
        so AdamW skips them. DeepSpeed's ZeRO optimizers fill them with zeros and step their flat
        partitions, which would move those weights through Adam's moments and advance their Adam
        state during other phases. So a step pre-hook on the torch optimizer hides the groups outside
        the phase (the φ phase hides all of them) and a post-hook puts them back: their weights and
        Adam state stay exactly as they were, under every backend.
        """
        psi_ids = {id(p) for p in self.policy.psi_heads.parameters()}
        if self.args.aux_mode == "separate_adapters":
            psi_ids |= {id(p) for n, p in self.policy.base.named_parameters() if f".{PSI_ADAPTER}." in n}
        groups = []
        for group in optimizer.param_groups:
            for which in ("theta", "psi"):
                params = [p for p in group["params"] if (id(p) in psi_ids) == (which == "psi")]
                if params:
                    groups.append({**group, "params": params, "bilevel_group": which})
        optimizer.param_groups[:] = groups
        hidden: list[list] = []

        def hide_inactive(opt, args, kwargs):
            phase = self.phase_at(self.state.global_step).phase
            hidden.append(opt.param_groups)
            opt.param_groups = [g for g in opt.param_groups if g.get("bilevel_group", phase) == phase]

        def restore(opt, args, kwargs):
            opt.param_groups = hidden.pop()

        optimizer.register_step_pre_hook(hide_inactive)
        optimizer.register_step_post_hook(restore)
        optimizer._bilevel_groups = True

    # ------------------------------------------------------------------------------ weights
    @torch.no_grad()
    def trajectory_weights(self) -> datasets.Dataset:
        """Final weights of every training trajectory: ``id, source, weight, relative_change``.

        ``weight`` is the softmax over the whole training set times its size (mean 1, uniform = 1),
        which is the expected minibatch weight relative to uniform; ``relative_change = weight - 1``.
        """
        if self.reweighting_head is None:
            raise ValueError(f"method={self.args.method!r} does not learn weights (use 'bilevel' or 'boost')")
        from .weight_analysis import weights_dataset

        return weights_dataset(
            self.reweighting_head, self.embeddings, self.training_rows["id"], self.training_rows["source"]
        )

    def bilevel_state(self) -> dict[str, Any]:
        step = self.state.global_step
        position = self.phase_at(step)
        return {
            "method": self.args.method,
            "aux_mode": self.args.aux_mode,
            "phi_signal": self.args.phi_signal,
            "global_step": step,
            "next_phase": position.phase,
            "outer_iteration": position.outer,
            "step_in_phase": position.step_in_phase,
            "alpha": self.alpha_at(step),
            "k_psi": self.args.k_psi,
            "k_theta": self.args.k_theta,
            "k_phi": self.args.k_phi,
            "phi_warmup_steps": self.args.phi_warmup_steps,
            "training_trajectories": len(self.training_rows),
            "synthetic_trajectories": int(self.is_synthetic.sum()),
        }

    # ------------------------------------------------------------------------------ saving / resuming
    def _save_extra_artifacts(self, output_dir: str, state_dict: dict | None = None) -> None:
        # runs inside OfflineRLTrainer's save, before its completeness marker is written
        if self.args.is_bilevel:
            self.save_boost_extras(output_dir, state_dict)

    def _save_checkpoint_extras(self, checkpoint_dir: str) -> None:
        # runs inside the staged checkpoint folder, before it is renamed into place
        if self.args.is_bilevel and self.args.should_save:
            self.save_reweighting_optimizer(checkpoint_dir)

    def save_boost_extras(self, output_dir: str | os.PathLike, state_dict: dict | None = None) -> None:
        """ψ's heads, the reweighting head and ``bilevel_state.json`` (see :mod:`trainers.boost.checkpoint`)."""
        checkpoint.save_boost_extras(self, output_dir, state_dict)

    def save_reweighting_optimizer(self, folder: str | os.PathLike) -> None:
        """φ's optimizer state into a checkpoint folder (:mod:`trainers.boost.checkpoint`)."""
        checkpoint.save_reweighting_optimizer(self, folder)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.args.is_bilevel:
            self.load_boost_extras(resume_from_checkpoint)

    def load_boost_extras(self, folder: str | os.PathLike) -> None:
        """Restore ψ, φ and φ's optimizer; refuse another schedule (see :mod:`trainers.boost.checkpoint`)."""
        checkpoint.load_boost_extras(self, folder)


__all__ = ["BilevelCallback", "BilevelPolicy", "BilevelReweightTrainer", "load_bilevel_artifacts"]
