"""Distillation across tokenizers: Universal Logit Distillation (Boizard et al. 2024, "Towards
Cross-Tokenizer Distillation: the Universal Logit Distillation Loss for LLMs"), the survey's "shared
semantic space" for teacher and student with different vocabularies.

Two problems and their answers:

1. Positions. The same text is split differently, so token t of the student is not token t of the
   teacher. Both tokenizers report each token's character span in the text; where a student token and a
   teacher token END at the same character, both models have read the same text prefix and predict what
   follows it, so those two positions are compared. Other positions get no soft term (their hard-label
   term still trains them).

2. Distributions over different vocabularies. ULD compares them without a token mapping: sort each
   distribution's probabilities in decreasing order, pad the shorter vocabulary with zeros, and take

       ULD(p_T, p_S) = Σ_{i=1}^{max(|V_T|, |V_S|)} | p_T^(i) − p_S^(i) |

   where p^(i) is the i-th largest probability (p = softmax(z / T)). Boizard et al. derive it from the
   Wasserstein distance between the two distributions, in a closed form where ranks stand in for token
   identities, so no shared vocabulary is needed. It is 0 exactly when the sorted distributions are
   equal: it teaches the student the teacher's confidence profile, and the hard-label term the token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def uld_distance(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-position ULD between [N, V_S] student and [N, V_T] teacher logits (the formula above)."""
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    p_s = F.softmax(student_logits.to(dtype) / temperature, dim=-1).sort(dim=-1, descending=True).values
    p_t = F.softmax(teacher_logits.to(dtype) / temperature, dim=-1).sort(dim=-1, descending=True).values
    width = max(p_s.shape[-1], p_t.shape[-1])
    p_s = F.pad(p_s, (0, width - p_s.shape[-1]))
    p_t = F.pad(p_t, (0, width - p_t.shape[-1]))
    return (p_t - p_s).abs().sum(-1)


def aligned_positions(student_ends: list[int], teacher_ends: list[int]) -> list[tuple[int, int]]:
    """(student index, teacher index) of tokens whose character spans end at the same offset.

    Both lists are non-decreasing (tokens follow the text), so one merge pass finds every match; a token
    with an empty span (an end equal to its predecessor's) matches only once, at its first index."""
    pairs, i, j = [], 0, 0
    while i < len(student_ends) and j < len(teacher_ends):
        s, t = student_ends[i], teacher_ends[j]
        if s == t:
            pairs.append((i, j))
            i, j = _next_end(student_ends, i), _next_end(teacher_ends, j)
        elif s < t:
            i += 1
        else:
            j += 1
    return pairs


def _next_end(ends: list[int], index: int) -> int:
    """The first index after `index` whose end offset is larger (skips empty spans at the same place)."""
    value = ends[index]
    index += 1
    while index < len(ends) and ends[index] == value:
        index += 1
    return index


def token_ends(tokenizer, ids: list[int]) -> tuple[str, list[int]]:
    """The text `ids` spell and the character offset each token ends at.

    The text is decoded once and re-encoded with offsets; when the re-encoding differs from `ids`
    (a tokenizer that does not round-trip), the ends come from decoding each prefix instead."""
    text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(encoded["input_ids"]) == list(ids):
        return text, [end for _, end in encoded["offset_mapping"]]
    ends = [
        len(tokenizer.decode(ids[: k + 1], skip_special_tokens=False, clean_up_tokenization_spaces=False))
        for k in range(len(ids))
    ]
    return text, ends


def teacher_ends(tokenizer, text: str) -> tuple[list[int], list[int]]:
    """The teacher's token ids for `text` and the character offset each ends at."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(encoded["input_ids"]), [end for _, end in encoded["offset_mapping"]]
