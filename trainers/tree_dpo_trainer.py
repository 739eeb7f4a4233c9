"""W2SG tree-DPO: TRL's DPO on divergence-point pairs, with the weak SFT model as reference.

Three things differ from :class:`trl.DPOTrainer`, and nothing else is overridden:

1. **Loss on assistant turns only.** A multi-step continuation holds user observations; the
   trainer adds ``chosen_loss_mask`` / ``rejected_loss_mask`` columns while preparing the data
   and its collator uses them as ``completion_mask``, so observations and role headers inside
   the continuation carry no loss (for the policy and, through the same mask, the reference).
2. **A reference with another tokenizer.** The weak model (e.g. SmolLM2) usually tokenizes
   differently from the strong one (e.g. Gemma 3). Pass ``ref_processing_class``: the reference
   log-probs of each pair are then computed once, before training, from the reference's own
   rendering and tokenization of the same messages (assistant tokens of the continuation only)
   and stored in TRL's ``ref_chosen_logps`` / ``ref_rejected_logps`` columns, which DPO reads
   with ``precompute_ref_log_probs``. By default they are first calibrated to the policy's token
   count and per-token level (:func:`calibrate_reference_logps`), so that DPO starts from a
   margin near zero as it does with its own reference. With a shared tokenizer TRL's usual
   paths are used.
3. **Pairs from trees.** ``forest=`` mines the pairs (see :func:`trainers.tree.mine_pairs`);
   zero pairs is a clear :class:`~trainers.tree.NoPreferencePairsError`, not a crash inside DPO.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from tqdm.auto import tqdm
from trl import DPOTrainer
from trl.data_utils import _tokenize, common_prefix_length, is_conversational
from trl.trainer.dpo_trainer import DataCollatorForPreference
from trl.trainer.utils import add_fused_lm_head, pad

from trainers.checkpointing import CrashSafeCheckpointMixin
from trainers.tree import NoPreferencePairsError, TrajectoryForest, mine_pairs
from trainers.tree_dpo_config import TreeDPOConfig

__all__ = [
    "DataCollatorForTreePreference",
    "TreeDPOTrainer",
    "assistant_token_mask",
    "calibrate_reference_logps",
    "reference_logps",
]

logger = logging.getLogger(__name__)


def assistant_token_mask(tokenizer, prompt: list[dict], continuation: list[dict]) -> tuple[list[int], list[int]]:
    """Tokenize ``prompt + continuation`` with the chat template; 1 on the continuation's assistant turns.

    Each assistant turn spans from the end of the conversation rendered up to it (with the
    generation prompt, i.e. after the role header) to the end of the conversation rendered
    through it (its content and end-of-turn marker). Positions are found as common token prefixes
    with the full tokenization, so templates whose pieces merge at the boundary still align.
    A turn therefore includes whatever the template writes after its end-of-turn token before
    the next message (ChatML's newline), exactly as TRL's completion does for the last turn.
    """
    messages = list(prompt) + list(continuation)
    full = _tokenize(tokenizer, messages)["input_ids"]
    mask = [0] * len(full)
    for index in range(len(prompt), len(messages)):
        if messages[index]["role"] != "assistant":
            continue
        before = _tokenize(tokenizer, messages[:index], add_generation_prompt=True)["input_ids"]
        start = common_prefix_length(before, full)
        if index + 1 == len(messages):
            end = len(full)
        else:
            end = common_prefix_length(_tokenize(tokenizer, messages[: index + 1])["input_ids"], full)
        for position in range(start, max(start, end)):
            mask[position] = 1
    return full, mask


@dataclass
class DataCollatorForTreePreference(DataCollatorForPreference):
    """TRL's preference collator; ``chosen_loss_mask`` / ``rejected_loss_mask`` become the completion mask."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        output = super().torch_call(examples)
        if "chosen_loss_mask" not in examples[0]:
            return output
        masks = [[0] * len(e["prompt_ids"]) + list(e["chosen_loss_mask"]) for e in examples]
        masks += [[0] * len(e["prompt_ids"]) + list(e["rejected_loss_mask"]) for e in examples]
        if self.max_length is not None:
            cut = (
                slice(None, self.max_length) if self.truncation_mode == "keep_start" else slice(-self.max_length, None)
            )
            masks = [m[cut] for m in masks]
        padded = pad(
            [torch.tensor(m, dtype=torch.long) for m in masks],
            padding_value=0,
            padding_side="right",
            pad_to_multiple_of=self.pad_to_multiple_of,
        )
        completion_mask = output["completion_mask"]
        if padded.shape != completion_mask.shape:
            raise ValueError(
                f"loss masks of shape {tuple(padded.shape)} do not match the batch {tuple(completion_mask.shape)}; "
                "the chosen/rejected_loss_mask columns must be as long as chosen/rejected_ids"
            )
        output["completion_mask"] = padded * completion_mask
        return output


def _same_tokenizer(a, b) -> bool:
    if a is b:
        return True
    return (
        type(a) is type(b)
        and len(a) == len(b)
        and a.get_vocab() == b.get_vocab()
        and getattr(a, "chat_template", None) == getattr(b, "chat_template", None)
    )


def reference_logps(
    model,
    tokenizer,
    pairs,
    *,
    max_length: int | None = None,
    batch_size: int = 4,
    mask_observations: bool = True,
    device: torch.device | str | None = None,
    desc: str = "Reference log-probs (own tokenizer)",
) -> tuple[list[float], list[float]]:
    """Sum of ``model``'s log-probs of each pair's chosen / rejected continuation, in its own tokenization.

    ``pairs`` holds conversational ``prompt`` / ``chosen`` / ``rejected`` rows. Only the
    continuation's assistant tokens count (or the whole continuation with ``mask_observations=False``).
    Sequences longer than ``max_length`` keep their start.
    """
    sums, _ = _continuation_logps(
        model,
        tokenizer,
        pairs,
        max_length=max_length,
        batch_size=batch_size,
        mask_observations=mask_observations,
        device=device,
        desc=desc,
    )
    return sums[0::2], sums[1::2]


def calibrate_reference_logps(ref_logps, ref_counts, policy_logps, policy_counts) -> list[float]:
    """Reference log-probs moved onto the policy's tokens and per-token level (``per_token`` calibration).

    A reference from another model family differs from the policy in two ways that DPO would read
    as preferences: its tokenizer cuts the same text into another number of tokens, and its
    average per-token log-prob sits at another level. Both scale with a continuation's length, so
    a long rejected path against a short chosen one saturates the sigmoid before training starts.
    Each sequence's reference log-prob becomes ``n * (ref / m - mean_ref + mean_policy)``: its
    per-token average (over its ``m`` reference tokens), shifted by the gap between the two
    models' token-weighted means over the dataset, times its ``n`` policy tokens. What stays is
    how much more or less likely the reference finds this continuation than its average one.
    Where ``max_length`` cut a continuation down to no reference tokens (another tokenizer can
    need more tokens for the same prefix), the reference's average per-token log-prob stands in.
    """
    if not (len(ref_logps) == len(ref_counts) == len(policy_logps) == len(policy_counts)):
        raise ValueError("reference and policy log-probs and token counts must describe the same sequences")
    if not ref_logps:
        return []
    if sum(ref_counts) <= 0 or sum(policy_counts) <= 0:
        raise ValueError("no scored tokens: every continuation was cut by max_length, nothing to calibrate with")
    mean_ref = sum(ref_logps) / sum(ref_counts)
    mean_policy = sum(policy_logps) / sum(policy_counts)
    # a continuation that truncation left without reference tokens gets the reference's average
    return [
        n * ((logp / m if m > 0 else mean_ref) - mean_ref + mean_policy)
        for logp, m, n in zip(ref_logps, ref_counts, policy_counts)
    ]


@torch.no_grad()
def _continuation_logps(
    model, tokenizer, pairs, *, max_length, batch_size, mask_observations, device, desc
) -> tuple[list[float], list[int]]:
    """Summed log-prob and scored-token count of every continuation, ordered chosen_0, rejected_0, chosen_1, ..."""
    if getattr(tokenizer, "pad_token_id", None) is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(model, "_trainers_fused_lm_head", False):
        add_fused_lm_head(model)
        model._trainers_fused_lm_head = True
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    sequences: list[tuple[list[int], list[int]]] = []
    for index, row in enumerate(pairs):
        for side in ("chosen", "rejected"):
            try:
                ids, mask = assistant_token_mask(tokenizer, row["prompt"], row[side])
            except Exception as error:  # noqa: BLE001 - say which row the reference tokenizer could not render
                raise ValueError(
                    f"pair {index}, field {side!r}: the reference tokenizer could not render it: {error}"
                ) from error
            if not mask_observations:
                prompt_len = common_prefix_length(
                    _tokenize(tokenizer, row["prompt"], add_generation_prompt=True)["input_ids"], ids
                )
                mask = [0] * prompt_len + [1] * (len(ids) - prompt_len)
            if max_length is not None:
                ids, mask = ids[:max_length], mask[:max_length]
            sequences.append((ids, mask))
    logps: list[float] = []
    counts = [sum(mask[1:]) for _, mask in sequences]  # the first token has no prediction to score
    for start in tqdm(range(0, len(sequences), batch_size), desc=desc, disable=len(sequences) <= batch_size):
        chunk = sequences[start : start + batch_size]
        input_ids = pad(
            [torch.tensor(ids) for ids, _ in chunk], padding_value=tokenizer.pad_token_id, padding_side="right"
        ).to(device)
        attention = pad(
            [torch.ones(len(ids), dtype=torch.long) for ids, _ in chunk], padding_value=0, padding_side="right"
        ).to(device)
        mask = pad([torch.tensor(m, dtype=torch.long) for _, m in chunk], padding_value=0, padding_side="right").to(
            device
        )
        labels = input_ids.masked_fill(mask == 0, -100)
        out = model(input_ids=input_ids, attention_mask=attention, labels=labels, fused_lm_head=True, use_cache=False)
        logps.extend(out.log_probs.float().sum(dim=1).tolist())
    model.train(was_training)
    return logps, counts


class TreeDPOTrainer(CrashSafeCheckpointMixin, DPOTrainer):
    """DPO on tree-derived preference pairs (W2SG), the weak SFT model as reference.

    Args:
        model: the strong policy (model id, ``PreTrainedModel`` or ``PeftModel``), as for ``DPOTrainer``.
        ref_model: the weak SFT model. With the policy's tokenizer it is used as TRL does; with
            another tokenizer pass ``ref_processing_class`` too.
        args: a :class:`~trainers.TreeDPOConfig`.
        train_dataset: conversational preference pairs (``prompt`` / ``chosen`` / ``rejected``),
            e.g. ``mine_pairs(forest).to_dataset()``; or leave it out and pass ``forest``.
        forest: a :class:`~trainers.tree.TrajectoryForest`; pairs are mined with the config's
            ``pair_margin`` / ``pair_continuation`` / ``pair_strategy`` / ``pair_no_effect_pattern``.
        ref_processing_class: the reference model's tokenizer when it differs from the policy's.
        Other arguments are passed to :class:`trl.DPOTrainer`.
    """

    _tag_names = ["trl", "dpo", "trainers", "tree-dpo", "weak-to-strong"]
    _name = "TreeDPO"

    def __init__(
        self,
        model,
        ref_model=None,
        args: TreeDPOConfig | None = None,
        data_collator=None,
        train_dataset: datasets.Dataset | None = None,
        eval_dataset=None,
        processing_class=None,
        *,
        forest: TrajectoryForest | None = None,
        ref_processing_class=None,
        **kwargs,
    ):
        self.pair_mining = None
        if args is None:
            args = TreeDPOConfig(output_dir="tree-dpo")
        if not isinstance(args, TreeDPOConfig):
            raise TypeError(f"args must be a TreeDPOConfig, got {type(args).__name__}")
        if forest is not None:
            if train_dataset is not None:
                raise ValueError("pass either forest (pairs are mined from it) or train_dataset (pairs), not both")
            self.pair_mining = mine_pairs(
                forest,
                margin=args.pair_margin,
                continuation=args.pair_continuation,
                pairing=args.pair_strategy,
                no_effect_pattern=args.pair_no_effect_pattern,
            )
            train_dataset = self.pair_mining.to_dataset()  # raises NoPreferencePairsError on zero pairs
        if train_dataset is None:
            raise ValueError("TreeDPOTrainer needs preference pairs: pass train_dataset or forest")
        if isinstance(train_dataset, datasets.Dataset) and len(train_dataset) == 0:
            raise NoPreferencePairsError(
                "the preference dataset is empty: no divergence points were found (a tree from one trajectory, or "
                "branches with equal outcomes). See mine_pairs(...).explain() for the per-task counts."
            )
        if isinstance(train_dataset, datasets.Dataset):
            missing = {"prompt", "chosen", "rejected"} - set(train_dataset.column_names)
            if missing:
                raise ValueError(
                    f"the preference dataset lacks columns {sorted(missing)} (needs prompt, chosen, rejected)"
                )

        if processing_class is None:
            from transformers import AutoTokenizer

            name = model if isinstance(model, str) else model.config._name_or_path
            processing_class = AutoTokenizer.from_pretrained(name)
        if processing_class.pad_token is None:
            processing_class.pad_token = processing_class.eos_token

        # A reference with its own tokenizer is scored before training and never kept by DPO.
        self._foreign_ref = None
        if ref_processing_class is not None and not _same_tokenizer(ref_processing_class, processing_class):
            if ref_model is None:
                raise ValueError(
                    "ref_processing_class was given without ref_model (the weak SFT model to score with it)"
                )
            if not args.precompute_ref_log_probs:
                logger.info("The reference model has its own tokenizer: precomputing its log-probs before training.")
                args.precompute_ref_log_probs = True
            self._foreign_ref = (ref_model, ref_processing_class)
            ref_model = None

        if data_collator is None:
            data_collator = DataCollatorForTreePreference(
                pad_token_id=processing_class.pad_token_id,
                max_length=args.max_length,
                truncation_mode=args.truncation_mode,
                pad_to_multiple_of=args.pad_to_multiple_of if isinstance(args.pad_to_multiple_of, int) else None,
            )
        super().__init__(
            model,
            ref_model=ref_model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        # the foreign reference stays referenced so that evaluate() can score new eval sets with it

    # ------------------------------------------------------------------------------ data
    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        given = len(dataset) if isinstance(dataset, datasets.Dataset) else None
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if given is not None and len(dataset) < given:
            # TRL drops pairs whose prompt alone fills max_length: deep divergence points of long
            # episodes (a WebShop page is ~1,000 tokens) lose their pairs without a word otherwise
            message = (
                f"{given - len(dataset)} of {given} {dataset_name} pairs dropped: "
                "their prompt (the shared prefix up to "
                f"the divergence point) has at least max_length={args.max_length} tokens"
            )
            if len(dataset) == 0:
                raise NoPreferencePairsError(message + "; raise max_length")
            logger.warning(message)
        if not args.mask_continuation_observations or not isinstance(dataset, datasets.Dataset):
            return dataset
        first = dataset[0] if len(dataset) else None
        if first is None or not is_conversational(first):
            return dataset
        tokenizer = getattr(processing_class, "tokenizer", processing_class)

        def add_masks(example, index):
            masks = {}
            for side in ("chosen", "rejected"):
                full, mask = assistant_token_mask(tokenizer, example["prompt"], example[side])
                prompt_len = len(example["prompt_ids"])
                if full[:prompt_len] != list(example["prompt_ids"]) or full[prompt_len:] != list(
                    example[f"{side}_ids"]
                ):
                    raise ValueError(
                        f"{dataset_name} pair {index}, field {side!r}: re-tokenizing the conversation gave different "
                        "tokens than DPO's tokenization; the chat template is not deterministic for these messages"
                    )
                masks[f"{side}_loss_mask"] = mask[prompt_len:]
                if 1 not in masks[f"{side}_loss_mask"]:
                    raise ValueError(
                        f"{dataset_name} pair {index}, field {side!r}: "
                        "the continuation has no assistant turn to train on"
                    )
            return masks

        return dataset.map(add_masks, with_indices=True, desc=f"Masking observations in {dataset_name} continuations")

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        for column in ("chosen_loss_mask", "rejected_loss_mask"):
            if column not in self._signature_columns:
                self._signature_columns.append(column)

    def _precompute_ref_logps(self, dataset, name, batch_size):
        if self._foreign_ref is None:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        ref_model, ref_tokenizer = self._foreign_ref
        ref_columns = ("ref_chosen_logps", "ref_rejected_logps")
        dataset = dataset.remove_columns([c for c in ref_columns if c in dataset.column_names])
        logps, counts = _continuation_logps(
            ref_model,
            ref_tokenizer,
            dataset,
            max_length=self.args.ref_max_length or self.args.max_length,
            batch_size=batch_size,
            mask_observations=self.args.mask_continuation_observations,
            device=self.accelerator.device,
            desc=f"Reference log-probs for {name} dataset (reference tokenizer)",
        )
        if self.args.foreign_ref_calibration == "per_token":
            # TRL's own precompute with no reference model scores the policy itself (through
            # DeepSpeed's engine or PEFT as needed): its starting point, in its own tokens
            scored = super()._precompute_ref_logps(dataset, f"{name} (policy, to calibrate the reference)", batch_size)
            policy_logps = [v for pair in zip(scored["ref_chosen_logps"], scored["ref_rejected_logps"]) for v in pair]
            policy_counts = self._scored_token_counts(dataset)
            calibrated = calibrate_reference_logps(logps, counts, policy_logps, policy_counts)
            logger.info(
                "Calibrated the reference log-probs of %s: per-token mean %.3f (reference) -> %.3f (policy)",
                name,
                sum(logps) / sum(counts),
                sum(policy_logps) / sum(policy_counts),
            )
            logps = calibrated
        return dataset.add_column(ref_columns[0], logps[0::2]).add_column(ref_columns[1], logps[1::2])

    def _scored_token_counts(self, dataset) -> list[int]:
        """Tokens DPO scores per continuation (chosen_0, rejected_0, ...), after ``max_length`` keeps the start."""
        counts = []
        for row in dataset:
            room = None if self.args.max_length is None else max(0, self.args.max_length - len(row["prompt_ids"]))
            for side in ("chosen", "rejected"):
                mask = row.get(f"{side}_loss_mask") or [1] * len(row[f"{side}_ids"])
                counts.append(sum(mask[:room]))
        return counts
