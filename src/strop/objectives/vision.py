"""SFT and the preference objectives (the pair ones and KTO) on image conversations.

Each is the text objective of the same name with three changes: rows come from the model's processor
(strop/vlm/data.py, images included), batches carry the image tensors under `vision.`, and before the
first step the vision tower is frozen (and for stage 1 everything but the projector, strop/vlm/models.py).
The losses are the text objectives' own: the images only change what the log-probs are conditioned on.
The processor is saved beside every artifact, so an adapter or model folder loads with AutoProcessor.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from pydantic import BaseModel, Field

from strop.data import DataReport, note_excess, split_validation
from strop.data.preference import (
    _fit,
    _reply,
    assign_kl_partners,
    collate_pairs,
    collate_unpaired,
    pair_row,
    unpaired_row,
)
from strop.data.readers import read_rows
from strop.errors import StropError
from strop.objectives.base import Objective
from strop.objectives.cpo import CPOObjective
from strop.objectives.dpo import DPOObjective, IPOObjective
from strop.objectives.kto import KTOObjective, KTOParams
from strop.objectives.orpo import ORPOObjective
from strop.objectives.sft import SFTObjective
from strop.objectives.simpo import SimPOObjective
from strop.run_types import RunConfig, RunState
from strop.vlm.data import (
    Encoder,
    _folders,
    build_vision_sft_data,
    collate_sft,
    collate_vision,
    has_images,
    parse_conversation,
    vision_extras,
)
from strop.vlm.images import decode
from strop.vlm.models import load_processor, set_trainable_parts

VISION_DATASET_TYPES = ("vision_chat", "vision_dpo", "vision_kto")


class VisionParams(BaseModel):
    freeze_vision_tower: bool = Field(
        True, description="Keep the vision encoder frozen (LoRA targets then leave it out too)."
    )
    train_projector_only: bool = Field(
        False,
        description="Stage 1 alignment: train only the "
        "projector between vision encoder and language model (full strategy).",
    )
    text_only_ratio: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Share of training rows that "
        "are text-only (from chat/alpaca datasets), sampled or repeated to match; "
        "null keeps the rows as read.",
    )
    allow_image_urls: bool = Field(
        False, description="Let image parts name http(s) URLs, downloaded while the data is built."
    )


class VisionMixin:
    """What every vision objective adds to its text objective (see the module docstring)."""

    processor = None

    def load_processor(self, cfg: RunConfig):
        from strop.models import resolve_model_path

        if cfg.train_projector_only and cfg.strategy != "full":
            raise StropError(
                f"train_projector_only trains the projector's own weights: leave adapter unset "
                f"(full), not '{cfg.adapter}'; use an adapter in stage 2"
            )
        self.processor = load_processor(resolve_model_path(cfg.base_model), cfg.trust_remote_code)
        return self.processor

    def freeze_parts(self, run: RunState) -> None:
        counts = set_trainable_parts(run.model, run.cfg.freeze_vision_tower, run.cfg.train_projector_only)
        print("strop: trainable parameters by part: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))

    def save_artifacts(self, model, out_dir: Path) -> None:
        super().save_artifacts(model, out_dir)  # type: ignore[misc]  # mixin: the objective class after it in the MRO has it
        if self.processor is not None:
            self.processor.save_pretrained(out_dir)


class VisionSFTObjective(VisionMixin, SFTObjective):
    name = "vision_sft"
    dataset_types = ("vision_chat",)
    params = VisionParams

    def build_data(self, cfg: RunConfig, tokenizer, base_dir: Path | None):
        return build_vision_sft_data(cfg, self.load_processor(cfg), base_dir)

    def collate(self, rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
        batch = collate_sft(rows, pad_id, self.processor)
        batch["text_only_rows"] = torch.tensor(sum(not has_images(r) for r in rows))
        return batch

    def loss(self, model, batch: dict[str, torch.Tensor], denominator: float):
        """SFT's loss, and the step's count of text-only and image rows (the loop sums them over the
        micro-batches and processes of a step): the text_only_ratio actually trained, step by step."""
        loss, metrics = super().loss(model, batch, denominator)
        text = batch["text_only_rows"].float()
        return loss, metrics | {"text_only_rows": text, "image_rows": batch["input_ids"].shape[0] - text}

    def prepare_training(self, run: RunState) -> None:
        self.freeze_parts(run)


def _image_digest(extras: dict) -> str:
    digest = hashlib.sha1()
    for data in extras.get("vision_images", []):
        digest.update(data + b"|")
    return digest.hexdigest()[:12]


def _pair_prompt(row: dict, where: str) -> list[dict]:
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    if not isinstance(prompt, list):
        raise StropError(f"{where}: field 'prompt' must be a string or a list of messages")
    messages = parse_conversation({"prompt": prompt}, where, "prompt")
    if messages[-1]["role"] == "assistant":
        raise StropError(f"{where}: field 'prompt' ends with an assistant turn; the replies go in chosen/rejected")
    return messages


def _encode_replies(
    encoder: Encoder, row: dict, where: str, sides: tuple[str, ...]
) -> tuple[list[int], list[list[int]], dict]:
    """Prompt ids (generation prompt included) with its image tensors, and the ids of the reply in each
    of the fields `sides`."""
    prompt = _pair_prompt(row, where)
    sources = encoder.sources(prompt, where, "prompt")
    prompt_text = encoder.render(prompt, generation_prompt=True)
    encoded = encoder.process(prompt_text, [decode(data) for data in sources])
    replies = []
    for side in sides:
        text, _ = _reply(row.get(side), where, side, None)
        full = encoder.render(prompt + [{"role": "assistant", "content": [{"type": "text", "text": text}]}])
        if not full.startswith(prompt_text):
            raise StropError(f"{where}: the chat template does not render the prompt as a prefix of the conversation")
        replies.append(encoder.processor.tokenizer(full[len(prompt_text) :], add_special_tokens=False)["input_ids"])
    return encoded["input_ids"][0].tolist(), replies, vision_extras(encoded, sources)


def encode_pair(encoder: Encoder, row: dict, where: str) -> tuple[list[int], list[list[int]], dict]:
    """Prompt ids with its image tensors, and the ids of the chosen and the rejected reply."""
    prompt_ids, replies, extras = _encode_replies(encoder, row, where, ("chosen", "rejected"))
    if replies[0] == replies[1]:
        raise StropError(f"{where}: 'chosen' and 'rejected' are the same reply: nothing to prefer")
    return prompt_ids, replies, extras


def encode_unpaired(encoder: Encoder, row: dict, where: str) -> list[tuple[list[int], list[int], bool, dict]]:
    """KTO's examples of a row, (prompt ids, completion ids, desirable, image extras): one for a
    `vision_kto` row {prompt, completion, label}, two for a `vision_dpo` pair (chosen desirable)."""
    if "completion" not in row:
        prompt_ids, (chosen, rejected), extras = encode_pair(encoder, row, where)
        return [(prompt_ids, chosen, True, extras), (prompt_ids, rejected, False, extras)]
    label = row.get("label")
    if not isinstance(label, bool):
        raise StropError(f"{where}: field 'label' must be true (desirable) or false (undesirable), got {label!r}")
    prompt_ids, (completion,), extras = _encode_replies(encoder, row, where, ("completion",))
    return [(prompt_ids, completion, label, extras)]


def build_vision_pair_data(
    cfg: RunConfig, processor, base_dir: Path | None
) -> tuple[list[dict], list[dict], DataReport]:
    """{prompt (messages with image parts), chosen, rejected} rows → pair rows carrying the prompt's images.
    The reference cache key covers the image tensors, so pairs that differ only in their image differ."""
    report, rows = DataReport(), []
    for spec in cfg.datasets:
        if spec.type != "vision_dpo":
            raise StropError(
                f"datasets: type '{spec.type}' cannot be mixed into a vision pair preference run (use vision_dpo)"
            )
        encoder = Encoder(processor, _folders(spec.path, base_dir), cfg.allow_image_urls)
        for where, row in read_rows(spec.path, base_dir, spec.split, spec.name):
            report.rows += 1
            prompt_ids, replies, extras = encode_pair(encoder, row, where)
            strategy = "error" if cfg.excess_length_strategy == "error" else "drop"  # a cut prompt loses image tokens
            fitted = _fit(prompt_ids, replies, cfg.sequence_len, strategy, where, report)
            if fitted is not None:
                chosen_ids, rejected_ids = replies
                pair = pair_row(prompt_ids, chosen_ids, rejected_ids, where=where) | extras
                pair["key"] += _image_digest(extras)
                rows.append(pair)
    note_excess(report, cfg, "rows")
    train, val = split_validation(rows, cfg, report, "rows")
    return train, val, report


class VisionPairMixin(VisionMixin):
    dataset_types = ("vision_dpo",)

    def build_data(self, cfg: RunConfig, tokenizer, base_dir: Path | None):
        self.cfg = cfg
        if cfg.sample_packing:
            raise StropError("sample_packing: preference pairs with images are not packed; set sample_packing: false")
        return build_vision_pair_data(cfg, self.load_processor(cfg), base_dir)

    def collate(self, rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
        batch = collate_pairs(rows, pad_id)
        sequences = [(r, r["prompt_len"]) for r in rows] * 2  # chosen sequences first, then rejected
        return batch | collate_vision(rows, sequences, batch["input_ids"].shape[1], self.processor)

    def prepare_training(self, run: RunState) -> None:
        self.freeze_parts(run)
        super().prepare_training(run)  # type: ignore[misc]  # mixin: the objective class after it in the MRO has it


def build_vision_unpaired_data(
    cfg: RunConfig, processor, base_dir: Path | None
) -> tuple[list[dict], list[dict], DataReport]:
    """KTO rows carrying their prompt's images, each with the completion of a row whose prompt (text or
    images) differs as its mismatched KL completion; the reference cache key covers the image tensors."""
    report, rows = DataReport(), []
    for spec in cfg.datasets:
        if spec.type not in ("vision_kto", "vision_dpo"):
            raise StropError(
                f"datasets: type '{spec.type}' cannot be mixed into a vision KTO run (use vision_kto or vision_dpo)"
            )
        encoder = Encoder(processor, _folders(spec.path, base_dir), cfg.allow_image_urls)
        for where, row in read_rows(spec.path, base_dir, spec.split, spec.name):
            report.rows += 1
            for prompt_ids, completion, label, extras in encode_unpaired(encoder, row, where):
                strategy = "error" if cfg.excess_length_strategy == "error" else "drop"  # keep every image token
                if _fit(prompt_ids, [completion], cfg.sequence_len, strategy, where, report) is not None:
                    rows.append(unpaired_row(prompt_ids, completion, label, where) | extras)
    note_excess(report, cfg, "rows")
    train, val = split_validation(rows, cfg, report, "rows")
    for split in (train, val):
        if split:
            assign_kl_partners(split, prompt_of=lambda r: (r["input_ids"][: r["prompt_len"]], _image_digest(r)))
            for row in split:
                row["key"] += _image_digest(row)
    labels = [r["label"] for r in train]
    if all(labels) or not any(labels):
        report.notes.append("all training rows carry the same label: KTO learns best with both kinds")
    return train, val, report


class VisionKTOParams(KTOParams, VisionParams):
    pass


class VisionKTOObjective(VisionMixin, KTOObjective):
    """KTO on image rows. A batch holds every row's prompt twice (matched, then mismatched completion), so
    its image tensors are the first half's repeated: each half of the forward gets its half of them."""

    name = "vision_kto"
    dataset_types = ("vision_kto", "vision_dpo")
    params = VisionKTOParams

    def build_data(self, cfg: RunConfig, tokenizer, base_dir: Path | None):
        self.cfg = cfg
        if cfg.sample_packing:
            raise StropError("sample_packing: KTO rows with images are not packed; set sample_packing: false")
        return build_vision_unpaired_data(cfg, self.load_processor(cfg), base_dir)

    def collate(self, rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
        batch = collate_unpaired(rows, pad_id)
        sequences = [(r, r["prompt_len"]) for r in rows] * 2  # matched sequences first, then mismatched
        return batch | collate_vision(rows, sequences, batch["input_ids"].shape[1], self.processor)

    def sequences(self, batch: dict[str, torch.Tensor], half: int) -> dict[str, torch.Tensor]:
        text = super().sequences(batch, half)
        images = {}
        for key, value in batch.items():
            if key.startswith("vision."):
                size = value.shape[0] // 2
                images[key] = value[half * size : (half + 1) * size]
        return text | images

    def prepare_training(self, run: RunState) -> None:
        self.freeze_parts(run)
        super().prepare_training(run)


def _vision_pair(base: type[Objective], name: str) -> type:
    params = type(f"Vision{base.params.__name__}", (base.params, VisionParams), {}) if base.params else VisionParams
    return type(f"Vision{base.__name__}", (VisionPairMixin, base), {"name": name, "params": params})


VisionDPOObjective = _vision_pair(DPOObjective, "vision_dpo")
VISION_OBJECTIVES = {
    "vision_sft": VisionSFTObjective(),
    "vision_dpo": VisionDPOObjective(),
    "vision_ipo": _vision_pair(IPOObjective, "vision_ipo")(),
    "vision_orpo": _vision_pair(ORPOObjective, "vision_orpo")(),
    "vision_simpo": _vision_pair(SimPOObjective, "vision_simpo")(),
    "vision_cpo": _vision_pair(CPOObjective, "vision_cpo")(),
    "vision_kto": VisionKTOObjective(),
}
#: The objective a text `rl` value means when the datasets hold images.
VISION_OF = {
    "dpo": "vision_dpo",
    "ipo": "vision_ipo",
    "orpo": "vision_orpo",
    "simpo": "vision_simpo",
    "cpo": "vision_cpo",
    "kto": "vision_kto",
    "sft": "vision_sft",
}
