"""The rollout engine against transformers' generate, and its sampling controls."""

from __future__ import annotations

import pytest
import torch

from strop.rl.rollout import SamplingParams, filter_logits, sample


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model)


PROMPTS = ["The quick brown", "hello", "Sentiment: positive and more words"]


def encode(tokenizer, texts):
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_greedy_matches_transformers_generate(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompts = encode(tok, PROMPTS)  # different lengths: left padding and positions must be right
    ours = sample(model, tok, prompts, SamplingParams(max_new_tokens=12, temperature=0))
    for prompt, completion in zip(prompts, ours):
        reference = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=12,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )[0, len(prompt) :].tolist()
        assert completion.ids == reference[: len(completion.ids)]
        assert completion.finished == (tok.eos_token_id in reference)
        assert len(completion.ids) == 12 or completion.finished


def test_groups_are_consecutive_and_seeded(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompts = encode(tok, PROMPTS[:2])
    params = SamplingParams(max_new_tokens=10, temperature=1.5)
    first = sample(model, tok, prompts, params, n=4, generator=torch.Generator().manual_seed(3))
    again = sample(model, tok, prompts, params, n=4, generator=torch.Generator().manual_seed(3))
    assert len(first) == 8 and [c.ids for c in first] == [c.ids for c in again]
    assert len({tuple(c.ids) for c in first[:4]}) > 1  # a group samples different completions
    assert model.training is False


def test_top_k_one_is_greedy(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompts = encode(tok, PROMPTS)
    greedy = sample(model, tok, prompts, SamplingParams(max_new_tokens=8, temperature=0))
    top1 = sample(
        model,
        tok,
        prompts,
        SamplingParams(max_new_tokens=8, temperature=1.0, top_k=1),
        generator=torch.Generator().manual_seed(0),
    )
    assert [c.ids for c in greedy] == [c.ids for c in top1]


def test_filter_logits_top_p_keeps_the_smallest_covering_set():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = filter_logits(logits, 0, 0.7).isfinite()
    assert kept.tolist() == [[True, True, False, False]]  # 0.5 < 0.7 ≤ 0.8
    assert filter_logits(logits, 2, 1.0).isfinite().tolist() == [[True, True, False, False]]


def test_stop_strings_end_and_cut_the_completion(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompts = encode(tok, PROMPTS)
    free = sample(model, tok, prompts, SamplingParams(max_new_tokens=16, temperature=0))
    text = next(c.text for c in free if len(c.text) > 4)
    stop = text[2:4]
    cut = sample(model, tok, prompts, SamplingParams(max_new_tokens=16, temperature=0, stop_strings=(stop,)))
    for before, after in zip(free, cut):
        if stop in before.text:
            assert after.finished and stop not in after.text and before.text.startswith(after.text)
            assert len(after.ids) < len(before.ids) or before.ids[-1] == tok.eos_token_id


def test_prompt_tuning_samples_through_generate(tiny_model, model_and_tokenizer):
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    _, tok = model_and_tokenizer
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3),
    )
    out = sample(
        peft_model,
        tok,
        encode(tok, PROMPTS[:2]),
        SamplingParams(max_new_tokens=5, temperature=1.0),
        n=2,
        generator=torch.Generator().manual_seed(0),
    )
    assert len(out) == 4 and all(1 <= len(c.ids) <= 5 for c in out)


def test_static_decoder_matches_the_eager_one(model_and_tokenizer):
    """The CUDA path's static cache and 4-D masks, run eagerly: same tokens as the growing-cache decoder,
    with left padding (prompts of different lengths) and groups."""
    from strop.rl.rollout import _sample_with_cache, _sample_with_graph

    model, tok = model_and_tokenizer
    prompts = encode(tok, PROMPTS)
    params = SamplingParams(max_new_tokens=10, temperature=0)
    eager = _sample_with_cache(model, tok, prompts, params, 2, None)
    static = _sample_with_graph(model, tok, prompts, params, 2, None, capture=False)
    assert [c.ids for c in static] == [c.ids for c in eager]
    sampled = SamplingParams(max_new_tokens=10, temperature=1.0)
    eager = _sample_with_cache(model, tok, prompts, sampled, 2, torch.Generator().manual_seed(1))
    static = _sample_with_graph(model, tok, prompts, sampled, 2, torch.Generator().manual_seed(1), capture=False)
    assert [c.ids for c in static] == [c.ids for c in eager]


@pytest.mark.parametrize("masked", [False, True])
def test_grouped_decode_attention_equals_sdpa_with_repeated_heads(masked):
    """One-token queries of grouped-query attention, the query heads folded onto their key/value head:
    the same output as SDPA over key/value heads repeated per query head."""
    from types import SimpleNamespace

    from strop.rl.rollout import _grouped_decode_sdpa

    torch.manual_seed(0)
    query, key, value = torch.randn(3, 8, 1, 16), torch.randn(3, 2, 20, 16), torch.randn(3, 2, 20, 16)
    mask = torch.rand(3, 1, 1, 24) > 0.3 if masked else None
    if mask is not None:
        mask[..., 0] = True
    out, _ = _grouped_decode_sdpa(SimpleNamespace(num_key_value_groups=4), query, key, value, mask, scaling=0.3)
    expected = torch.nn.functional.scaled_dot_product_attention(
        query,
        key.repeat_interleave(4, 1),
        value.repeat_interleave(4, 1),
        attn_mask=None if mask is None else mask[..., :20],
        scale=0.3,
    )
    assert out.shape == (3, 1, 8, 16)
    torch.testing.assert_close(out, expected.transpose(1, 2))


def test_grouped_decode_attention_switches_sdpa_and_restores_it(model_and_tokenizer):
    """The static decoder under the switch gives the eager decoder's tokens, and the model's attention
    setting is back to SDPA afterwards (also when the body raises)."""
    from strop.rl.rollout import GROUPED_DECODE, _sample_with_cache, _sample_with_graph, grouped_decode_attention

    model, tok = model_and_tokenizer
    prompts = encode(tok, PROMPTS)
    params = SamplingParams(max_new_tokens=10, temperature=0)
    with grouped_decode_attention(model):
        assert model.config._attn_implementation == GROUPED_DECODE
        static = _sample_with_graph(model, tok, prompts, params, 2, None, capture=False)
    assert [c.ids for c in static] == [c.ids for c in _sample_with_cache(model, tok, prompts, params, 2, None)]
    with pytest.raises(RuntimeError), grouped_decode_attention(model):
        raise RuntimeError
    assert model.config._attn_implementation == "sdpa"
