"""strop's LoRA node, checkpointing and patch_model change no math: losses and gradients match PEFT's
unpatched model on a tiny Llama."""

import copy

import pytest
import torch

from strop.kernels import KernelOptions, causal_lm_loss, lora_linear, patch_model


def test_lora_linear_matches_formula_and_grads():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 13, dtype=torch.float64, requires_grad=True)
    w = torch.randn(11, 13, dtype=torch.float64)
    bias = torch.randn(11, dtype=torch.float64, requires_grad=True)
    a = torch.randn(3, 13, dtype=torch.float64, requires_grad=True)
    b = torch.randn(11, 3, dtype=torch.float64, requires_grad=True)
    y = lora_linear(x, w, bias, a, b, 2.5)
    ref = x @ w.t() + bias + 2.5 * (x @ a.t()) @ b.t()
    assert torch.allclose(y, ref)
    dy = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, bias, a, b), dy)
    want = torch.autograd.grad(ref, (x, bias, a, b), dy)
    for g1, g2 in zip(got, want):
        assert torch.allclose(g1, g2)


def tiny_lora_model(seed=0):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=97,
        max_position_embeddings=64,
    )
    model = LlamaForCausalLM(cfg)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)  # non-zero B so the adapter path is exercised
    return model


def lora_grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("checkpoint,group", [(None, False), ("gpu", True), ("offload", True), (None, True)])
def test_patched_model_matches_peft(checkpoint, group):
    ref = tiny_lora_model()
    ours = copy.deepcopy(ref)
    counts = patch_model(ours, KernelOptions(checkpoint=checkpoint, group=group))
    assert counts["rms_norm"] == 5 and counts["swiglu"] == 2
    assert (counts["lora"], counts.get("groups", 0)) == ((8, 4) if group else (14, 0))
    assert counts["checkpoint"] == (2 if checkpoint else 0)
    ids = torch.randint(0, 97, (2, 11))
    labels = ids.clone()
    labels[0, :3] = -100
    ref.train(), ours.train()
    loss_ref = ref(input_ids=ids, labels=labels).loss
    loss_ref.backward()
    loss = causal_lm_loss(ours, ids, labels)
    loss.backward()
    assert torch.allclose(loss, loss_ref, rtol=1e-5)
    g_ref, g = lora_grads(ref), lora_grads(ours)
    assert g_ref.keys() == g.keys()
    for name in g:
        assert torch.allclose(g[name], g_ref[name], rtol=1e-4, atol=1e-6), name


def test_group_weights_share_storage_and_fall_back():
    model = tiny_lora_model()
    patch_model(model, KernelOptions(checkpoint=None))
    attn = model.get_base_model().model.layers[0].self_attn
    group = attn.q_proj._strop_group
    assert attn.k_proj.base_layer.weight.data_ptr() == group.w_cat[64:].data_ptr()
    ids = torch.randint(0, 97, (1, 5))
    before = causal_lm_loss(model, ids, ids)
    attn.k_proj.lora_dropout["default"] = torch.nn.Dropout(0.0)  # no longer plain: the PEFT path runs
    assert not group.usable()
    assert torch.allclose(causal_lm_loss(model, ids, ids), before, rtol=1e-5)


def test_full_finetune_patch_matches():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=53,
        tie_word_embeddings=True,
    )
    ref = LlamaForCausalLM(cfg)
    ours = copy.deepcopy(ref)
    patch_model(ours)
    ids = torch.randint(0, 53, (3, 9))
    ref(input_ids=ids, labels=ids).loss.backward()
    causal_lm_loss(ours, ids, ids).backward()
    for (n, p), (_, q) in zip(ref.named_parameters(), ours.named_parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), n


def test_eval_mode_and_no_grad_skip_checkpoint():
    model = tiny_lora_model()
    patch_model(model)
    model.eval()
    ids = torch.randint(0, 97, (1, 6))
    with torch.no_grad():
        assert torch.isfinite(causal_lm_loss(model, ids, ids))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("checkpoint", ["gpu", "offload"])
def test_patched_model_matches_peft_cuda(checkpoint):
    ref = tiny_lora_model().cuda()
    ours = copy.deepcopy(ref)
    patch_model(ours, KernelOptions(checkpoint=checkpoint, bf16_frozen=False))
    ids = torch.randint(0, 97, (2, 11), device="cuda")
    for _ in range(2):  # twice: the offload prefetch chain crosses steps
        ref.zero_grad(), ours.zero_grad()
        loss_ref = ref(input_ids=ids, labels=ids).loss
        loss_ref.backward()
        loss = causal_lm_loss(ours, ids, ids)
        loss.backward()
        assert torch.allclose(loss, loss_ref, rtol=1e-4)
        g_ref, g = lora_grads(ref), lora_grads(ours)
        for name in g:
            assert torch.allclose(g[name], g_ref[name], rtol=1e-3, atol=1e-5), name
