"""Packed rows through FlexAttention (kernels/packed_attention.py) against the dense document mask and
against the same examples unpacked: same loss, same gradients; ordinary batches unchanged."""

import pytest
import torch

from strop.data import collate, pack
from strop.data.tokenize import IGNORE
from strop.kernels import packed_attention
from strop.models import load_model
from strop.objectives.base import model_inputs, shifted_token_logps

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def examples(lengths=(7, 13, 5, 21, 9, 3, 30, 17)):
    gen = torch.Generator().manual_seed(0)
    out = []
    for length in lengths:
        ids = torch.randint(3, 200, (length,), generator=gen).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE] * (length // 2) + ids[length // 2 :]})
    return out


def summed_nll(model, batch):
    logits = model(**model_inputs(batch, model)).logits
    logps, mask = shifted_token_logps(logits, batch["labels"])
    return -logps.sum()


def loss_and_grads(model, batch):
    model.zero_grad()
    loss = summed_nll(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_dense_mask_is_causal_within_segments_and_padding_attends_itself():
    mask = packed_attention.dense_document_mask(torch.tensor([[0, 0, 1, 1, 1, -1]]))[0, 0]
    assert mask[1].tolist() == [True, True, False, False, False, False]
    assert mask[4].tolist() == [False, False, True, True, True, False]
    assert mask[5].tolist() == [False, False, False, False, False, True]


def test_collate_leaves_the_mask_to_the_device():
    batch = collate(pack(examples(), sequence_len=32), pad_id=0)
    assert "attention_mask" not in batch and batch["segment_ids"].shape == batch["input_ids"].shape
    assert int((batch["segment_ids"] >= 0).sum()) == sum(len(e["input_ids"]) for e in examples())


def test_flex_path_matches_dense_mask_and_unpacked(tiny_model):
    """Forward only: FlexAttention has no backward on the CPU (the CUDA test below checks gradients)."""
    dense = load_model(str(tiny_model)).eval()
    flex = load_model(str(tiny_model)).eval()
    assert packed_attention.install(flex, force=True) and packed_attention.uses_flex(flex)
    assert not packed_attention.install(load_model(str(tiny_model)))  # CPU without force: left alone
    packed = collate(pack(examples(), sequence_len=32), pad_id=0)
    assert isinstance(model_inputs(packed, flex)["attention_mask"], torch.nn.attention.flex_attention.BlockMask)
    with torch.no_grad():
        want, got = summed_nll(dense, packed), summed_nll(flex, packed)
        unpacked = summed_nll(dense, collate(examples(), pad_id=0))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, unpacked, rtol=1e-5, atol=1e-4)


def test_installed_model_runs_padded_batches_as_sdpa(tiny_model):
    plain = load_model(str(tiny_model)).eval()
    switched = load_model(str(tiny_model)).eval()
    packed_attention.install(switched, force=True)
    batch = collate(examples(), pad_id=0)
    with torch.no_grad():
        want = plain(**model_inputs(batch, plain)).logits
        got = switched(**model_inputs(batch, switched)).logits
    torch.testing.assert_close(got, want)


def test_attention_dropout_keeps_the_dense_path(tiny_model):
    model = load_model(str(tiny_model))
    model.config.attention_dropout = 0.1
    assert not packed_attention.install(model, force=True)


@cuda
def test_cuda_packed_flex_matches_dense_and_unpacked(tiny_model):
    """On the GPU: the FlexAttention loss and gradients equal the dense mask's (fp32), and the packed
    loss equals the unpacked one within bf16 tolerance."""
    dense = load_model(str(tiny_model)).cuda()
    flex = load_model(str(tiny_model)).cuda()
    assert packed_attention.install(flex)
    exs = examples(lengths=(70, 130, 50, 210, 90, 30, 300, 170))
    packed = {k: v.cuda() for k, v in collate(pack(exs, sequence_len=320), pad_id=0).items()}
    want_loss, want_grads = loss_and_grads(dense, packed)
    got_loss, got_grads = loss_and_grads(flex, packed)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-4, atol=1e-3)
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], rtol=1e-3, atol=1e-4)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        unpacked = {k: v.cuda() for k, v in collate(exs, pad_id=0).items()}
        got, want = summed_nll(flex, packed), summed_nll(flex, unpacked)
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=1e-2)
