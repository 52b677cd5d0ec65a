"""The rollout engine: batched sampling from the live policy with a KV cache.

RL objectives sample from the weights being trained, so the engine runs the training model itself (no
copy, no weight sync), switched to eval mode for the duration. One call samples `n` completions for each
of a batch of prompts:

    left-pad the prompts → prefill → loop: sample a token per row (temperature, top-k, top-p)
      → one forward of 1 token per row → a row ends at an end-of-turn token, a stop string or
      max_new_tokens

Two decoders, the same sampling:
- CPU: eager steps with a growing cache. The prompt is prefilled once and its cache repeated across the
  group (a GRPO group shares its prompt); once a quarter of the batch has ended, finished rows are cut
  out of the cache, so the tail of long completions does not pay for rows that are done.
- CUDA: a preallocated cache and static-shaped inputs, so the decode step is recorded once as a CUDA
  graph and replayed. A decode step of a LoRA policy is hundreds of small kernels; launched one by one
  from Python it is bound by the CPU (the bottleneck of transformers' generate), replayed it is not.
  Its attention reads the cache as it is (`grouped_decode_attention`): given a mask, the SDPA path of
  transformers 5.17 copies every key/value head once per query head sharing it, at every step (42% of a
  1B decode step's GPU time on an H200); 5.24 reads it as it is too.

Prompt and prefix tuning prepend virtual tokens inside PEFT's forward, which an incremental decode loop
cannot reproduce; for those, `sample` uses transformers' `generate` (same sampling settings).
Randomness comes either from the `generator` passed in, or from `keys`: one integer per sampled row, from
which a counter-based hash gives that row's uniform draw at each position (inverse-CDF sampling). Keyed
draws depend on nothing but (key, position): not on the batch a row was sampled in, its place in it, or
which rows were pruned, so N processes that each sample their share of the prompts draw exactly what one
process sampling all of them draws (rl/engine.py keys rows by global prompt position).

Under torchrun with a sharded (FSDP2) policy every forward is a collective: all ranks decode in lockstep
with the eager cache decoder (a CUDA graph cannot record FSDP's gathers), a rank whose rows have all
ended keeps stepping one of them, and the loop stops when every rank's rows have ended.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from strop.models.loading import eval_mode
from strop.runtime import distributed

_MASK32 = 0xFFFFFFFF

#: The name strop's decode attention is registered under in transformers' attention interfaces.
GROUPED_DECODE = "strop_grouped_decode"


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int
    temperature: float = 1.0  # 0 → greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 → off
    stop_strings: tuple[str, ...] = ()


@dataclass
class Completion:
    ids: list[int]  # generated tokens, including the end-of-turn token or the stop string's last token
    text: str  # decoded without special tokens, cut before a stop string
    finished: bool  # ended by an end-of-turn token or a stop string (False: truncated at max_new_tokens)


def end_token_ids(model: nn.Module, tokenizer) -> set[int]:
    """Every token that ends a reply: the tokenizer's eos and the generation config's eos ids."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(configured if isinstance(configured, (list, tuple)) else [configured] if configured is not None else [])
    return ids


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Keep the top-k tokens and the smallest set whose probability reaches top_p; the rest get -inf."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= top_p  # mass before this token already reaches top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xor-shift, multiply) on int64 lanes holding values below 2^32; the
    multiplier is below 2^27, so no product leaves int64."""
    for _ in range(2):
        x = ((x ^ (x >> 16)) * 0x45D9F3B) & _MASK32
    return x ^ (x >> 16)


def row_keys(seed: int, positions: list[int], n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """One key per completion j of the prompt at each global position: result[i * n + j]."""
    base = _mix32(torch.tensor([seed & _MASK32], dtype=torch.long) ^ _mix32(torch.tensor([(seed >> 32) & _MASK32])))
    where = torch.tensor(positions, dtype=torch.long).repeat_interleave(n) & _MASK32
    index = torch.arange(n, dtype=torch.long).repeat(len(positions))
    return _mix32(_mix32(base ^ where) ^ index).to(device)


def keyed_uniform(keys: torch.Tensor, step: int) -> torch.Tensor:
    """A uniform draw in [0, 1) per key for decode position `step`: a function of (key, step) only."""
    mixed = _mix32(keys ^ _mix32(torch.full_like(keys, step & _MASK32)))
    return (mixed >> 8).double() / float(1 << 24)


def sample_next(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None,
    keys: torch.Tensor | None = None,
    step: int = 0,
) -> torch.Tensor:
    """One token per row from the last position's logits: drawn with `generator`, or by inverting each
    row's cumulative distribution at its keyed uniform."""
    if params.temperature == 0:
        return logits.argmax(-1)
    probs = filter_logits(logits.float() / params.temperature, params.top_k, params.top_p).softmax(-1)
    if keys is None:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    cdf = probs.double().cumsum(-1)
    target = (keyed_uniform(keys, step) * cdf[:, -1])[:, None]
    return torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)


def _all_ended(ended: bool, lockstep: bool) -> bool:
    """Whether decoding stops: this rank's rows have ended, and under lockstep every rank's have."""
    return distributed.all_ranks(ended) if lockstep else ended


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _completion(ids: list[int], ends: set[int], tokenizer, stops: tuple[str, ...]) -> Completion:
    """Trim a raw row at its first end token and decode it."""
    for index, token in enumerate(ids):
        if token in ends:
            ids = ids[: index + 1]
            break
    text, stopped = _cut_at_stop(tokenizer.decode(ids, skip_special_tokens=True), stops)
    return Completion(ids, text, bool(ids) and ids[-1] in ends or stopped)


def _uses_prompt_learning(model: nn.Module) -> bool:
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def _prompt_batch(model: nn.Module, tokenizer, prompts: list[list[int]]):
    """What every decoder starts from: the device, the end tokens, the pad id, and the left-padded
    prompt ids with their attention mask."""
    device = next(model.parameters()).device
    ends = end_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(ends))
    return (device, ends, pad, *_left_padded(prompts, pad, device))


def _left_padded(prompts: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    return ids, mask


@torch.no_grad()
def sample(
    model: nn.Module,
    tokenizer,
    prompts: list[list[int]],
    params: SamplingParams,
    n: int = 1,
    generator: torch.Generator | None = None,
    keys: torch.Tensor | None = None,
) -> list[Completion]:
    """`n` completions of each prompt, grouped: result[i * n + j] is the j-th completion of prompt i.
    `keys` (one per result row, see `row_keys`) replaces `generator` as the source of randomness."""
    lockstep = distributed.is_sharded(model)
    with eval_mode(model):
        if _uses_prompt_learning(model):
            return _sample_with_generate(model, tokenizer, prompts, params, n, generator, keys, lockstep)
        if next(model.parameters()).is_cuda and not lockstep:
            with grouped_decode_attention(model):
                return _sample_with_graph(model, tokenizer, prompts, params, n, generator, keys)
        return _sample_with_cache(model, tokenizer, prompts, params, n, generator, keys, lockstep)


def _grouped_decode_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """transformers' SDPA attention, except for a one-token query of grouped-query attention: there the
    query heads that share a key/value head become the query rows of that head, so SDPA reads the cache
    once per key/value head instead of a copy per query head. A mask of shape (batch, 1, 1, keys)
    applies to every row alike."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, length, dim = query.shape
    kv_heads = key.shape[1]
    mask_rows = 1 if attention_mask is None else attention_mask.shape[1] * attention_mask.shape[2]
    extras = any(kwargs.get(k) is not None for k in ("position_bias", "s_aux", "softcap", "sliding_window"))
    if length != 1 or heads == kv_heads or mask_rows != 1 or extras or key.shape[-1] != value.shape[-1]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    mask = None if attention_mask is None else attention_mask[:, :, :, : key.shape[-2]]
    grouped = torch.nn.functional.scaled_dot_product_attention(
        query.reshape(batch, kv_heads, heads // kv_heads, dim), key, value, attn_mask=mask, scale=scaling
    )
    return grouped.reshape(batch, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


@contextmanager
def grouped_decode_attention(model: nn.Module) -> Iterator[None]:
    """Every SDPA config of `model` switched to `_grouped_decode_sdpa` for the duration, then back."""
    configs = {
        id(config): config
        for module in model.modules()
        if getattr(config := getattr(module, "config", None), "_attn_implementation", None) == "sdpa"
    }
    if configs:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

        AttentionInterface.register(GROUPED_DECODE, _grouped_decode_sdpa)
        AttentionMaskInterface.register(GROUPED_DECODE, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    try:
        for config in configs.values():
            config._attn_implementation_internal = GROUPED_DECODE
        yield
    finally:
        for config in configs.values():
            config._attn_implementation_internal = "sdpa"


class _Rows:
    """Host-side bookkeeping of the rows being sampled: their tokens, and which have ended."""

    def __init__(self, count: int, ends: set[int], params: SamplingParams, tokenizer):
        self.generated: list[list[int]] = [[] for _ in range(count)]
        self.active = list(range(count))  # result index of each row still in the batch
        self.done = [False] * count
        self.ends, self.stops, self.tokenizer = ends, params.stop_strings, tokenizer
        self.longest_stop = max((len(s) for s in self.stops), default=0)

    def add(self, tokens: torch.Tensor) -> bool:
        """Append one sampled token per row in the batch (one device sync); True once every row ended."""
        for slot, token in enumerate(tokens.tolist()):
            if self.done[slot]:
                continue
            row = self.generated[self.active[slot]]
            row.append(token)
            stopped = (
                bool(self.longest_stop)
                and _cut_at_stop(
                    self.tokenizer.decode(row[-(self.longest_stop + 1) :], skip_special_tokens=True), self.stops
                )[1]
            )
            self.done[slot] = token in self.ends or stopped
        return all(self.done)

    def completions(self) -> list[Completion]:
        return [_completion(row, self.ends, self.tokenizer, self.stops) for row in self.generated]


def _sample_with_cache(model, tokenizer, prompts, params, n, generator, keys=None, lockstep=False) -> list[Completion]:
    """Eager decoding with a growing cache; finished rows are pruned from the batch (under lockstep a
    rank keeps one row stepping after its own rows have ended)."""
    from transformers import DynamicCache

    device, ends, pad, ids, mask = _prompt_batch(model, tokenizer, prompts)
    cache = DynamicCache()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    ).logits[:, -1]
    if n > 1:
        cache.batch_repeat_interleave(n)
        logits, mask = logits.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
    rows = _Rows(len(prompts) * n, ends, params, tokenizer)
    next_position = mask.sum(-1, keepdim=True)
    for step in range(params.max_new_tokens):
        tokens = sample_next(logits, params, generator, keys, step)
        if _all_ended(rows.add(tokens), lockstep):
            break
        if sum(rows.done) * 4 >= len(rows.done):  # prune finished rows out of the batch and the cache
            keep = [slot for slot, finished in enumerate(rows.done) if not finished] or [0]
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            rows.active, rows.done = [rows.active[i] for i in keep], [rows.done[i] for i in keep]
            tokens, mask, next_position = tokens[index], mask[index], next_position[index]
            keys = keys[index] if keys is not None else None
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        logits = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=next_position,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1]
        next_position = next_position + 1
    return rows.completions()


def _sample_with_graph(
    model, tokenizer, prompts, params, n, generator, keys=None, capture: bool = True
) -> list[Completion]:
    """Decoding with a preallocated cache and static-shaped inputs, the decode step recorded once as a
    CUDA graph and replayed: a small model's step is bound by kernel launches, not by the GPU.

    All rows stay in the batch until the last ends (a graph has fixed shapes). Masks are 4-D booleans
    built here (query × key, True = may attend), updated in place as the sequence grows; a padding
    query attends to itself so that no softmax row is empty. `capture=False` runs the same static
    decoding eagerly (how it is tested on the CPU)."""
    from transformers import StaticCache

    device, ends, pad, ids, mask = _prompt_batch(model, tokenizer, prompts)
    ids, mask = ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0).bool()
    count, width = ids.shape
    total = width + params.max_new_tokens
    cache = StaticCache(config=model.config, max_cache_len=total)
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    prefill_mask = torch.zeros(count, 1, width, total, dtype=torch.bool, device=device)
    prefill_mask[:, 0, :, :width] = (causal & mask[:, None, :]) | torch.eye(width, dtype=torch.bool, device=device)
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=ids,
        attention_mask=prefill_mask,
        position_ids=positions,
        past_key_values=cache,
        cache_position=torch.arange(width, device=device),
        use_cache=True,
        logits_to_keep=1,
    ).logits[:, -1]
    token = torch.zeros(count, 1, dtype=torch.long, device=device)
    position = positions[:, -1:] + 1
    cache_position = torch.tensor([width], device=device)
    step_mask = torch.zeros(count, 1, 1, total, dtype=torch.bool, device=device)
    step_mask[:, 0, 0, :width] = mask

    def step() -> torch.Tensor:
        return model(
            input_ids=token,
            attention_mask=step_mask,
            position_ids=position,
            past_key_values=cache,
            cache_position=cache_position,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1]

    rows = _Rows(count, ends, params, tokenizer)
    replay = None
    for offset in range(params.max_new_tokens):
        tokens = sample_next(logits, params, generator, keys, offset)
        if rows.add(tokens) or offset + 1 == params.max_new_tokens:
            break
        token.copy_(tokens[:, None])
        step_mask[:, 0, 0, width + offset] = True
        cache_position.fill_(width + offset)
        if replay is None:
            replay = _record(step, cache) if capture else step
        logits = replay()
        position += 1
    return rows.completions()


def _record(step, cache):
    """`step` recorded as a CUDA graph (after warm-up runs on a side stream, as capture requires);
    returns a function that replays it and gives its output. transformers' static cache layers count
    their own write position on the device; the warm-up and capture runs advance it, so it is wound
    back to where it stood before them."""
    counters = [
        layer.cumulative_length
        for layer in getattr(cache, "layers", ())
        if torch.is_tensor(getattr(layer, "cumulative_length", None))
    ]
    saved = [counter.clone() for counter in counters]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    for counter, value in zip(counters, saved):
        counter.copy_(value)

    def replay() -> torch.Tensor:
        graph.replay()
        return out

    return replay


def _sample_with_generate(model, tokenizer, prompts, params, n, generator, keys, lockstep) -> list[Completion]:
    """transformers' generate (prompt and prefix tuning). It has no per-row randomness, so keys only seed
    it; under lockstep `synced_gpus` keeps every rank stepping until all have ended."""
    device, ends, pad, ids, mask = _prompt_batch(model, tokenizer, prompts)
    settings: dict[str, Any] = (
        {"do_sample": False}
        if params.temperature == 0
        else {
            "do_sample": True,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k or None,
        }
    )
    if keys is not None:
        torch.manual_seed(int(keys[0]))
    elif generator is not None:  # generate has no generator argument: seed from ours
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=params.max_new_tokens,
        num_return_sequences=n,
        pad_token_id=pad,
        eos_token_id=sorted(ends),
        synced_gpus=lockstep,
        **settings,
        **({"stop_strings": list(params.stop_strings), "tokenizer": tokenizer} if params.stop_strings else {}),
    )
    rows = out[:, ids.shape[1] :].tolist()
    return [_completion(_strip_trailing(row, pad), ends, tokenizer, params.stop_strings) for row in rows]


def _strip_trailing(row: list[int], pad: int) -> list[int]:
    """generate pads rows that stopped early; the padding is not part of the completion."""
    while row and row[-1] == pad:
        row = row[:-1]
    return row
