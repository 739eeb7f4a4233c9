"""Value-guided generation through an unchanged ``model.generate``."""

import pytest
import torch
from transformers import LogitsProcessorList

from trainers.modeling import ValueGuidedLogitsProcessor, ValueHeadPolicy, ValueHeads


def _prompt(tokenizer):
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "is it an animal"}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(text, return_tensors="pt")


def _greedy(model, inputs, processors=None, n=6):
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=n,
            do_sample=False,
            logits_processor=processors,
            pad_token_id=model.config.pad_token_id,
        )
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def _biased_heads(model, loss_type, favoured, online_favoured=None, scale=50.0):
    heads = ValueHeads.for_model(model, loss_type=loss_type)
    with torch.no_grad():
        for p in heads.parameters():
            p.zero_()
        if loss_type == "mc":
            heads.q_heads[0].projection.bias[favoured] = scale
        else:
            for head in heads.target_q_heads:
                head.projection.bias[favoured] = scale
            for head in heads.q_heads:  # online heads must not be used for guidance
                head.projection.bias[online_favoured] = 10 * scale
            heads.v_head.projection.bias[0] = 3.0
    return heads


def test_beta_zero_reproduces_the_base_policy(tiny_llama, tiny_tokenizer):
    inputs = _prompt(tiny_tokenizer)
    base = _greedy(tiny_llama, inputs)
    heads = _biased_heads(tiny_llama, "mc", favoured=5)
    processor = ValueGuidedLogitsProcessor(heads, beta=0.0, model=tiny_llama)
    assert _greedy(tiny_llama, inputs, LogitsProcessorList([processor])) == base


@pytest.mark.parametrize("loss_type", ["mc", "ilql"])
def test_guidance_moves_greedy_generation_toward_high_value_tokens(tiny_llama, tiny_tokenizer, loss_type):
    inputs = _prompt(tiny_tokenizer)
    base = _greedy(tiny_llama, inputs)
    favoured = next(t for t in range(10, 400) if t not in base)
    avoided = next(t for t in range(10, 400) if t not in base and t != favoured)
    heads = _biased_heads(tiny_llama, loss_type, favoured, online_favoured=avoided)
    processor = ValueGuidedLogitsProcessor(heads, beta=1.0, model=tiny_llama)
    guided = _greedy(tiny_llama, inputs, LogitsProcessorList([processor]))
    assert guided == [favoured] * len(base)
    processor.detach()
    assert _greedy(tiny_llama, inputs) == base  # the hook is gone: the model is untouched


def test_guidance_is_the_documented_sum(tiny_llama):
    torch.manual_seed(0)
    heads = ValueHeads.for_model(tiny_llama, loss_type="ilql")
    with torch.no_grad():
        for p in heads.parameters():
            p.normal_(0, 0.1)
    processor = ValueGuidedLogitsProcessor(heads, beta=2.5, model=tiny_llama)
    ids = torch.tensor([[3, 9, 27, 4]])
    with torch.no_grad():
        out = tiny_llama(input_ids=ids, output_hidden_states=True)
        scores = processor(ids, out.logits[:, -1])
    hidden = out.hidden_states[-1][:, -1]
    expected = torch.log_softmax(out.logits[:, -1], -1) + 2.5 * heads.guidance_scores(hidden)
    assert torch.allclose(scores, expected, atol=1e-5)


def test_policy_generate_with_beta_and_errors(tiny_llama, tiny_tokenizer):
    inputs = _prompt(tiny_tokenizer)
    base = _greedy(tiny_llama, inputs)
    favoured = next(t for t in range(10, 400) if t not in base)
    policy = ValueHeadPolicy(tiny_llama, _biased_heads(tiny_llama, "mc", favoured))
    with torch.no_grad():
        out = policy.generate(**inputs, beta=1.0, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert out[0, -3:].tolist() == [favoured] * 3
    unattached = ValueGuidedLogitsProcessor(policy.heads, beta=1.0)
    with pytest.raises(RuntimeError, match="attach it"):
        unattached(inputs["input_ids"], torch.zeros(1, policy.heads.vocab_size))
    with pytest.raises(ValueError, match="needs ILQL heads"):
        ValueGuidedLogitsProcessor(policy.heads, mode="ilql")
    wrong = ValueHeads(tiny_llama.config.hidden_size, 7)
    with pytest.raises(ValueError, match="vocabulary size"):
        ValueGuidedLogitsProcessor(wrong, model=tiny_llama)
