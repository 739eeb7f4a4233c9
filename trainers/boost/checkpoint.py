"""What BOOST saves beside the θ policy, and how a run resumes from it.

``save_model`` writes the θ policy (``OfflineRLTrainer``'s layout) plus, from here, ``psi_value_heads/``
(ψ's heads), ``reweighting_head/`` (φ, a Hub model with its card) and ``bilevel_state.json`` (phase,
outer iteration, step within the phase, α); checkpoints also get φ's optimizer state,
``reweighting_optimizer.pt`` (and ψ's adapter in ``separate_adapters`` mode, written with the
policy). Each file is written to a staging name, then renamed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..modeling.policy import ValueHeadPolicy, base_model_name
from ..modeling.value_heads import ValueHeads
from .algorithm import PSI_ADAPTER
from .reweighting_head import ReweightingHead

PSI_HEADS_SUBFOLDER = "psi_value_heads"
REWEIGHTING_SUBFOLDER = "reweighting_head"
STATE_FILE = "bilevel_state.json"
PHI_OPTIMIZER_FILE = "reweighting_optimizer.pt"


def save_boost_extras(trainer, output_dir: str | os.PathLike, state_dict: dict | None = None) -> None:
    """Write what BOOST adds to the θ policy's folder: ψ's heads, the reweighting head, ``bilevel_state.json``."""
    name = base_model_name(trainer.policy.base) or trainer.psi_heads.base_model_name
    if name and not trainer.psi_heads.base_model_name:
        trainer.psi_heads.base_model_name = name
    psi_state = None
    if state_dict is not None:
        # the gathered full state dict (ZeRO-3) holds ψ under "psi_heads."; the live heads are partitioned
        psi_state = {k[len("psi_heads.") :]: v for k, v in state_dict.items() if k.startswith("psi_heads.")} or None
    trainer.psi_heads.save_pretrained(Path(output_dir) / PSI_HEADS_SUBFOLDER, state_dict=psi_state)
    args = trainer.args
    trainer.reweighting_head.training_details = (
        f"method={args.method}, phi_signal={args.phi_signal}, alpha={args.alpha} (+{args.alpha_increment}/outer "
        f"iteration), K_psi={args.k_psi}, K_theta={args.k_theta}, K_phi={args.k_phi}, lr={args.learning_rate}, "
        f"lr_phi={args.reweight_learning_rate}, input normalization={args.reweight_input_normalization} "
        f"(embeddings: {args.embedding_pooling}), loss={args.loss_type}, {len(trainer.training_rows)} training "
        f"trajectories ({int(trainer.is_synthetic.sum())} synthetic), {len(trainer.val_rows)} validation trajectories, "
        f"{trainer.state.global_step} inner steps."
    )
    trainer.reweighting_head.save_pretrained(Path(output_dir) / REWEIGHTING_SUBFOLDER)
    temporary = Path(output_dir) / f".{STATE_FILE}.tmp"
    temporary.write_text(json.dumps(trainer.bilevel_state(), indent=2, sort_keys=True))
    os.replace(temporary, Path(output_dir) / STATE_FILE)


def save_reweighting_optimizer(trainer, folder: str | os.PathLike) -> None:
    """φ's optimizer state into a checkpoint folder (staging file, then rename)."""
    temporary = Path(folder) / f".{PHI_OPTIMIZER_FILE}.tmp"
    torch.save(trainer.reweighting_optimizer.state_dict(), temporary)
    os.replace(temporary, Path(folder) / PHI_OPTIMIZER_FILE)


def load_boost_extras(trainer, checkpoint: str | os.PathLike) -> None:
    """Restore ψ (heads, adapter), φ and φ's optimizer from a checkpoint; refuse another schedule."""
    import safetensors.torch

    folder = Path(checkpoint)
    for required in (PSI_HEADS_SUBFOLDER, REWEIGHTING_SUBFOLDER, PHI_OPTIMIZER_FILE, STATE_FILE):
        if not (folder / required).exists():
            raise FileNotFoundError(
                f"{str(folder / required)!r} is missing: {str(folder)!r} is not a complete BilevelReweightTrainer "
                "checkpoint"
            )
    saved = json.loads((folder / STATE_FILE).read_text())
    # checkpoints saved before phi_warmup_steps existed had none
    schedule_keys = (("method", None), ("k_psi", None), ("k_theta", None), ("k_phi", None), ("phi_warmup_steps", 0))
    for key, missing in schedule_keys:
        if saved.get(key, missing) != getattr(trainer.args, key):
            raise ValueError(
                f"{str(folder / STATE_FILE)!r}: checkpoint was trained with {key}={saved.get(key, missing)!r}, "
                f"but this run has {key}={getattr(trainer.args, key)!r}; resuming would change the phase schedule"
            )
    device = str(trainer.policy.device)
    psi_file = str(folder / PSI_HEADS_SUBFOLDER / "model.safetensors")
    trainer.psi_heads.load_state_dict(safetensors.torch.load_file(psi_file, device=device))
    head = ReweightingHead.from_pretrained(
        folder / REWEIGHTING_SUBFOLDER, expected_embedding_dim=trainer.embeddings.shape[1]
    )
    trainer.reweighting_head.load_state_dict(head.state_dict())
    trainer.reweighting_optimizer.load_state_dict(
        torch.load(folder / PHI_OPTIMIZER_FILE, map_location=device, weights_only=True)
    )
    if trainer.args.aux_mode == "separate_adapters":
        from peft import set_peft_model_state_dict

        adapter = folder / PSI_ADAPTER / "adapter_model.safetensors"
        if not adapter.is_file():
            raise FileNotFoundError(f"{str(adapter)!r} is missing: the checkpoint has no psi adapter")
        set_peft_model_state_dict(
            trainer.policy.base, safetensors.torch.load_file(str(adapter), device=device), adapter_name=PSI_ADAPTER
        )


def load_bilevel_artifacts(directory: str | os.PathLike) -> dict[str, Any]:
    """Load what :class:`BilevelReweightTrainer` saved: θ policy, ψ heads, reweighting head, state."""
    directory = Path(directory)
    return {
        "policy": ValueHeadPolicy.from_pretrained(directory),
        "psi_value_heads": ValueHeads.from_pretrained(str(directory / PSI_HEADS_SUBFOLDER)),
        "reweighting_head": ReweightingHead.from_pretrained(directory / REWEIGHTING_SUBFOLDER),
        "state": json.loads((directory / STATE_FILE).read_text()),
    }


__all__ = [
    "PHI_OPTIMIZER_FILE",
    "PSI_HEADS_SUBFOLDER",
    "REWEIGHTING_SUBFOLDER",
    "STATE_FILE",
    "load_bilevel_artifacts",
    "load_boost_extras",
    "save_boost_extras",
    "save_reweighting_optimizer",
]
