"""Sample packing and batch collation.

Packing puts several examples in one row of at most `sequence_len` tokens so no compute is spent on
padding. Nothing leaks between the examples of a row: position ids restart at each example, the
attention mask is block-diagonal causal, and the first token of each example is not a training target
(it would otherwise be predicted from the previous example's last token). With that, the packed loss
equals the unpacked loss on the same examples; tests/data/test_packing.py checks it.
"""

from __future__ import annotations

import torch

from strop.data.tokenize import IGNORE

Tokens = dict[str, list[int]]


def pack(examples: list[Tokens], sequence_len: int) -> list[Tokens]:
    """Greedy first-fit packing in the given order; each row gains `position_ids` and `segment_ids`."""
    rows: list[Tokens] = []
    for example in examples:
        ids, labels = example["input_ids"], list(example["labels"])
        labels[0] = IGNORE
        target = next((row for row in rows if len(row["input_ids"]) + len(ids) <= sequence_len), None)
        if target is None:
            target = {"input_ids": [], "labels": [], "position_ids": [], "segment_ids": []}
            rows.append(target)
        segment = target["segment_ids"][-1] + 1 if target["segment_ids"] else 0
        target["input_ids"] += ids
        target["labels"] += labels
        target["position_ids"] += list(range(len(ids)))
        target["segment_ids"] += [segment] * len(ids)
    return rows


def _pad(rows: list[list[int]], value: int, length: int) -> torch.Tensor:
    return torch.tensor([row + [value] * (length - len(row)) for row in rows], dtype=torch.long)


def collate(rows: list[Tokens], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a micro-batch. Packed rows get a 4-D block-diagonal causal mask (True = may attend)."""
    length = max(len(row["input_ids"]) for row in rows)
    batch = {
        "input_ids": _pad([r["input_ids"] for r in rows], pad_id, length),
        "labels": _pad([r["labels"] for r in rows], IGNORE, length),
    }
    if "segment_ids" not in rows[0]:
        batch["attention_mask"] = _pad([[1] * len(r["input_ids"]) for r in rows], 0, length)
        return batch
    batch["position_ids"] = _pad([r["position_ids"] for r in rows], 0, length)
    segments = _pad([r["segment_ids"] for r in rows], -1, length)
    same = segments[:, :, None] == segments[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    valid = (segments >= 0)[:, :, None]
    mask = same & causal & valid
    mask |= torch.eye(length, dtype=torch.bool)  # padding rows attend to themselves: no NaN from empty rows
    batch["attention_mask"] = mask[:, None]
    return batch
