"""strop's fused LoRA node on QLoRA's bitsandbytes 4-bit bases (NF4, double quantization) computes what
PEFT's bnb path computes: the same loss and LoRA gradients, ungrouped and with q/k/v and gate/up grouped,
and the packed weights stay as they were (never concatenated, never given a gradient)."""

import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")

from strop.kernels import KernelOptions, causal_lm_loss, patch_model  # noqa: E402
from strop.kernels.lora import _plain_lora  # noqa: E402

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


def tiny_qlora_model(device: str, dtype: torch.dtype):
    """A tiny Llama whose decoder linears are Linear4bit (NF4, double quantization), PEFT LoRA on top;
    built from one seed, so two calls give the same model."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=97,
        max_position_embeddings=64,
    )
    model = LlamaForCausalLM(cfg).to(dtype)
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, lin in list(parent.named_children()):
                if not isinstance(lin, torch.nn.Linear):
                    continue
                q = bnb.nn.Linear4bit(
                    lin.in_features,
                    lin.out_features,
                    bias=False,
                    compute_dtype=dtype,
                    compress_statistics=True,
                    quant_type="nf4",
                    quant_storage=torch.uint8,
                    device="meta",
                )
                q.weight = bnb.nn.Params4bit(
                    lin.weight.data,
                    requires_grad=False,
                    compress_statistics=True,
                    quant_type="nf4",
                    quant_storage=torch.uint8,
                    module=q,
                ).to(device)
                setattr(parent, name, q)
    model.to(device)
    model.is_loaded_in_4bit = True
    model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)  # non-zero B so the adapter path is exercised
    return model


def loss_and_grads(model, ids, fused: bool):
    model.train()
    loss = causal_lm_loss(model, ids, ids) if fused else model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach().float(), {n: p.grad.float() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("group", [False, True])
def test_fused_4bit_lora_matches_peft_bnb(device, group):
    ref, ours = tiny_qlora_model(device, torch.float32), tiny_qlora_model(device, torch.float32)
    q_proj = ours.get_base_model().model.layers[0].self_attn.q_proj
    packed = q_proj.base_layer.weight.data.clone()
    counts = patch_model(ours, KernelOptions(checkpoint="gpu", group=group, bf16_frozen=False))
    assert (counts["lora"], counts.get("groups", 0)) == ((8, 4) if group else (14, 0))
    ids = torch.randint(0, 97, (2, 11), device=device)
    loss_ref, g_ref = loss_and_grads(ref, ids, fused=False)
    loss, g = loss_and_grads(ours, ids, fused=True)
    loose = device == "cuda"  # the CUDA loss is the Triton cross-entropy, the matmuls cuBLAS's
    torch.testing.assert_close(loss, loss_ref, rtol=1e-4 if loose else 1e-5, atol=1e-6)
    assert g.keys() == g_ref.keys()
    for name in g:
        torch.testing.assert_close(
            g[name], g_ref[name], rtol=1e-3 if loose else 1e-4, atol=1e-5 if loose else 1e-6, msg=name
        )
    weight = q_proj.base_layer.weight
    assert weight.dtype == torch.uint8 and weight.grad is None and torch.equal(weight.data, packed)
    if group:
        assert q_proj._strop_group.w_cat is None


def test_cpu_inference_layout_keeps_peft_forward():
    """Linear4bit's CPU inference path (eval mode, input without grad, AVX512-BF16 CPU) re-lays a packed
    weight out in place and flags its state `packing_format_for_cpu`; dequantize_4bit misreads that
    layout, so a layer so flagged, and its q/k/v group, must fall back to PEFT's forward."""
    model = tiny_qlora_model("cpu", torch.float32)
    patch_model(model, KernelOptions(checkpoint=None, bf16_frozen=False))
    attn = model.get_base_model().model.layers[0].self_attn
    assert _plain_lora(attn.k_proj) == "default" and attn.q_proj._strop_group.usable()
    attn.k_proj.base_layer.weight.quant_state.packing_format_for_cpu = True
    assert _plain_lora(attn.k_proj) is None and not attn.q_proj._strop_group.usable()


def test_patched_eval_after_bnb_cpu_relayout_matches_peft():
    """The real case, where this CPU takes bnb's path: a no-grad evaluation before patching re-lays the
    weights out, and the model patched afterwards still computes PEFT's numbers."""
    model = tiny_qlora_model("cpu", torch.float32).eval()
    ids = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        before = model(input_ids=ids, labels=ids).loss
        state = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight.quant_state
        if not getattr(state, "packing_format_for_cpu", False):
            pytest.skip("bitsandbytes did not re-lay the weights out on this CPU")
        patch_model(model, KernelOptions(checkpoint=None, bf16_frozen=False))
        after = model(input_ids=ids, labels=ids).loss
    torch.testing.assert_close(after, before, rtol=1e-6, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_4bit_lora_matches_peft_bnb_in_bf16():
    """The benchmark's setting: bf16 activations and compute; PEFT keeps the adapter math in fp32, the
    fused node in bf16, so they agree to bf16 rounding."""
    ref, ours = tiny_qlora_model("cuda", torch.bfloat16), tiny_qlora_model("cuda", torch.bfloat16)
    patch_model(ours, KernelOptions(checkpoint="gpu"))
    ids = torch.randint(0, 97, (2, 11), device="cuda")
    loss_ref, g_ref = loss_and_grads(ref, ids, fused=False)
    loss, g = loss_and_grads(ours, ids, fused=True)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-2, atol=1e-2)
    for name in g:
        err = (g[name] - g_ref[name]).norm() / g_ref[name].norm()
        assert err < 3e-2, (name, float(err))
