"""Datasets: read files, convert row formats, tokenize with label masks, split, drop or truncate, pack."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from strop.data.formats import FORMATS
from strop.data.mixture import DATASET_IDS, is_mixture, mix_examples
from strop.data.packing import Tokens, collate, pack
from strop.data.replay import source_paths, sources
from strop.data.tokenize import IGNORE, chunk_long_text, tokenize_example
from strop.errors import StropError
from strop.models.chat_template import ensure_chat_template
from strop.run_types import RunConfig

__all__ = [
    "DataReport",
    "build_sft_data",
    "collate",
    "drop_excess",
    "note_excess",
    "pack",
    "split_validation",
    "IGNORE",
]


@dataclass
class DataReport:
    rows: int = 0
    too_long: int = 0
    no_target: int = 0
    notes: list[str] = field(default_factory=list)


def _load_examples(cfg: RunConfig, tokenizer, base_dir: Path | None, report: DataReport) -> list[Tokens]:
    """Each dataset's rows in its own format (`type`, field mappings); with several datasets each token
    carries its dataset's index, for the mixture and the per-dataset metrics."""
    examples: list[Tokens] = []
    tag = len(source_paths(cfg)) > 1
    for index, (spec, rows) in enumerate(sources(cfg, base_dir, lambda: report.rows)):
        convert = FORMATS[spec.type]
        count_before = report.rows
        for where, row in rows:
            report.rows += 1
            tokens = tokenize_example(convert(row, where), tokenizer, cfg.train_on_inputs, where)
            pieces = chunk_long_text(tokens, cfg.sequence_len) if spec.type == "text" else [tokens]
            for piece in pieces:
                if len(piece["input_ids"]) > cfg.sequence_len:
                    if drop_excess(
                        report,
                        cfg.excess_length_strategy,
                        where,
                        f"{len(piece['input_ids'])} tokens",
                        f"sequence_len={cfg.sequence_len}",
                    ):
                        continue
                    piece = {k: v[: cfg.sequence_len] for k, v in piece.items()}
                if all(label == IGNORE for label in piece["labels"][1:]):
                    report.no_target += 1
                    continue
                if tag:
                    piece = {**piece, DATASET_IDS: [index] * len(piece["input_ids"])}
                examples.append(piece)
        if report.rows == count_before and not getattr(cfg, "dataset_exact_deduplication", False):
            raise StropError(f"dataset {spec.path} is empty")
    return examples


def drop_excess(report: DataReport, strategy: str, where: str, size: str, limit: str) -> bool:
    """Count an example over its limit and apply excess_length_strategy: raise under `error`; True when
    it is to be dropped, False when the caller truncates it. `size` and `limit` word the error."""
    report.too_long += 1
    if strategy == "error":
        raise StropError(f"{where}: {size}, over {limit} (excess_length_strategy: error)")
    return strategy == "drop"


def note_excess(report: DataReport, cfg: RunConfig, unit: str) -> None:
    """Say how many rows excess_length_strategy dropped or truncated."""
    if report.too_long:
        verb = "truncated" if cfg.excess_length_strategy == "truncate" else "dropped"
        report.notes.append(
            f"{verb} {report.too_long} of {report.rows} {unit} longer than "
            f"sequence_len={cfg.sequence_len} (excess_length_strategy: {cfg.excess_length_strategy})"
        )


def _validation_count(size: float, total: int, unit: str) -> int:
    """Rows val_set_size asks for: a share below 1, else a whole count. A non-whole count (1.5), or a
    validation part at least as big as what is left to train on, is a mistake worth stopping for."""
    if size >= 1 and size != int(size):
        raise StropError(f"val_set_size={size}: use a share below 1 (0.1 = 10%) or a whole number of {unit}")
    n_val = int(size if size >= 1 else round(size * total))
    if n_val >= total:
        raise StropError(f"val_set_size={size} leaves no training {unit} out of {total}")
    if n_val > total - n_val:
        raise StropError(
            f"val_set_size={size} holds out {n_val} of {total} {unit}, more than the {total - n_val} "
            f"left to train on; use a smaller val_set_size (e.g. 0.1) or more data"
        )
    return n_val


def split_validation(rows: list, cfg: RunConfig, report: DataReport, unit: str) -> tuple[list, list]:
    """Seeded shuffle, then (train, validation) by val_set_size; an empty result is an error, and a
    share that rounds to no validation row is said in the notes."""
    if not rows:
        raise StropError(f"no training {unit} left after tokenization: " + "; ".join(report.notes or ["empty data"]))
    random.Random(cfg.seed if getattr(cfg, "data_seed", None) is None else cfg.data_seed).shuffle(rows)
    n_val = _validation_count(cfg.val_set_size, len(rows), unit)
    if cfg.val_set_size and not n_val:
        report.notes.append(f"val_set_size={cfg.val_set_size} of {len(rows)} {unit} rounds to 0: no validation")
    return rows[n_val:], rows[:n_val]


def build_sft_data(
    cfg: RunConfig, tokenizer, base_dir: Path | None = None
) -> tuple[list[Tokens], list[Tokens], DataReport]:
    """Tokenized train and validation examples (packed when sample_packing), and what was dropped."""
    ensure_chat_template(tokenizer, cfg.chat_template)
    report = DataReport()
    examples = _load_examples(cfg, tokenizer, base_dir, report)
    note_excess(report, cfg, "examples")
    if report.no_target:
        report.notes.append(f"dropped {report.no_target} examples with no response tokens to learn from")
    train, val = split_validation(examples, cfg, report, "examples")
    if is_mixture(cfg):
        train = mix_examples(train, cfg, report.notes)
    if cfg.sample_packing:
        train, val = pack(train, cfg.sequence_len), pack(val, cfg.sequence_len)
    return train, val, report
