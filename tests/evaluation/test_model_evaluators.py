"""Evaluators that read a model's log-probs (perplexity, implicit preference reward), against values
computed here by hand or from a plain forward pass written in the test."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from strop.evaluation import Subject, build_evaluators
from strop.evaluation.base import ModelGenerator


class UniformModel(torch.nn.Module):
    """Logits all zero: every next token has probability 1/V, so perplexity is exactly V."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab) + 0 * self.weight)


class CharTokenizer:
    pad_token_id = 0

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [1 + ord(c) % 50 for c in text]}


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(tmp_path):
    data = tmp_path / "general.txt"
    data.write_text("abcdefghij\n\nxyz\n\nq")  # windows of 4: abcd efgh ij | xyz | (q: nothing to predict)
    [evaluator] = build_evaluators([{"type": "perplexity", "data": str(data), "max_length": 4, "batch_size": 2}])
    result = evaluator(Subject(UniformModel(64), CharTokenizer(), None))
    # predicted tokens: 3 + 3 + 1 + 2 = 9, each with NLL ln 64
    assert result.metrics["perplexity/tokens"] == 9
    assert result.metrics["perplexity/perplexity"] == pytest.approx(64.0)
    assert result.metrics["perplexity/nll_per_token"] == pytest.approx(math.log(64))


def test_perplexity_matches_a_plain_forward_pass(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    texts = ["The quick brown fox jumps over the lazy dog.", "hello world hello"]
    data = tmp_path / "general.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    [evaluator] = build_evaluators([{"type": "perplexity", "data": str(data)}])
    got = evaluator(Subject(model, tokenizer, None)).metrics["perplexity/perplexity"]
    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            logps = model(ids).logits[0, :-1].log_softmax(-1).gather(1, ids[0, 1:, None])
            total, count = total - float(logps.sum()), count + ids.shape[1] - 1
    assert got == pytest.approx(math.exp(total / count), rel=1e-5)


def test_implicit_preference_reward_against_direct_log_probs(tiny_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(3)
    policy = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    pairs = [
        {"prompt": "What is two plus two?", "chosen": "Four.", "rejected": "The lazy dog."},
        {"prompt": "Classify the sentiment of this review.", "chosen": "Sentiment: positive", "rejected": "hello"},
    ]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    [evaluator] = build_evaluators([{"type": "preference", "data": str(data), "beta": 0.5, "batch_size": 1}])
    metrics = evaluator(Subject(policy, tokenizer, None)).metrics

    def reply_logp(model, prompt, reply):
        messages = [{"role": "user", "content": prompt}]
        prefix = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": reply}], tokenize=False)
        p_ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p_ids + tokenizer(full[len(prefix) :], add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logps = model(ids).logits[0, :-1].float().log_softmax(-1).gather(1, ids[0, 1:, None])[:, 0]
        return float(logps[len(p_ids) - 1 :].sum())

    margins = []
    for pair in pairs:
        rewards = []
        for side in ("chosen", "rejected"):
            policy_logp = reply_logp(policy, pair["prompt"], pair[side])
            with policy.disable_adapter():
                reference_logp = reply_logp(policy, pair["prompt"], pair[side])
            rewards.append(0.5 * (policy_logp - reference_logp))
        margins.append(rewards[0] - rewards[1])
    assert metrics["preference/margin"] == pytest.approx(sum(margins) / 2, abs=1e-4)
    assert metrics["preference/accuracy"] == sum(m > 0 for m in margins) / 2
    assert any(abs(m) > 1e-3 for m in margins)  # the adapter moved something: the test can fail


def test_model_generator_batches_and_repeats(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(tiny_model)
    generate = ModelGenerator(model, tokenizer, batch_size=2, seed=1)
    conversations = [[{"role": "user", "content": "hello"}], [{"role": "user", "content": "fox"}]]
    greedy = generate(conversations, n=2, temperature=0.0, max_new_tokens=4)
    assert [len(r) for r in greedy] == [2, 2] and greedy[0][0] == greedy[0][1]
    assert generate(conversations, n=3, temperature=1.0, max_new_tokens=4) == generate(
        conversations, n=3, temperature=1.0, max_new_tokens=4
    )
