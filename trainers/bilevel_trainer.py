"""BilevelReweightTrainer: BOOST (Algorithm 1) on top of :class:`trainers.OfflineRLTrainer`.

Three parameter groups, one updated at a time (BOOST section 3.3):

* θ, the primary policy: the :class:`ValueHeadPolicy`'s backbone (or LoRA adapter) and value heads;
* ψ, the auxiliary policy: a second set of value heads on the same backbone (``aux_mode=
  "shared_backbone"``, appendix G.3) or a second LoRA adapter plus heads (``"separate_adapters"``);
* φ, the reweighting head: an MLP over cached embeddings of each trajectory from the frozen base
  model, whose softmax over the minibatch weights the per-trajectory offline RL losses.

Every ``Trainer`` optimizer step is one inner step; the step number fixes the phase::

    outer n = step // L,  r = step % L,  L = k_psi + k_theta + k_phi
    r <  k_psi             psi   step: psi   -= lr * grad  sum_i w_i l_i(psi)                 (w fixed)
    (after the last psi step)        theta <- psi
    r <  k_psi + k_theta   theta step: theta -= lr * grad [L_val(theta) + alpha * sum_i w_i l_i(theta)]
    otherwise              phi   step: phi   -= lr_phi * alpha * sum_i grad_phi w_i * (l_i(theta) - l_i(psi))

In the φ step the per-trajectory losses are computed without gradient; L_val(θ) does not depend on
φ, so only the α-term reaches φ, through the softmax weights. φ has its own AdamW (learning rate
``reweight_learning_rate``, default 10x below the policy's) stepped right after the main optimizer
step, which has nothing to update in that phase. Parameters outside the active group receive no
gradient, so AdamW leaves them bit-identical.

Distributed (DDP, DeepSpeed ZeRO-1/2/3): every micro-step is one call of the wrapped model whose
forward runs the whole phase (:class:`BilevelPolicy`), so DDP (with ``find_unused_parameters``) and
ZeRO see exactly the graph the backward walks. The optimizer's groups are split into θ and ψ groups
and each step steps only the phase's groups, which keeps weights and Adam state of the other groups
untouched also under ZeRO (whose optimizers give them zero gradients instead of none). φ is not
wrapped: its per-rank gradient (softmax over the rank's own micro-batch) is averaged over the ranks
before its step. Under ZeRO the θ ← ψ copy gathers partitioned heads and also updates the
optimizer's fp32 master weights; ``save_model`` writes ψ's heads from the gathered state dict.

Because the phase is a function of the step, resuming from any checkpoint continues exactly: the
checkpoint holds the θ policy (``OfflineRLTrainer``'s layout), ``psi_value_heads/`` (and the ψ
adapter in ``separate_adapters`` mode), ``reweighting_head/``, φ's optimizer state and
``bilevel_state.json`` (phase, outer iteration, step within the phase, α). The Trainer's own RNG and
data-order restoration does the rest; validation batches are drawn from (seed, step).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import datasets
import torch
from torch import nn
from transformers import TrainerCallback

from .bilevel_config import BilevelReweightConfig
from .data.schema import TRAJECTORY_FEATURES
from .data.splits import check_synthetic_parents
from .data.tokenization import prepare_tokenizer, tokenize_dataset
from .embedding_cache import TrajectoryEmbeddingCache, model_fingerprint
from .losses.offline_rl import OfflineRLLossConfig, per_trajectory_losses
from .modeling.policy import ValueHeadPolicy, base_model_name, is_peft_model, unwrap_base
from .boost.alignment import alignment_objective, validation_alignment
from .modeling.reweighting_head import ReweightingHead, effective_sample_size
from .modeling.value_heads import ValueHeads
from .offline_rl_trainer import MODEL_INPUT_KEYS, OfflineRLTrainer, PolyakCallback, _gathered

PSI_HEADS_SUBFOLDER = "psi_value_heads"
REWEIGHTING_SUBFOLDER = "reweighting_head"
STATE_FILE = "bilevel_state.json"
PHI_OPTIMIZER_FILE = "reweighting_optimizer.pt"
PSI_ADAPTER = "psi"


class BilevelPolicy(ValueHeadPolicy):
    """A :class:`ValueHeadPolicy` (with ψ heads in ``aux_heads``) whose forward can run a whole BOOST phase.

    ``forward(**batch, bilevel=spec)`` with ``spec = {"phase", "loss_config", "no_bc", "val",
    "adapters"}`` returns the phase's per-trajectory losses:

    * ``psi``: ψ's losses; with a shared backbone the backbone runs without gradient, so only the ψ
      heads are in the graph;
    * ``theta``: θ's losses on the batch and, when ``spec["val"]`` is given, ``val_losses`` on that
      validation batch (two backbone passes in one forward: the DeepSpeed path, see
      :meth:`BilevelReweightTrainer.training_step`);
    * ``phi``: θ's and ψ's losses (``losses``, ``psi_losses``), meant to run under ``no_grad``.

    Each trainer micro-step is one call through the DDP / DeepSpeed wrapper, so the wrapper's
    gradient bookkeeping (DDP's unused-parameter search, ZeRO's hooks and gathering) covers every
    pass whose graph the backward walks. Without ``bilevel`` it is the plain policy forward. Same
    state dict and saved layout as :class:`ValueHeadPolicy`.
    """

    def forward(self, input_ids, attention_mask=None, *, bilevel: Mapping[str, Any] | None = None, **batch):
        if bilevel is None:
            return super().forward(input_ids, attention_mask, **batch)
        phase, config, no_bc = bilevel["phase"], bilevel["loss_config"], bilevel["no_bc"]
        adapters = bilevel.get("adapters")
        plain = super().forward
        if phase == "psi":
            if adapters is None:
                with torch.no_grad():
                    hidden = self.hidden_states(input_ids, attention_mask)
                losses, metrics = per_trajectory_losses(hidden, self.aux_heads, _full(input_ids, attention_mask, batch), no_bc)
                return {"losses": losses, "metrics": metrics}
            # ψ's adapter was made active by the trainer (PEFT lets only the active adapter train)
            return plain(input_ids, attention_mask, heads=self.aux_heads, loss_config=config, **batch)
        if phase == "theta":
            output = plain(input_ids, attention_mask, loss_config=config, **batch)
            if "val" in bilevel:
                output["val_losses"] = plain(loss_config=config, **bilevel["val"])["losses"]
            return output
        if phase != "phi":
            raise ValueError(f"unknown bilevel phase {phase!r}")
        # ``anchor``: ψ's losses keep their graph and come back as 0 x their sum, for DeepSpeed (see compute_loss)
        psi_grad = torch.enable_grad() if bilevel.get("anchor") else torch.no_grad()
        if adapters is None:
            with torch.no_grad():
                hidden = self.hidden_states(input_ids, attention_mask)
                full = _full(input_ids, attention_mask, batch)
                # the behaviour-cloning term is the same for θ and ψ here (shared LM head): it cancels
                theta_losses, metrics = per_trajectory_losses(hidden, self.heads, full, no_bc)
            with psi_grad:
                psi_losses, _ = per_trajectory_losses(hidden, self.aux_heads, full, no_bc)
        else:
            theta_name, psi_name = adapters
            with torch.no_grad():
                output = plain(input_ids, attention_mask, loss_config=config, **batch)
            theta_losses, metrics = output["losses"], output["metrics"]
            self.base.set_adapter(psi_name)
            try:
                with psi_grad:
                    psi_losses = plain(input_ids, attention_mask, heads=self.aux_heads, loss_config=config, **batch)["losses"]
            finally:
                self.base.set_adapter(theta_name)
        output = {"losses": theta_losses, "psi_losses": psi_losses.detach(), "metrics": metrics}
        if bilevel.get("anchor"):
            output["anchor"] = 0.0 * psi_losses.sum()
        return output


def _full(input_ids, attention_mask, batch) -> dict[str, torch.Tensor]:
    full = {"input_ids": input_ids, **batch}
    if attention_mask is not None:
        full["attention_mask"] = attention_mask
    return full


class BilevelCallback(TrainerCallback):
    """Phase bookkeeping around each optimizer step: φ's optimizer step, θ ← ψ, Polyak updates."""

    def __init__(self, trainer: "BilevelReweightTrainer"):
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self.trainer.phase_at(state.global_step)[0] == "phi":
            self.trainer._step_reweighting_head()
        # a ψ step leaves ψ's adapter active until its backward is done; θ is the policy everyone else sees
        self.trainer._activate("theta")
        return control

    def on_step_end(self, args, state, control, **kwargs):
        trainer = self.trainer
        finished, _, _ = trainer.phase_at(state.global_step - 1)
        if trainer.args.loss_type == "ilql" and trainer.args.polyak_rate > 0 and finished != "phi":
            heads = trainer.psi_heads if finished == "psi" else trainer.policy.heads
            with _gathered(list(heads.parameters()), modifier_rank=0):
                heads.polyak_update(trainer.args.polyak_rate)
        if state.global_step % trainer.args.outer_length == trainer.args.k_psi:
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
        synthetic_dataset: synthetic trajectories (e.g. from :class:`trainers.synthetic.SyntheticTrajectoryGenerator`),
            used by ``vanilla_synthetic`` / ``boost``.
        reweighting_head: an existing :class:`ReweightingHead` (default: a new one, uniform at start).
        embedding_model: the frozen model whose last-token hidden states embed the trajectories
            (default: the policy's base model before training, adapters disabled).
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
            from .models import load_tokenizer

            processing_class = load_tokenizer(model)
        processing_class = prepare_tokenizer(processing_class, args.chat_template)

        # ---- data: the rows this method trains on, in a fixed order (real first, then synthetic)
        self.training_rows = self._select_rows(args, train_dataset, synthetic_dataset)
        self.val_rows = self._check_val(args, val_dataset)
        tokenized = tokenize_dataset(
            self.training_rows, processing_class, max_length=args.max_length, num_proc=args.dataset_num_proc,
            keep_columns=("id", "source", "weight", "traj_index"),
        )

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

        # ---- φ: embeddings from the frozen pretrained model, the head and its own optimizer
        embed_model = embedding_model if embedding_model is not None else self.policy.base
        embed_id = base_model_name(embed_model) if hasattr(embed_model, "config") or is_peft_model(embed_model) else ""
        embed_id = embed_id or getattr(getattr(embed_model, "config", None), "_name_or_path", "") or "model"
        if embeddings is None:
            fingerprint = model_fingerprint(unwrap_base(embed_model))
            cache = TrajectoryEmbeddingCache(
                args.embedding_cache_dir, batch_size=args.embedding_batch_size,
                max_length=args.embedding_max_length or args.max_length or 1024, pooling=args.embedding_pooling,
            )
            # a model partitioned at load (ZeRO-3 zero.Init) embeds with its full weights, gathered for the pass
            with _gathered(list(embed_model.parameters())):
                embeddings = cache.embed(embed_model, processing_class, self.training_rows, model_id=embed_id, fingerprint=fingerprint)
            self.embedding_fingerprint = fingerprint
        else:
            self.embedding_fingerprint = ""
        if embeddings.shape[0] != len(self.training_rows):
            raise ValueError(
                f"embeddings have {embeddings.shape[0]} rows but the {args.method} training set has {len(self.training_rows)} trajectories"
            )
        self.embeddings = embeddings.float().to(self.policy.device)
        if reweighting_head is None:
            reweighting_head = ReweightingHead(
                self.embeddings.shape[1], depth=args.reweight_depth, hidden_dim=args.reweight_hidden_dim,
                base_model_id=embed_id, embedding_fingerprint=self.embedding_fingerprint,
            )
        else:
            reweighting_head.check_compatible(
                base_model_id=embed_id, embedding_dim=self.embeddings.shape[1], embedding_fingerprint=self.embedding_fingerprint
            )
        self.reweighting_head = reweighting_head.float().to(self.policy.device)
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
            policy.add_module("aux_heads", psi_heads)
            if args.aux_mode == "separate_adapters":
                _add_psi_adapter(policy)
        elif args.aux_mode == "separate_adapters" and not is_peft_model(policy.base):
            raise ValueError("aux_mode='separate_adapters' needs a PEFT model (pass peft_config)")
        self._built_policy = policy
        return policy

    # ------------------------------------------------------------------------------ data
    @staticmethod
    def _schema_only(dataset: datasets.Dataset, what: str) -> datasets.Dataset:
        if "messages" not in dataset.column_names or "rewards" not in dataset.column_names:
            raise ValueError(
                f"{what} has columns {sorted(dataset.column_names)}: BilevelReweightTrainer needs trajectory rows "
                "('messages', 'rewards', ...) to embed them"
            )
        extra = [c for c in dataset.column_names if c not in TRAJECTORY_FEATURES and c != "weight"]
        dataset = dataset.remove_columns(extra)
        for column, default in (("source", "real"), ("id", None), ("task_id", ""), ("category", ""), ("done", True), ("success", False), ("metadata", "{}")):
            if column not in dataset.column_names:
                values = [f"{what}-{i}" for i in range(len(dataset))] if column == "id" else [default] * len(dataset)
                dataset = dataset.add_column(column, values)
        return dataset.cast(TRAJECTORY_FEATURES if "weight" not in dataset.column_names else datasets.Features({**TRAJECTORY_FEATURES, "weight": datasets.Value("float32")}))

    @classmethod
    def _select_rows(cls, args: BilevelReweightConfig, train_dataset, synthetic_dataset) -> datasets.Dataset:
        train = cls._schema_only(train_dataset, "train_dataset")
        real = train.filter(lambda s: s != "synthetic", input_columns="source")
        synthetic = train.filter(lambda s: s == "synthetic", input_columns="source")
        if synthetic_dataset is not None:
            extra = cls._schema_only(synthetic_dataset, "synthetic_dataset")
            if any(source != "synthetic" for source in extra["source"]):
                # rows passed as synthetic_dataset are synthetic whatever their source says: the label drives
                # is_synthetic, trajectory_weights(), the per-source logs and bilevel_state()
                extra = extra.map(lambda _: {"source": "synthetic"}, input_columns="source")
            if "weight" in real.column_names and "weight" not in extra.column_names:
                extra = extra.add_column("weight", [1.0] * len(extra)).cast(real.features)
            synthetic = datasets.concatenate_datasets([synthetic, extra]) if len(synthetic) else extra
        if len(real) == 0:
            raise ValueError("train_dataset holds no real trajectories (every row has source='synthetic')")
        if args.uses_synthetic:
            if synthetic_dataset is None and len(synthetic) == 0:
                raise ValueError(
                    f"method={args.method!r} trains on real + synthetic data but no synthetic trajectories were given: "
                    "pass synthetic_dataset (see trainers.synthetic) or use method='vanilla' / 'bilevel'"
                )
            if len(synthetic) == 0:
                raise ValueError(f"method={args.method!r}: synthetic_dataset is empty")
            synthetic = synthetic.cast(real.features)
            # synthetic rows seeded from validation / evaluation trajectories would leak held-out data
            check_synthetic_parents(real, synthetic)
            rows = datasets.concatenate_datasets([real, synthetic])
        else:
            rows = real
        return rows.add_column("traj_index", list(range(len(rows))))

    @classmethod
    def _check_val(cls, args: BilevelReweightConfig, val_dataset) -> datasets.Dataset | None:
        if not args.is_bilevel:
            return None
        if val_dataset is None or len(val_dataset) == 0:
            raise ValueError(
                f"method={args.method!r} learns trajectory weights against real validation trajectories, but "
                "val_dataset is " + ("missing" if val_dataset is None else "empty") + ": pass val_dataset "
                "(e.g. the 'val' split of trainers.data category splits) or use method='vanilla' / 'vanilla_synthetic'"
            )
        val = cls._schema_only(val_dataset, "val_dataset")
        for index, source in enumerate(val["source"]):
            if source == "synthetic":
                raise ValueError(
                    f"val_dataset row {index} (id={val[index]['id']!r}), field 'source': validation must use real "
                    "trajectories only, got a synthetic one"
                )
        return val

    def _val_batch(self, step: int, micro: int) -> dict[str, torch.Tensor]:
        n = len(self.val_tokenized)
        size = min(self.args.val_batch_size or self.args.per_device_train_batch_size, n)
        generator = torch.Generator().manual_seed(int(self.args.seed) * 1_000_003 + step * 1009 + micro)
        indices = torch.randperm(n, generator=generator)[:size].tolist()
        batch = self.data_collator([self.val_tokenized[i] for i in indices])
        return self._prepare_inputs(batch)

    # ------------------------------------------------------------------------------ phases
    def phase_at(self, step: int) -> tuple[str, int, int]:
        """``(phase, outer iteration, step within the phase)`` of optimizer step ``step``."""
        args = self.args
        outer, r = divmod(step, args.outer_length)
        if r < args.k_psi:
            return "psi", outer, r
        if r < args.k_psi + args.k_theta:
            return "theta", outer, r - args.k_psi
        return "phi", outer, r - args.k_psi - args.k_theta

    def alpha_at(self, step: int) -> float:
        return self.args.alpha + self.args.alpha_increment * self.phase_at(step)[1]

    @property
    def policy(self) -> ValueHeadPolicy:
        # the object built in __init__ (what unwrap_model returns); unwrapping on every access costs
        # ~20 ms per call in accelerate, paid several times per inner step
        cached = self.__dict__.get("_built_policy")
        return cached if cached is not None else super().policy

    @property
    def psi_heads(self) -> ValueHeads:
        return self.policy.aux_heads

    def _activate(self, which: str) -> None:
        """Make θ's or ψ's adapter the active one (``separate_adapters`` mode; a no-op otherwise).

        PEFT only lets the active adapter require gradients, so ψ's adapter must stay active until
        the backward pass of a ψ step is over: it is switched back in ``on_optimizer_step``.
        """
        if self.args.is_bilevel and self.args.aux_mode == "separate_adapters":
            self.policy.base.set_adapter(PSI_ADAPTER if which == "psi" else self._theta_adapter_name())

    def _theta_adapter_name(self) -> str:
        names = [n for n in self.policy.base.peft_config if n != PSI_ADAPTER]
        return names[0]

    def batch_weights(self, inputs: Mapping[str, torch.Tensor], grad: bool = False) -> torch.Tensor:
        """Softmax weights of the batch's trajectories (φ's graph kept when ``grad``)."""
        if "traj_index" not in inputs:
            raise KeyError("batch has no 'traj_index': the bilevel trainer's collated batches carry the trajectory index")
        index = inputs["traj_index"].to(self.embeddings.device)
        with torch.enable_grad() if grad else torch.no_grad():
            return self.reweighting_head.normalized_weights(self.embeddings[index])

    def _log_weights(self, weights: torch.Tensor, inputs) -> None:
        metrics = self._metrics["train"]
        size = weights.numel()
        metrics["n_eff"].append(effective_sample_size(weights))
        metrics["n_eff_fraction"].append(effective_sample_size(weights) / size)
        synthetic = self.is_synthetic[inputs["traj_index"].cpu()]
        relative = (weights.detach().float().cpu() * size)
        for name, mask in (("real", ~synthetic), ("synthetic", synthetic)):
            if mask.any():
                metrics[f"weight_mean_{name}"].append(float(relative[mask].mean()))

    def training_step(self, model, inputs, num_items_in_batch=None):
        """θ steps run L_val's forward/backward before α·L_train's, so only one graph is alive at a time.

        The gradients add up to those of ``L_val + α·L_train`` in one backward, at the peak memory
        of the larger of the two passes instead of both. Under DDP the validation backward runs in
        ``no_sync`` and the train backward reduces the sum. Under DeepSpeed, whose engine steps inside
        its backward, θ keeps the single combined pass (:class:`BilevelPolicy`), as it does with
        ``split_theta_backward=False``.
        """
        if (
            not self.args.is_bilevel
            or not self.args.split_theta_backward
            or self.is_deepspeed_enabled
            or self.phase_at(self.state.global_step)[0] != "theta"
        ):
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        self._activate("theta")
        step = self.state.global_step
        self._theta_micro = self._micro_step(step)
        val = self._val_batch(step, self._theta_micro)
        val = {key: val[key] for key in MODEL_INPUT_KEYS if key in val}
        with self.accelerator.no_sync(model):
            with self.compute_loss_context_manager():
                val_loss = model(**val, loss_config=self.loss_config)["losses"].mean()
            self.accelerator.backward(val_loss / self.current_gradient_accumulation_steps)
        self._theta_val_loss = val_loss.detach()
        loss = super().training_step(model, inputs, num_items_in_batch)
        return loss + val_loss.detach() / self.current_gradient_accumulation_steps

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        if not self.args.is_bilevel or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        step = self.state.global_step
        phase, outer, _ = self.phase_at(step)
        alpha = self.alpha_at(step)
        metrics = self._metrics["train"]
        # a θ micro-step that training_step split has been counted there already
        micro = self.__dict__.pop("_theta_micro", None)
        micro = self._micro_step(step) if micro is None else micro
        batch = {key: inputs[key] for key in MODEL_INPUT_KEYS if key in inputs}
        # One call of the wrapped model per micro-step runs the whole phase, so DDP's reducer and
        # DeepSpeed's gradient hooks see exactly the graph that backward walks (see BilevelPolicy).
        spec: dict[str, Any] = {"phase": phase, "loss_config": self.loss_config, "no_bc": self.loss_config_no_bc}
        if self.args.aux_mode == "separate_adapters":
            spec["adapters"] = (self._theta_adapter_name(), PSI_ADAPTER)
        if phase == "psi":
            weights = self.batch_weights(inputs)
            self._activate("psi")  # switched back after the optimizer step (see _activate)
            output = model(**batch, bilevel=spec)
            losses, parts = output["losses"], output["metrics"]
            loss = (weights * losses).sum()
            metrics["psi_train_loss"].append(float(loss.detach()))
        elif phase == "theta":
            self._activate("theta")
            weights = self.batch_weights(inputs)
            # training_step may already have run the validation loss's forward and backward
            val_loss = self.__dict__.pop("_theta_val_loss", None)
            if val_loss is None:
                val = self._val_batch(step, micro)
                spec["val"] = {key: val[key] for key in MODEL_INPUT_KEYS if key in val}
            output = model(**batch, bilevel=spec)
            losses, parts = output["losses"], output["metrics"]
            train_loss = (weights * losses).sum()
            loss = alpha * train_loss
            if val_loss is None:
                val_loss = output["val_losses"].mean()
                loss = val_loss + loss
            metrics["val_loss"].append(float(val_loss.detach()))
            metrics["theta_train_loss"].append(float(train_loss.detach()))
        elif self.args.phi_signal == "val_alignment":
            self._activate("theta")
            val = self._val_batch(step, micro)
            val = {key: val[key] for key in MODEL_INPUT_KEYS if key in val}
            scores = validation_alignment(self.policy, batch, val, self.loss_config)
            weights = self.batch_weights(inputs, grad=True)
            loss = alignment_objective(weights, scores, self.args.weight_temperature)
            parts = {}
            metrics["phi_objective"].append(float(loss.detach()))
            metrics["val_alignment_mean"].append(float(scores.mean()))
            gap = scores
            if self.is_deepspeed_enabled:
                spec["anchor"] = True
                loss = loss + model(**batch, bilevel=spec)["anchor"]
        else:
            self._activate("theta")
            # DeepSpeed's ZeRO backward needs at least one gradient of the engine's parameters (ZeRO-1/2
            # set up their reduction buckets in the first gradient hook; without one the epilogue
            # fails with an IndexError), so there the φ loss carries 0 x ψ's losses: ψ gets a zero
            # gradient, and the phase's learning-rate mask keeps every policy weight unchanged.
            spec["anchor"] = self.is_deepspeed_enabled
            with torch.no_grad() if not spec["anchor"] else contextlib.nullcontext():
                output = model(**batch, bilevel=spec)
            parts = output["metrics"]
            weights = self.batch_weights(inputs, grad=True)
            gap = (output["losses"] - output["psi_losses"]).detach().float()
            loss = alpha * (weights * gap).sum()
            metrics["phi_objective"].append(float(loss.detach()))
            if spec["anchor"]:
                loss = loss + output["anchor"]
            metrics["loss_gap_theta_minus_psi"].append(float(gap.mean()))
        for name, value in parts.items():
            metrics[name].append(float(value))
        self._log_weights(weights, inputs)
        metrics["phase"].append({"psi": 0.0, "theta": 1.0, "phi": 2.0}[phase])
        metrics["outer_iteration"].append(float(outer))
        metrics["alpha"].append(alpha)
        self._tokens_seen += int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else inputs["input_ids"].numel()
        if return_outputs:
            return loss, {"losses": losses.detach() if phase != "phi" else gap}
        return loss

    def _micro_step(self, step: int) -> int:
        if getattr(self, "_micro_for", None) != step:
            self._micro_for, self._micro = step, 0
        else:
            self._micro += 1
        return self._micro

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

    @torch.no_grad()
    def sync_theta_from_psi(self) -> None:
        """θ ← ψ: copy the ψ heads (ILQL targets included) and, with separate adapters, the ψ adapter.

        Under ZeRO-3 the heads are partitioned: they are gathered for the copy. Under DeepSpeed
        (ZeRO-1/2/3) the optimizer also keeps fp32 master copies of the trainable weights, which it
        writes back after every step; θ's masters get ψ's values too, or the next θ step would undo
        the copy.
        """
        policy = self.policy
        pairs = list(zip(policy.heads.parameters(), policy.aux_heads.parameters()))
        if self.args.aux_mode == "separate_adapters":
            theta = self._theta_adapter_name()
            parameters = dict(policy.base.named_parameters())
            pairs += [(parameter, parameters[name.replace(f".{theta}.", f".{PSI_ADAPTER}.")])
                      for name, parameter in parameters.items() if f".{theta}." in name]
        masters = self.is_deepspeed_enabled and getattr(self, "deepspeed", None) is not None
        if masters:
            from deepspeed.utils import safe_get_full_fp32_param, safe_set_full_fp32_param

            for target, source in pairs:
                if target.requires_grad and source.requires_grad:
                    safe_set_full_fp32_param(target, safe_get_full_fp32_param(source))
        for target, source in pairs:
            with _gathered([target, source], modifier_rank=0):
                target.copy_(source)
        for (name, target), source in zip(policy.heads.named_buffers(), policy.aux_heads.buffers()):
            target.copy_(source)

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
        state (step count, moment decay) during other phases. So a step pre-hook on the torch
        optimizer hides the groups outside the phase (the φ phase hides all of them) and a post-hook
        puts them back: their weights and Adam state stay exactly as they were, under every backend.
        The hooks see whatever group list the ZeRO wrapper steps (ZeRO-1/2 step one group at a time).
        """
        psi_ids = {id(p) for p in self.policy.aux_heads.parameters()}
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
            phase = self.phase_at(self.state.global_step)[0]
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

        return weights_dataset(self.reweighting_head, self.embeddings, self.training_rows["id"], self.training_rows["source"])

    def bilevel_state(self) -> dict[str, Any]:
        step = self.state.global_step
        phase, outer, inner = self.phase_at(step)
        return {
            "method": self.args.method,
            "aux_mode": self.args.aux_mode,
            "global_step": step,
            "next_phase": phase,
            "outer_iteration": outer,
            "step_in_phase": inner,
            "alpha": self.alpha_at(step),
            "k_psi": self.args.k_psi,
            "k_theta": self.args.k_theta,
            "k_phi": self.args.k_phi,
            "training_trajectories": len(self.training_rows),
            "synthetic_trajectories": int(self.is_synthetic.sum()),
        }

    # ------------------------------------------------------------------------------ saving / resuming
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict)
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save or not self.args.is_bilevel:
            return
        name = base_model_name(self.policy.base) or self.psi_heads.base_model_name
        if name and not self.psi_heads.base_model_name:
            self.psi_heads.base_model_name = name
        psi_state = None
        if state_dict is not None:
            # the gathered full state dict (ZeRO-3) holds ψ under "aux_heads."; the live heads are partitioned
            psi_state = {k[len("aux_heads."):]: v for k, v in state_dict.items() if k.startswith("aux_heads.")} or None
        self.psi_heads.save_pretrained(Path(output_dir) / PSI_HEADS_SUBFOLDER, state_dict=psi_state)
        self.reweighting_head.training_details = (
            f"method={self.args.method}, alpha={self.args.alpha} (+{self.args.alpha_increment}/outer iteration), "
            f"K_psi={self.args.k_psi}, K_theta={self.args.k_theta}, K_phi={self.args.k_phi}, "
            f"lr={self.args.learning_rate}, lr_phi={self.args.reweight_learning_rate}, loss={self.args.loss_type}, "
            f"{len(self.training_rows)} training trajectories ({int(self.is_synthetic.sum())} synthetic), "
            f"{len(self.val_rows)} validation trajectories, {self.state.global_step} inner steps."
        )
        self.reweighting_head.save_pretrained(Path(output_dir) / REWEIGHTING_SUBFOLDER)
        temporary = Path(output_dir) / f".{STATE_FILE}.tmp"
        temporary.write_text(json.dumps(self.bilevel_state(), indent=2, sort_keys=True))
        os.replace(temporary, Path(output_dir) / STATE_FILE)

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        if not self.args.is_bilevel or not self.args.should_save:
            return
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        temporary = folder / f".{PHI_OPTIMIZER_FILE}.tmp"
        torch.save(self.reweighting_optimizer.state_dict(), temporary)
        os.replace(temporary, folder / PHI_OPTIMIZER_FILE)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if not self.args.is_bilevel:
            return
        import safetensors.torch

        folder = Path(resume_from_checkpoint)
        for required in (PSI_HEADS_SUBFOLDER, REWEIGHTING_SUBFOLDER, PHI_OPTIMIZER_FILE, STATE_FILE):
            if not (folder / required).exists():
                raise FileNotFoundError(
                    f"{str(folder / required)!r} is missing: {str(folder)!r} is not a complete BilevelReweightTrainer checkpoint"
                )
        device = str(self.policy.device)
        self.psi_heads.load_state_dict(safetensors.torch.load_file(str(folder / PSI_HEADS_SUBFOLDER / "model.safetensors"), device=device))
        head = ReweightingHead.from_pretrained(folder / REWEIGHTING_SUBFOLDER, expected_embedding_dim=self.embeddings.shape[1])
        self.reweighting_head.load_state_dict(head.state_dict())
        self.reweighting_optimizer.load_state_dict(torch.load(folder / PHI_OPTIMIZER_FILE, map_location=device, weights_only=True))
        saved = json.loads((folder / STATE_FILE).read_text())
        for key in ("method", "k_psi", "k_theta", "k_phi"):
            if saved.get(key) != getattr(self.args, key):
                raise ValueError(
                    f"{str(folder / STATE_FILE)!r}: checkpoint was trained with {key}={saved.get(key)!r}, "
                    f"but this run has {key}={getattr(self.args, key)!r}; resuming would change the phase schedule"
                )
        if self.args.aux_mode == "separate_adapters":
            from peft import set_peft_model_state_dict

            adapter = folder / PSI_ADAPTER / "adapter_model.safetensors"
            if not adapter.is_file():
                raise FileNotFoundError(f"{str(adapter)!r} is missing: the checkpoint has no psi adapter")
            set_peft_model_state_dict(self.policy.base, safetensors.torch.load_file(str(adapter), device=device), adapter_name=PSI_ADAPTER)


def _add_psi_adapter(policy: ValueHeadPolicy) -> None:
    """Add a ψ LoRA adapter that starts as a copy of θ's (``separate_adapters`` mode)."""
    base = policy.base
    if not is_peft_model(base):
        raise ValueError("aux_mode='separate_adapters' needs a PEFT model: pass peft_config (a LoRA config)")
    theta = base.active_adapter
    base.add_adapter(PSI_ADAPTER, copy.deepcopy(base.peft_config[theta]))
    with torch.no_grad():
        parameters = dict(base.named_parameters())
        for name, parameter in parameters.items():
            if f".{theta}." in name:
                parameters[name.replace(f".{theta}.", f".{PSI_ADAPTER}.")].copy_(parameter)
    base.set_adapter(theta)


def load_bilevel_artifacts(directory: str | os.PathLike) -> dict[str, Any]:
    """Load what :class:`BilevelReweightTrainer` saved: θ policy, ψ heads, reweighting head, state."""
    directory = Path(directory)
    return {
        "policy": ValueHeadPolicy.from_pretrained(directory),
        "psi_value_heads": ValueHeads.from_pretrained(str(directory / PSI_HEADS_SUBFOLDER)),
        "reweighting_head": ReweightingHead.from_pretrained(directory / REWEIGHTING_SUBFOLDER),
        "state": json.loads((directory / STATE_FILE).read_text()),
    }


__all__ = ["BilevelCallback", "BilevelPolicy", "BilevelReweightTrainer", "load_bilevel_artifacts"]
