"""Reweighting head (uniform start, softmax per batch, save/load, mismatch errors) and the embedding cache."""

import hashlib
import json

import pytest
import torch

from trainers.data.schema import make_trajectory
from trainers.embedding_cache import CACHE_FORMAT_VERSION, TrajectoryEmbeddingCache, model_fingerprint
from trainers.modeling.reweighting_head import ReweightingHead, ReweightingHeadMismatchError, effective_sample_size


def test_first_weights_uniform_and_sum_to_one():
    torch.manual_seed(0)
    for depth in (1, 2, 4):
        head = ReweightingHead(16, depth=depth, hidden_dim=8)
        weights = head.normalized_weights(torch.randn(7, 16))
        assert torch.allclose(weights, torch.full((7,), 1 / 7))
        assert effective_sample_size(weights) == pytest.approx(7.0)
    assert sum(isinstance(m, torch.nn.Linear) for m in ReweightingHead(16, depth=4).modules()) == 4


def test_weights_move_with_training_and_still_sum_to_one():
    torch.manual_seed(0)
    head = ReweightingHead(4, depth=2, hidden_dim=8)
    embeddings = torch.randn(6, 4)
    losses = torch.arange(6, dtype=torch.float32)  # prefer low-loss rows
    optimizer = torch.optim.SGD(head.parameters(), lr=0.5)
    for _ in range(20):
        optimizer.zero_grad()
        (head.normalized_weights(embeddings) * losses).sum().backward()
        optimizer.step()
    weights = head.normalized_weights(embeddings)
    assert weights.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert weights[0] > weights[-1]
    assert effective_sample_size(weights) < 6.0


def test_save_load_roundtrip_and_card(tmp_path):
    torch.manual_seed(0)
    head = ReweightingHead(12, depth=4, hidden_dim=8, base_model_id="org/base", embedding_fingerprint="f00")
    torch.nn.init.normal_(head.mlp[-1].weight)
    head.save_pretrained(tmp_path / "head")
    assert sorted(p.name for p in (tmp_path / "head").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "head" / "config.json").read_text())
    assert config["embedding_dim"] == 12 and config["base_model_id"] == "org/base" and config["depth"] == 4
    card = (tmp_path / "head" / "README.md").read_text()
    assert "org/base" in card and "{{" not in card
    loaded = ReweightingHead.from_pretrained(
        tmp_path / "head", expected_base_model="org/base", expected_embedding_dim=12
    )
    x = torch.randn(3, 12)
    assert torch.equal(loaded(x), head(x))
    # saving again over the same folder replaces it atomically, no leftovers beside it
    head.save_pretrained(tmp_path / "head")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head"]


def _shared_direction_embeddings(rows=40, width=6):
    """Embeddings like a frozen LM's: one large shared offset, small spread, one wide channel (an NLL)."""
    torch.manual_seed(1)
    spread = torch.randn(rows, width) * 0.2
    spread[:, -1] *= 20.0
    return spread + torch.tensor([27.0, -3.0, 5.0, 1.0, 0.0, 2.0])


def test_center_removes_the_shared_direction_and_keeps_channel_proportions():
    embeddings = _shared_direction_embeddings()
    head = ReweightingHead(6, depth=1)
    head.fit_input_normalization(embeddings, mode="center")
    seen = (embeddings - head.input_mean) / head.input_scale
    assert torch.allclose(seen.mean(0), torch.zeros(6), atol=1e-5)
    assert torch.allclose(seen.std(0).pow(2).mean(), torch.tensor(1.0), atol=1e-4)
    # one scale for every channel: the wide channel stays ~20x wider than the others
    assert torch.allclose(seen.std(0) / embeddings.std(0), (seen.std(0) / embeddings.std(0))[0].expand(6))
    assert seen.std(0)[-1] > 10 * seen.std(0)[:-1].max()
    # the head reads the normalised input: a linear head's logit equals its layer applied to it
    torch.nn.init.normal_(head.mlp[-1].weight)
    assert torch.allclose(head(embeddings), head.mlp(seen).squeeze(-1), atol=1e-5)


def test_standardize_gives_every_channel_unit_spread_and_floors_a_constant_one():
    embeddings = _shared_direction_embeddings()
    embeddings[:, 1] = 4.0  # a channel that never varies in training
    head = ReweightingHead(6, depth=1)
    head.fit_input_normalization(embeddings, mode="standardize")
    seen = ((embeddings - head.input_mean) / head.input_scale).std(0)
    assert torch.allclose(seen[[0, 2, 3, 4, 5]], torch.ones(5), atol=1e-4)
    assert head.input_scale[1] > 0 and seen[1] == 0
    with pytest.raises(ValueError, match="mode must be one of"):
        head.fit_input_normalization(embeddings, mode="whiten")
    with pytest.raises(ReweightingHeadMismatchError, match="at least 2 embeddings of width 6"):
        head.fit_input_normalization(embeddings[:1])


def test_fitted_normalization_is_saved_with_the_head_and_old_heads_load_without_it(tmp_path):
    embeddings = _shared_direction_embeddings()
    head = ReweightingHead(6, depth=2, hidden_dim=8)
    head.fit_input_normalization(embeddings)
    torch.nn.init.normal_(head.mlp[-1].weight)
    head.save_pretrained(tmp_path / "head")
    loaded = ReweightingHead.from_pretrained(tmp_path / "head")
    assert torch.equal(loaded.input_mean, head.input_mean) and torch.equal(loaded.input_scale, head.input_scale)
    assert torch.equal(loaded(embeddings), head(embeddings))
    # a head saved before the normalisation existed has no such tensors: it loads as the identity
    from safetensors.torch import load_file, save_file

    weights = load_file(tmp_path / "head" / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("input_")}, tmp_path / "head" / "model.safetensors")
    old = ReweightingHead.from_pretrained(tmp_path / "head")
    assert torch.equal(old.input_mean, torch.zeros(6)) and torch.equal(old.input_scale, torch.ones(6))
    assert torch.equal(old(embeddings), old.mlp(embeddings).squeeze(-1))


def test_mismatched_embedding_model_is_refused(tmp_path):
    head = ReweightingHead(12, base_model_id="org/base", embedding_fingerprint="f00")
    head.save_pretrained(tmp_path / "head")
    with pytest.raises(ReweightingHeadMismatchError, match="org/other"):
        ReweightingHead.from_pretrained(tmp_path / "head", expected_base_model="org/other")
    with pytest.raises(ReweightingHeadMismatchError, match="64-dim"):
        ReweightingHead.from_pretrained(tmp_path / "head", expected_embedding_dim=64)
    with pytest.raises(ReweightingHeadMismatchError, match="fingerprint"):
        ReweightingHead.from_pretrained(tmp_path / "head", expected_fingerprint="beef")
    with pytest.raises(ReweightingHeadMismatchError, match="shape"):
        head(torch.randn(2, 5))


def _rows(n):
    return [
        make_trajectory(
            [
                {"role": "user", "content": f"is it an animal {i}"},
                {"role": "assistant", "content": "yes" * (1 + i % 3)},
            ],
            [float(i % 2)],
            id=f"t{i}",
        )
        for i in range(n)
    ]


def test_embedding_cache_is_reused_without_forward(tmp_path, tiny_llama, tiny_tokenizer):
    rows = _rows(5)
    first = TrajectoryEmbeddingCache(tmp_path, batch_size=2)
    embeddings = first.embed(tiny_llama, tiny_tokenizer, rows, model_id="tiny", show_progress=False)
    assert embeddings.shape == (5, tiny_llama.config.hidden_size)
    assert first.forward_passes == 3
    calls = []
    hook = tiny_llama.register_forward_hook(lambda *a: calls.append(1))
    second = TrajectoryEmbeddingCache(tmp_path, batch_size=2)
    again = second.embed(tiny_llama, tiny_tokenizer, rows, model_id="tiny", show_progress=False)
    hook.remove()
    assert second.forward_passes == 0 and calls == []
    assert torch.equal(again, embeddings)
    # other data -> another file, computed again
    third = TrajectoryEmbeddingCache(tmp_path, batch_size=2)
    third.embed(tiny_llama, tiny_tokenizer, rows[:3], model_id="tiny", show_progress=False)
    assert third.forward_passes == 2
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_bf16_embeddings_run_under_autocast_and_have_their_own_cache_file(tmp_path, tiny_llama, tiny_tokenizer):
    rows = _rows(3)
    seen = []
    hook = tiny_llama.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    fp32 = TrajectoryEmbeddingCache(tmp_path, batch_size=3, pooling="action_mean_nll")
    bf16 = TrajectoryEmbeddingCache(tmp_path, batch_size=3, pooling="action_mean_nll", dtype=torch.bfloat16)
    exact = fp32.embed(tiny_llama, tiny_tokenizer, rows, model_id="tiny", show_progress=False)
    fast = bf16.embed(tiny_llama, tiny_tokenizer, rows, model_id="tiny", show_progress=False)
    hook.remove()
    assert seen == [torch.float32, torch.bfloat16]
    assert bf16.forward_passes == 1  # the fp32 file is not reused for a bf16 request
    assert fast.dtype == torch.float32 and len(list(tmp_path.glob("*.safetensors"))) == 2
    assert torch.nn.functional.cosine_similarity(exact[:, :-2], fast[:, :-2]).min() > 0.99
    # fp32 keeps the key it had before a precision could be chosen (caches written then stay valid)
    before = hashlib.sha256(f"v{CACHE_FORMAT_VERSION}|tiny|f|d|1024|action_mean_nll".encode()).hexdigest()[:24]
    assert fp32.key("tiny", "f", "d") == before != bf16.key("tiny", "f", "d")
    with pytest.raises(ValueError, match="dtype"):
        TrajectoryEmbeddingCache(tmp_path, dtype=torch.float16)


def test_embedding_is_last_token_hidden_state(tmp_path, tiny_llama, tiny_tokenizer):
    rows = _rows(3)
    embeddings = TrajectoryEmbeddingCache(tmp_path, batch_size=3).embed(
        tiny_llama, tiny_tokenizer, rows, model_id="tiny", show_progress=False
    )
    text = tiny_tokenizer.apply_chat_template(rows[1]["messages"], tokenize=False)
    ids = torch.tensor([tiny_tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        hidden = tiny_llama(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
    assert torch.allclose(embeddings[1], hidden, atol=1e-5)


def test_fingerprint_changes_with_weights(tiny_llama):
    before = model_fingerprint(tiny_llama)
    with torch.no_grad():
        tiny_llama.lm_head.weight.add_(0.01)
    assert model_fingerprint(tiny_llama) != before


def test_action_pooling_with_nll_matches_a_direct_computation(tmp_path, tiny_llama, tiny_tokenizer):
    from trainers.data.tokenization import prepare_tokenizer, tokenize_trajectory

    tokenizer = prepare_tokenizer(tiny_tokenizer)
    rows = _rows(3)
    pooled = TrajectoryEmbeddingCache(tmp_path, batch_size=2, pooling="action_mean_nll").embed(
        tiny_llama, tokenizer, rows, model_id="tiny", show_progress=False
    )
    assert pooled.shape == (3, tiny_llama.config.hidden_size + 2)
    row = rows[2]
    tokens = tokenize_trajectory(row["messages"], row["rewards"], tokenizer)
    ids = torch.tensor([tokens["input_ids"]])
    actions = torch.tensor(tokens["action_mask"]).bool()
    with torch.no_grad():
        output = tiny_llama(input_ids=ids, output_hidden_states=True)
    hidden = output.hidden_states[-1][0]
    nll = -torch.log_softmax(output.logits[0, :-1].float(), -1).gather(1, ids[0, 1:, None])[:, 0][actions[1:]]
    assert torch.allclose(pooled[2, :-2], hidden[actions].mean(0), atol=1e-5)
    assert torch.allclose(pooled[2, -2:], torch.stack([nll.mean(), nll.max()]), atol=1e-4)
    # with the context: the same action mean, then the mean over every token, then the same two numbers
    context = TrajectoryEmbeddingCache(tmp_path, batch_size=2, pooling="action_context_nll").embed(
        tiny_llama, tokenizer, rows, model_id="tiny", show_progress=False
    )
    width = tiny_llama.config.hidden_size
    assert context.shape == (3, 2 * width + 2)
    assert torch.allclose(context[2, :width], pooled[2, :width], atol=1e-5)
    assert torch.allclose(context[2, width:-2], hidden.mean(0), atol=1e-5)
    assert torch.allclose(context[2, -2:], pooled[2, -2:], atol=1e-5)
    # a different pooling is a different cache entry, not a reuse of the last-token file
    last = TrajectoryEmbeddingCache(tmp_path, batch_size=2).embed(
        tiny_llama, tokenizer, rows, model_id="tiny", show_progress=False
    )
    assert last.shape == (3, tiny_llama.config.hidden_size)
