"""Value-guided generation as a ``LogitsProcessor``, so ``model.generate`` works unchanged.

At each generation step the processor replaces the scores with

* MC:   ``log_softmax(scores) + beta * Q(s, .)``
* ILQL: ``log_softmax(scores) + beta * (min_i targetQ_i(s, .) - V(s))``

i.e. the policy ``pi(a|s) ~ pi_base(a|s) * exp(beta * Q)`` (resp. ``exp(beta * A)``) of BOOST
section 2.2. ``s`` is the final hidden state of the last position, which ``generate`` does not
hand to logits processors: :meth:`ValueGuidedLogitsProcessor.attach` registers a forward hook on
the model's decoder (the module whose output the LM head reads) that keeps the last position's
final hidden state of every forward pass. Generation itself is untouched: greedy, sampling, beams
and KV caching behave as usual, and the processor composes with other processors.

``beta = 0`` reproduces the base policy's greedy choices exactly (log-softmax is monotone).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .policy import ValueHeadPolicy, unwrap_base
from .value_heads import ValueHeads


def _decoder_of(model) -> torch.nn.Module:
    if isinstance(model, ValueHeadPolicy):
        return model.decoder
    base = unwrap_base(model)
    decoder = base.get_decoder()
    if decoder is base:
        raise ValueError(f"cannot find the decoder of {type(base).__name__} to read its final hidden states")
    return decoder


class ValueGuidedLogitsProcessor(LogitsProcessor):
    """Add ``beta`` times the value heads' scores to the base log-probabilities.

    Args:
        heads: the trained :class:`ValueHeads`.
        beta: guidance temperature (BOOST / anchors: 1-16; 0 = the base policy).
        mode: ``"mc"`` (``beta * Q``) or ``"ilql"`` (``beta * (min targetQ - V)``); defaults to the heads' type.
        model: the causal LM (plain, PEFT, or :class:`ValueHeadPolicy`) that will generate; the
            processor hooks its decoder. Can also be given later with :meth:`attach`.
    """

    def __init__(self, heads: ValueHeads, beta: float = 1.0, mode: str | None = None, model=None):
        mode = mode or heads.loss_type
        if mode not in ("mc", "ilql"):
            raise ValueError(f"mode must be 'mc' or 'ilql', got {mode!r}")
        if mode == "ilql" and not heads.is_ilql:
            raise ValueError("mode='ilql' needs ILQL heads (target Q heads and a V head); these are MC heads")
        self.heads = heads
        self.beta = float(beta)
        self.mode = mode
        self._hidden: torch.Tensor | None = None
        self._handle = None
        if model is not None:
            self.attach(model)

    def attach(self, model) -> ValueGuidedLogitsProcessor:
        """Hook ``model``'s decoder to capture the last position's final hidden state."""
        self.detach()
        if isinstance(model, ValueHeadPolicy):
            base = model.base
        else:
            base = model
        self.heads.check_compatible(unwrap_base(base), check_name=False)
        decoder = _decoder_of(model)

        def keep_last_hidden(module, args, output):
            hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
            self._hidden = hidden[:, -1].detach()

        self._handle = decoder.register_forward_hook(keep_last_hidden)
        return self

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        self._hidden = None

    def value_scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[B, |V|]`` guidance term for final hidden states ``[B, d]``."""
        with torch.no_grad(), torch.autocast(device_type=hidden.device.type, enabled=False):
            params = next(self.heads.parameters())
            hidden = hidden.to(device=params.device, dtype=params.dtype)
            if self.mode == "mc":
                return self.heads.q_values(hidden, 0)
            return self.heads.guidance_scores(hidden)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._hidden is None:
            raise RuntimeError(
                "ValueGuidedLogitsProcessor has no hidden state: attach it to the generating model first "
                "(ValueGuidedLogitsProcessor(heads, beta, model=model) or .attach(model))"
            )
        hidden = self._hidden
        if hidden.shape[0] != scores.shape[0]:
            raise RuntimeError(
                f"captured hidden states for {hidden.shape[0]} sequences but scores for {scores.shape[0]}: the "
                "processor is attached to a different model than the one generating"
            )
        log_probs = torch.log_softmax(scores.float(), dim=-1)
        if self.beta == 0.0:
            return log_probs.to(scores.dtype)
        values = self.value_scores(hidden).to(log_probs.device)
        if values.shape[-1] != log_probs.shape[-1]:
            # models whose LM head pads the vocabulary: the heads cover the real rows only
            if values.shape[-1] > log_probs.shape[-1]:
                raise RuntimeError(
                    f"value heads cover {values.shape[-1]} tokens but the scores have {log_probs.shape[-1]}"
                )
            pad = log_probs.new_zeros(values.shape[0], log_probs.shape[-1] - values.shape[-1])
            values = torch.cat([values, pad], dim=-1)
        return (log_probs + self.beta * values).to(scores.dtype)


class ValueGuidedPolicy:
    """What :func:`load_value_guided_policy` returns: a model, its tokenizer and a guidance processor.

    * ``generate(**kwargs)``: ``model.generate`` with the guidance processor appended;
    * ``logits_processor``: a ``LogitsProcessorList`` to hand to any code that calls
      ``model.generate(..., logits_processor=...)`` itself (e.g. the rollout harness);
    * ``model`` / ``base_model`` / ``tokenizer`` / ``heads``; ``beta`` can be changed (0 = unguided).
    """

    def __init__(self, policy: ValueHeadPolicy, tokenizer=None, beta: float = 1.0, mode: str | None = None):
        self.policy = policy
        self.tokenizer = tokenizer
        self.processor = ValueGuidedLogitsProcessor(policy.heads, beta, mode, model=policy.base)

    @property
    def model(self):
        """The generating causal LM (PEFT model when an adapter was loaded)."""
        return self.policy.base

    base_model = model

    @property
    def heads(self) -> ValueHeads:
        return self.policy.heads

    @property
    def beta(self) -> float:
        return self.processor.beta

    @beta.setter
    def beta(self, value: float) -> None:
        self.processor.beta = float(value)

    @property
    def logits_processor(self) -> LogitsProcessorList:
        return LogitsProcessorList([self.processor])

    @property
    def device(self) -> torch.device:
        return self.policy.device

    def generate(self, *args, **kwargs):
        processors = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
        processors.append(self.processor)
        return self.model.generate(*args, logits_processor=processors, **kwargs)

    def to(self, *args, **kwargs) -> ValueGuidedPolicy:
        self.policy.to(*args, **kwargs)
        return self


def load_value_guided_policy(
    path_or_repo: str | os.PathLike,
    *,
    beta: float | None = None,
    mode: str | None = None,
    base_model: Any = None,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    quantization_config: Any = None,
    check_name: bool = True,
    revision: str | None = None,
    token: str | None = None,
) -> ValueGuidedPolicy:
    """One call: base model + LoRA adapter + value heads (+ tokenizer) from a trainer folder or Hub id.

    ``beta`` defaults to the value recorded at save time (the trainer's ``beta``). ``base_model``
    overrides the recorded base (id/path or a loaded model, e.g. 4-bit); a base whose hidden size,
    vocabulary or id differs from the heads' record raises ``IncompatibleHeadsError``
    (``check_name=False`` accepts another id for the same weights).
    """
    from transformers import AutoTokenizer

    from .policy import resolve_folder

    directory = resolve_folder(path_or_repo, revision=revision, token=token)
    policy = ValueHeadPolicy.from_pretrained(
        directory,
        base_model=base_model,
        dtype=dtype,
        device=device,
        quantization_config=quantization_config,
        check_name=check_name,
    )
    tokenizer = None
    if any((directory / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    return ValueGuidedPolicy(policy, tokenizer, beta=policy.saved_beta if beta is None else beta, mode=mode)
