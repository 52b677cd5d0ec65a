"""NEFTune: α/sqrt(L·d) uniform noise on the input embeddings while training, never at eval/generation."""

import math

import pytest
import torch

from strop.strategies import STRATEGIES
from strop.strategies.neftune import _HOOK_ATTR, input_embeddings, install_neftune


def test_noise_is_uniform_with_the_paper_bound():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 48)
    ids = torch.randint(0, 50, (3, 37))  # odd length
    clean = emb(ids).detach()
    install_neftune_on = torch.nn.Module()
    install_neftune_on.get_input_embeddings = lambda: emb
    install_neftune(install_neftune_on, 5.0)
    noisy = emb(ids)
    bound = 5.0 / math.sqrt(37 * 48)
    delta = (noisy - clean).detach()
    assert delta.abs().max() <= bound * (1 + 1e-5)
    assert delta.abs().max() > 0.95 * bound  # uniform over the whole interval
    assert abs(delta.mean()) < 0.05 * bound and delta.std() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    # the hook passes gradients straight through to the embedding table
    noisy.sum().backward()
    assert emb.weight.grad.abs().sum() > 0
    install_neftune(install_neftune_on, None)
    torch.testing.assert_close(emb(ids), clean, rtol=0, atol=0)


def test_eval_no_grad_and_generation_are_clean(prepared):
    from strop.models.generate import answer_prompts

    run = prepared(adapter="lora", neftune_noise_alpha=50)
    emb = input_embeddings(run.model)
    assert getattr(emb, _HOOK_ATTR, None) is not None
    ids = torch.randint(3, 250, (2, 9))
    run.model.train()
    assert not torch.equal(run.model(ids).logits, run.model(ids).logits)  # noisy while training
    with torch.no_grad():  # reference log-probs / eval under no_grad: clean even in train mode
        torch.testing.assert_close(run.model(ids).logits, run.model(ids).logits, rtol=0, atol=0)
    run.model.eval()
    torch.testing.assert_close(run.model(ids).logits, run.model(ids).logits, rtol=0, atol=0)
    run.model.train()
    prompts = ["Say fox", "What is two plus two?"]
    noisy_model_answers = answer_prompts(run.model, run.tokenizer, prompts, 6)
    install_neftune(run.model, None)
    assert answer_prompts(run.model, run.tokenizer, prompts, 6) == noisy_model_answers


@pytest.mark.parametrize("strategy", sorted(set(STRATEGIES) - {"bitfit"}))
def test_installed_for_every_strategy(prepared, strategy):
    if strategy in ("qlora",):
        pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes")
    run = prepared(
        adapter=strategy,
        neftune_noise_alpha=5,
        num_virtual_tokens=2,
        lisa_n_layers=1,
        spectrum_top_fraction=0.5,
        galore_rank=4,
    )
    assert getattr(input_embeddings(run.model), _HOOK_ATTR, None) is not None


def test_off_by_default(prepared):
    run = prepared(adapter="full")
    assert getattr(input_embeddings(run.model), _HOOK_ATTR, None) is None
