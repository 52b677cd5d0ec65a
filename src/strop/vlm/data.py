"""Image conversations → token ids, labels and the processor's image tensors.

A `vision_chat` row is OpenAI / HF message style: each message's `content` is a string or a list of
parts, `{"type": "text", "text": ...}` and image parts (strop/vlm/images.py). Images may sit in user or
system turns, several per conversation; an assistant turn holds text only (strop trains text).

Tokenization goes through the model's own processor and chat template, so training sees exactly what
inference sees, image placeholders expanded to the family's image token count. Labels: assistant text
only. The processor expands placeholders inside the text it tokenizes, so character offsets of the
unexpanded rendering do not map onto its tokens; instead each assistant reply's token span is found by
processing the conversation up to the reply's generation prompt and up to the reply's end (the images in
that prefix included) and checking that each is a token prefix of the whole. Every image token
(placeholder, its expansion, the vision boundary tokens) is then masked, `train_on_inputs` or not.

A row keeps its images as their encoded bytes (`vision_images`), not as pixel tensors (a 448 px image is
~1 MB of float32 pixels and a few tens of KB of PNG or JPEG), and collation runs the image processor on
them; the processor's per-token outputs (Qwen2-VL's mm_token_type_ids, Gemma 3's token_type_ids) are kept
as lists. In the collated batch the image tensors (pixel_values, image_grid_thw, ...) sit under a `vision.`
prefix, which `objectives.base.model_inputs` hands to the model's forward: nothing else in the loop needs
to know about them.

Packing is refused for image rows: a packed row would need the vision features of several examples
aligned to their segments and the family's image position ids (Qwen2-VL's M-RoPE) restarted per
segment, which transformers' VLM forwards do not take.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from strop.data import DataReport, drop_excess, note_excess, split_validation
from strop.data.formats import FORMATS
from strop.data.packing import collate as collate_text
from strop.data.readers import read_rows, resolve_data_path
from strop.data.tokenize import IGNORE
from strop.errors import StropError
from strop.run_types import RunConfig
from strop.vlm.images import decode, image_bytes
from strop.vlm.models import image_token_ids

VISION_PREFIX = "vision."
TOKEN_PREFIX = "vision_tokens."
TEXT_KEYS = ("input_ids", "attention_mask")
_ROLES = {"system", "user", "assistant", "tool"}
IMAGE_TYPES = {"image", "image_url"}


def _parts(content: Any, loc: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise StropError(f"{loc}: field 'content' must be a string or a non-empty list of parts")
    parts = []
    for index, part in enumerate(content):
        where = f"{loc}.content[{index}]"
        if isinstance(part, str):
            part = {"type": "text", "text": part}
        if not isinstance(part, dict) or part.get("type") not in {"text", *IMAGE_TYPES}:
            raise StropError(f"{where}: a part must be an object with type text, image or image_url")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise StropError(f"{where}: field 'text' must be a string")
        parts.append(part)
    return parts


def parse_conversation(row: dict[str, Any], where: str, field: str = "messages") -> list[dict[str, Any]]:
    """The row's messages (under `field`) with content as a list of parts (an image part keeps its
    source fields)."""
    messages = row.get(field)
    if not isinstance(messages, list) or not messages:
        raise StropError(f"{where}: field '{field}' must be a non-empty list")
    out = []
    for index, message in enumerate(messages):
        loc = f"{where}: {field}[{index}]"
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise StropError(f"{loc}: field 'role' must be one of {sorted(_ROLES)}")
        parts = _parts(message.get("content"), loc)
        if message["role"] == "assistant" and any(p["type"] in IMAGE_TYPES for p in parts):
            raise StropError(f"{loc}: an assistant turn holds an image; images belong in user turns")
        out.append({"role": message["role"], "content": parts})
    return out


def text_conversation(row: dict[str, Any], where: str, kind: str) -> list[dict[str, Any]]:
    """A text-only row of any SFT format (chat, alpaca, ...) as parts, for mixing into a vision run."""
    example = FORMATS[kind](row, where)
    if "messages" not in example:
        raise StropError(
            f"{where}: dataset type '{kind}' has no conversation; mix chat or alpaca rows into a vision run"
        )
    return [{"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in example["messages"]]


class Encoder:
    """Runs the processor over conversations, loading each image once per row."""

    def __init__(self, processor, folders: list[Path], allow_urls: bool):
        self.processor, self.folders, self.allow_urls = processor, folders, allow_urls
        self.image_ids = image_token_ids(processor)

    def sources(self, messages: list[dict], where: str, field: str = "messages") -> list[bytes]:
        """The encoded bytes of every image of the conversation, in order."""
        out = []
        for m_index, message in enumerate(messages):
            for p_index, part in enumerate(message["content"]):
                if part["type"] in IMAGE_TYPES:
                    loc = f"{where}: {field}[{m_index}].content[{p_index}]"
                    out.append(image_bytes(part, loc, self.folders, self.allow_urls))
        return out

    def images(self, messages: list[dict], where: str, field: str = "messages") -> list:
        return [decode(data) for data in self.sources(messages, where, field)]

    def render(self, messages: list[dict], generation_prompt: bool = False) -> str:
        plain = [
            {"role": m["role"], "content": [{"type": "image"} if p["type"] in IMAGE_TYPES else p for p in m["content"]]}
            for m in messages
        ]
        return self.processor.apply_chat_template(plain, tokenize=False, add_generation_prompt=generation_prompt)

    def process(self, text: str, images: list) -> dict[str, torch.Tensor]:
        return dict(self.processor(text=[text], images=images or None, return_tensors="pt"))

    def ids(self, messages: list[dict], images: list, generation_prompt: bool = False) -> list[int]:
        count = sum(p["type"] in IMAGE_TYPES for m in messages for p in m["content"])
        return self.process(self.render(messages, generation_prompt), images[:count])["input_ids"][0].tolist()


def vision_extras(encoded: dict[str, torch.Tensor], images: list[bytes]) -> dict[str, Any]:
    """What a row keeps of the processor's outputs besides ids and mask: per-token ones as lists under
    `vision_tokens.`; for the image tensors, the image bytes and the names of the tensors to remake."""
    length = encoded["input_ids"].shape[-1]
    out: dict[str, Any] = {}
    tensors = []
    for key, value in encoded.items():
        if key in TEXT_KEYS:
            continue
        if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape == (1, length):
            out[TOKEN_PREFIX + key] = value[0].tolist()
        else:
            tensors.append(key)
    if images:
        out |= {"vision_images": images, "vision_keys": tuple(tensors)}
    return out


def image_tensors(processor, row: dict) -> dict[str, torch.Tensor]:
    """The image tensors of a row, under `vision.`: the image processor on the row's images as one sample
    (what the processor itself does), or the tensors a row carries ready-made."""
    if "vision_images" not in row:
        return {k: v for k, v in row.items() if k.startswith(VISION_PREFIX)}
    images = [decode(data) for data in row["vision_images"]]
    made = processor.image_processor(images=[images], return_tensors="pt")
    return {VISION_PREFIX + key: made[key] for key in row["vision_keys"]}


def encode_conversation(encoder: Encoder, messages: list[dict], where: str, train_on_inputs: bool) -> dict:
    """{input_ids, labels, vision.*} of one conversation; image tokens are never labels."""
    sources = encoder.sources(messages, where)
    images = [decode(data) for data in sources]
    encoded = encoder.process(encoder.render(messages), images)
    ids = encoded["input_ids"][0].tolist()
    labels = list(ids) if train_on_inputs else [IGNORE] * len(ids)
    if not train_on_inputs:
        for index, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            start = encoder.ids(messages[:index], images, generation_prompt=True) if index else []
            end = encoder.ids(messages[: index + 1], images)
            if ids[: len(end)] != end or end[: len(start)] != start:
                raise StropError(
                    f"{where}: the chat template does not render conversation prefixes as token "
                    "prefixes; set train_on_inputs: true"
                )
            labels[len(start) : len(end)] = end[len(start) :]
    labels = [IGNORE if token in encoder.image_ids else label for token, label in zip(ids, labels)]
    return {"input_ids": ids, "labels": labels, **vision_extras(encoded, sources)}


def has_images(row: dict) -> bool:
    return "vision_images" in row or any(k.startswith(VISION_PREFIX) for k in row)


def _folders(spec_path: str, base_dir: Path | None) -> list[Path]:
    local = resolve_data_path(spec_path, base_dir)
    return [p for p in ((local.parent if local else None), base_dir) if p is not None]


def _read_examples(
    cfg: RunConfig, processor, base_dir: Path | None, report: DataReport
) -> tuple[list[dict], list[dict]]:
    """(image rows, text-only rows), tokenized; over-long rows are dropped (never cut: a cut could split
    an image's tokens from its features)."""
    image_rows: list[dict] = []
    text_rows: list[dict] = []
    for spec in cfg.datasets:
        encoder = Encoder(processor, _folders(spec.path, base_dir), cfg.allow_image_urls)
        before = report.rows
        for where, row in read_rows(spec.path, base_dir, spec.split, spec.name):
            report.rows += 1
            messages = (
                parse_conversation(row, where)
                if spec.type == "vision_chat"
                else text_conversation(row, where, spec.type)
            )
            example = encode_conversation(encoder, messages, where, cfg.train_on_inputs)
            if len(example["input_ids"]) > cfg.sequence_len:
                strategy = "error" if cfg.excess_length_strategy == "error" else "drop"
                drop_excess(
                    report, strategy, where, f"{len(example['input_ids'])} tokens", f"sequence_len={cfg.sequence_len}"
                )
                continue
            if all(label == IGNORE for label in example["labels"][1:]):
                report.no_target += 1
                continue
            (image_rows if has_images(example) else text_rows).append(example)
        if report.rows == before:
            raise StropError(f"dataset {spec.path} is empty")
    return image_rows, text_rows


def mix_text_rows(image_rows: list, text_rows: list, ratio: float | None, seed: int, report: DataReport) -> list:
    """Image rows plus text-only rows making up `ratio` of the result (the survey's remedy against the
    language model forgetting text skills): n_text = ratio · n_image / (1 − ratio), sampled without
    replacement, or cycled when the text rows are fewer. None keeps every row as read."""
    if ratio is None or not image_rows:
        if text_rows:
            report.notes.append(f"text-only rows: {len(text_rows)} of {len(image_rows) + len(text_rows)} (as read)")
        return image_rows + text_rows
    if ratio > 0 and not text_rows:
        raise StropError(f"text_only_ratio={ratio}: no text-only rows to mix in; add a chat or alpaca dataset")
    want = round(ratio * len(image_rows) / (1 - ratio))
    order = list(range(len(text_rows)))
    random.Random(seed).shuffle(order)
    chosen = [text_rows[order[i % len(order)]] for i in range(want)] if want else []
    total = len(image_rows) + len(chosen)
    report.notes.append(
        f"text-only rows: {len(chosen)} of {total} ({len(chosen) / total:.2f}, asked {ratio:.2f}; "
        f"{len(text_rows)} read)"
    )
    return image_rows + chosen


def build_vision_sft_data(
    cfg: RunConfig, processor, base_dir: Path | None
) -> tuple[list[dict], list[dict], DataReport]:
    if cfg.sample_packing:
        raise StropError(
            "sample_packing: image conversations are not packed (a packed row would need each "
            "example's image features and image position ids per segment); set sample_packing: false"
        )
    report = DataReport()
    image_rows, text_rows = _read_examples(cfg, processor, base_dir, report)
    note_excess(report, cfg, "examples")
    if report.no_target:
        report.notes.append(f"dropped {report.no_target} examples with no response tokens to learn from")
    rows = mix_text_rows(image_rows, text_rows, cfg.text_only_ratio, cfg.seed, report)
    train, val = split_validation(rows, cfg, report, "examples")
    return train, val, report


def _cat_padded(pieces: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along dimension 0, zero-padding the other dimensions to the largest: rows of Idefics3 /
    SmolVLM hold (1, images, 3, H, W), and a row with fewer images gets all-zero images, which that model
    drops (with a zero pixel_attention_mask) before its vision encoder."""
    shape = [max(p.shape[d] for p in pieces) for d in range(1, pieces[0].dim())]
    padded = []
    for piece in pieces:
        pad = [amount for d in reversed(range(1, piece.dim())) for amount in (0, shape[d - 1] - piece.shape[d])]
        padded.append(torch.nn.functional.pad(piece, pad) if any(pad) else piece)
    return torch.cat(padded, dim=0)


def collate_vision(
    rows: list[dict], sequences: list[tuple[dict, int]], length: int, processor
) -> dict[str, torch.Tensor]:
    """The image tensors of the sequences, concatenated along the first dimension (images or patches),
    and their per-token outputs, right-padded with 0 to `length`. A sequence is (its row, its token
    count): a pair batch holds every prompt twice, a reply's tokens are text (0)."""
    made = {id(r): image_tensors(processor, r) for r in rows}
    tensors = sorted({k for r in rows for k in made[id(r)]})
    out = {k: _cat_padded([made[id(r)][k] for r, _ in sequences if k in made[id(r)]]) for k in tensors}
    for key in sorted({k for r in rows for k in r if k.startswith(TOKEN_PREFIX)}):
        padded = [(row.get(key, [])[:size] + [0] * length)[:length] for row, size in sequences]
        out[VISION_PREFIX + key[len(TOKEN_PREFIX) :]] = torch.tensor(padded, dtype=torch.long)
    return out


def collate_sft(rows: list[dict], pad_id: int, processor=None) -> dict[str, torch.Tensor]:
    """Right-padded ids, labels and mask, plus the image inputs (`processor` makes them from image bytes)."""
    batch = collate_text([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows], pad_id)
    return batch | collate_vision(
        rows, [(r, len(r["input_ids"])) for r in rows], batch["input_ids"].shape[1], processor
    )


def vision_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's keyword inputs among a batch's `vision.` entries."""
    return {k[len(VISION_PREFIX) :]: v for k, v in batch.items() if k.startswith(VISION_PREFIX)}
