"""Test support, never imported by ``import trainers``: tiny causal LMs and a locally trained tokenizer.

``trainers.testing.hub`` (a local Hub endpoint, FastAPI + ``olah``) is a separate module whose
dependencies come with the ``dev`` extra; this module needs only the runtime dependencies.

Everything here is deterministic and needs no network: the tokenizer is a byte-level BPE trained
with ``tokenizers`` on a small built-in corpus, wrapped as ``PreTrainedTokenizerFast`` with a
ChatML chat template, saved and reloaded through ``AutoTokenizer.from_pretrained``; models are
built from a config, saved and reloaded through ``AutoModelForCausalLM.from_pretrained``.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]


def _corpus() -> list[str]:
    words = (
        "is it an animal a plant a vehicle food tool yes no maybe can you eat it bigger than a bread box "
        "search click buy now back to search next prev page results price dollars item size color blue red "
        "black white small large pack ounce instruction i need a under observation thought action the seller "
        "buyer car honda toyota ford budget offer deal accept agree walk away miles sedan suv truck "
        "look around go to kitchen open door pick up focus on thermometer water heat stove task score "
        "0 1 2 3 4 5 6 7 8 9 10 100 1000 $ . , ? ! [ ] : ' - SEP"
    ).split()
    sentences = []
    for n, (a, b, c) in enumerate(itertools.product(words[:40], words[40:80], words[80:])):
        if n % 7 == 0:
            sentences.append(f"{a} {b} {c}. Thought: {b}? Action: {c}[{a}]")
    return sentences + [" ".join(words)] * 10


def build_tiny_tokenizer(directory: str | Path, vocab_size: int = 512):
    """Train a byte-level BPE tokenizer, save it to ``directory`` and load it back."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    directory = Path(directory)
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory)


def build_tiny_model(directory: str | Path, tokenizer, architecture: str = "llama", seed: int = 0):
    """Build a tiny ``architecture`` ("llama" or "gpt2") causal LM, save it and load it back."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    directory = Path(directory)
    common = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if architecture == "llama":
        config = LlamaConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=False,
            **common,
        )
    elif architecture == "gpt2":
        config = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=2048, **common)
    else:
        raise ValueError(f"unknown tiny architecture {architecture!r}; use 'llama' or 'gpt2'")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return AutoModelForCausalLM.from_pretrained(directory)


def yes_no_trajectories(n: int, source: str = "real", offset: int = 0) -> list[dict]:
    """``n`` two-turn question/answer trajectories (rewards 0 then 0/1) for trainer tests.

    ``offset`` shifts the wording so validation rows differ from train rows; synthetic rows carry a
    ``parent_id`` of a train row, as the BOOST trainer requires.
    """
    from trainers.data.schema import make_trajectory

    words = ["animal", "plant", "tool", "food", "vehicle"]
    return [
        make_trajectory(
            [
                {"role": "user", "content": f"is it an {words[(i + offset) % 5]}"},
                {"role": "assistant", "content": "yes " * (1 + (i + offset) % 3)},
                {"role": "user", "content": "no"},
                {"role": "assistant", "content": f"is it {words[i % 5]}"},
            ],
            [0.0, float((i + offset) % 2)],
            id=f"{source}-{offset}-{i}",
            source=source,
            metadata={"parent_id": f"real-0-{i % 8}"} if source == "synthetic" else None,
        )
        for i in range(n)
    ]
