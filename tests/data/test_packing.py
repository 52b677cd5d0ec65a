import random

import torch

from strop.data import collate, pack
from strop.data.packing import PACKED_MULTIPLE, drop_capacity
from strop.data.tokenize import IGNORE
from strop.models import load_model
from strop.objectives.base import model_inputs, shifted_token_logps


def examples():
    gen = torch.Generator().manual_seed(0)
    out = []
    for length in (7, 13, 5, 21, 9, 3):
        ids = torch.randint(3, 200, (length,), generator=gen).tolist()
        labels = [IGNORE] * (length // 2) + ids[length // 2 :]
        out.append({"input_ids": ids, "labels": labels})
    return out


def nll(model, batch):
    with torch.no_grad():
        logits = model(**model_inputs(batch)).logits
    logps, mask = shifted_token_logps(logits, batch["labels"])
    return -logps.sum(), int(mask.sum())


def test_packing_fills_rows_and_restarts_positions():
    rows = pack(examples(), sequence_len=32)
    assert all(len(r["input_ids"]) <= 32 for r in rows)
    assert sum(len(r["input_ids"]) for r in rows) == sum(len(e["input_ids"]) for e in examples())
    assert len(rows) == 2  # 58 tokens: best fit puts 21+9 and 13+7+5+3 together
    assert rows[0]["position_ids"] == list(range(21)) + list(range(9))
    assert rows[0]["segment_ids"] == [0] * 21 + [1] * 9


def test_packing_wastes_at_most_one_row():
    """Random documents of 100-1,500 tokens (the GPU benchmark's packed data): best-fit decreasing needs one
    row more than the token count's bound; first-fit in arrival order needed five more (161 for 156)."""
    rng = random.Random(0)
    docs = [{"input_ids": [5] * n, "labels": [5] * n} for n in (rng.randint(100, 1500) for _ in range(400))]
    rows = pack(docs, sequence_len=2048)
    total = sum(len(d["input_ids"]) for d in docs)
    assert sum(len(r["input_ids"]) for r in rows) == total
    assert len(rows) <= -(-total // 2048) + 1


def test_packed_batches_pad_to_capacity_unless_dropped():
    """CUDA (FlexAttention, compiled) pads every packed micro-batch to the capacity, one shape for all; the
    dense-mask path pads to the longest row, rounded up to the tile."""
    rows = pack(examples(), sequence_len=1024)
    assert collate(rows, 0)["input_ids"].shape[1] == 1024
    drop_capacity(rows)
    longest = max(len(r["input_ids"]) for r in rows)
    assert collate(rows, 0)["input_ids"].shape[1] == -(-longest // PACKED_MULTIPLE) * PACKED_MULTIPLE < 1024


def test_packed_loss_equals_unpacked_loss(tiny_model):
    model = load_model(str(tiny_model)).eval()
    exs = examples()
    unpacked_loss, unpacked_tokens = nll(model, collate(exs, pad_id=0))
    packed_loss, packed_tokens = nll(model, collate(pack(exs, sequence_len=32), pad_id=0))
    assert packed_tokens == unpacked_tokens
    torch.testing.assert_close(packed_loss, unpacked_loss, rtol=1e-5, atol=1e-4)


def test_packed_attention_does_not_leak(tiny_model):
    """Changing the first example of a packed row leaves the logits of the second unchanged."""
    model = load_model(str(tiny_model)).eval()
    short, long = examples()[:2]  # packed longest first: `long` (13 tokens), then `short` (7)
    long2 = {"input_ids": [t + 1 for t in long["input_ids"]], "labels": long["labels"]}
    with torch.no_grad():
        one = model(**model_inputs(collate(pack([short, long], 64), 0))).logits[0, 13:20]
        two = model(**model_inputs(collate(pack([short, long2], 64), 0))).logits[0, 13:20]
    torch.testing.assert_close(one, two)


def test_unpadded_batches_carry_no_attention_mask(tiny_model):
    """A mask is collated only where a row is padded: given an all-ones mask, transformers syncs with the
    device to check it before each forward. Without one the forward gives the same logits."""
    model = load_model(str(tiny_model)).eval()
    exs = examples()
    same_length = [exs[0], {"input_ids": exs[2]["input_ids"][:2] + exs[0]["input_ids"][2:], "labels": exs[0]["labels"]}]
    batch = collate(same_length, pad_id=0)
    assert "attention_mask" not in batch
    padded = collate(exs[:2], pad_id=0)
    assert padded["attention_mask"].sum(dim=1).tolist() == [7, 13]
    with torch.no_grad():
        without = model(**model_inputs(batch)).logits
        ones = model(**model_inputs(batch | {"attention_mask": torch.ones_like(batch["input_ids"])})).logits
    torch.testing.assert_close(without, ones)
