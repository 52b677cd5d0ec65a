"""`perplexity`: exp of the mean next-token negative log-likelihood over a text file.

    PPL = exp( −(1/N) Σ_t log p(x_t | x_<t) )

over every predicted token of every document (token-weighted, not an average of per-document
perplexities). A `.txt` file is split into documents at blank lines; a JSONL/JSON/CSV/Parquet file
gives one document per row's `field` (default "text"). Documents longer than `max_length` tokens are
cut into consecutive windows, each scored on its own (the first token of a window has no context and is
not predicted), which is the plain non-overlapping evaluation; no chat template is applied: this
measures the raw language model, the usual general-ability probe for forgetting.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from pydantic import Field

from strop.data.readers import resolve_data_path
from strop.data.tokenize import IGNORE
from strop.errors import StropError
from strop.evaluation.base import EvalResult, EvaluatorType, Options, Subject, data_rows


class PerplexityOptions(Options):
    field: str = Field("text", description="Row field holding the text (files other than .txt).")
    max_length: int = Field(512, gt=1, description="Tokens per scored window.")
    batch_size: int = Field(4, gt=0, description="Windows per forward pass.")


def documents(options: PerplexityOptions, base_dir: Path | None) -> list[str]:
    path = resolve_data_path(options.data, base_dir)
    if path is not None and path.suffix == ".txt":
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise StropError(f"perplexity evaluator: cannot read {path} as UTF-8 text ({err})") from err
        docs = [d.strip() for d in text.split("\n\n") if d.strip()]
    else:
        docs = []
        for where, row in data_rows(options, base_dir):
            if not isinstance(row.get(options.field), str):
                raise StropError(f"{where}: field '{options.field}' must be a string (the text to score)")
            docs.append(row[options.field])
    docs = docs[: options.limit]
    if not docs:
        raise StropError(f"perplexity evaluator: {options.data} holds no text")
    return docs


def windows(tokenizer, docs: list[str], max_length: int) -> list[list[int]]:
    """Each document's ids, cut into windows of at most max_length (windows of one token predict nothing)."""
    out = []
    for doc in docs:
        ids = tokenizer(doc, add_special_tokens=True)["input_ids"]
        out += [ids[i : i + max_length] for i in range(0, len(ids), max_length) if len(ids[i : i + max_length]) > 1]
    return out


@torch.no_grad()
def negative_log_likelihood(model, windows_ids: list[list[int]], pad_id: int, batch_size: int) -> tuple[float, int]:
    """(summed NLL, predicted tokens) over the windows."""
    from strop.models.loading import eval_mode
    from strop.objectives.base import shifted_token_logps

    device = next(model.parameters()).device
    total, count = 0.0, 0
    with eval_mode(model):
        for start in range(0, len(windows_ids), batch_size):
            chunk = windows_ids[start : start + batch_size]
            width = max(len(w) for w in chunk)
            ids = torch.tensor([w + [pad_id] * (width - len(w)) for w in chunk], device=device)
            mask = torch.tensor([[1] * len(w) + [0] * (width - len(w)) for w in chunk], device=device)
            labels = ids.masked_fill(mask == 0, IGNORE)
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            logps, counted = shifted_token_logps(logits, labels)
            total -= float(logps.double().sum())
            count += int(counted.sum())
    return total, count


def build(options: PerplexityOptions, base_dir: Path | None):
    docs = documents(options, base_dir)

    def evaluate(subject: Subject) -> EvalResult:
        tokenizer = subject.tokenizer
        ids = windows(tokenizer, docs, options.max_length)
        if not ids:
            raise StropError(f"perplexity evaluator: {options.data}: no document is longer than one token")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        nll, count = negative_log_likelihood(subject.model, ids, pad, options.batch_size)
        return EvalResult(
            {"perplexity": math.exp(nll / count), "nll_per_token": nll / count, "tokens": float(count)},
            [{"text": d[:200]} for d in docs[: options.samples]],
        )

    return evaluate


EVALUATOR = EvaluatorType(PerplexityOptions, build)
