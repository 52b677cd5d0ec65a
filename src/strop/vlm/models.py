"""The three parts of a vision-language model, and which of them train.

Every family transformers ships (LLaVA / LLaVA-OneVision, Qwen2-VL / Qwen2.5-VL, Idefics3 / SmolVLM,
Gemma 3) is a vision encoder, a projector from vision features to the language model's embedding width,
and a language model. Their module names differ, so a parameter's part is read from its name:

    projector:  multi_modal_projector (LLaVA, Gemma 3), visual.merger (Qwen2-VL), connector (Idefics3)
    vision:     vision_tower, visual, vision_model
    language:   everything else (decoder, embeddings, LM head)

The training recipes of the survey's multimodal section map onto that split (Liu et al. 2023, "Visual
Instruction Tuning", LLaVA's two stages): stage 1 trains the projector alone on image-caption pairs so the
language model learns to read the vision features (`train_projector_only`); stage 2 tunes the language
model (LoRA, QLoRA or full) on instructions, the vision tower frozen (`freeze_vision_tower`, default).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from strop.errors import StropError
from strop.run_types import RunConfig

PROJECTOR_PARTS = ("multi_modal_projector", "visual.merger", "connector", "mm_projector")
VISION_PARTS = ("vision_tower", "visual", "vision_model")


def _has_part(name: str, parts: tuple[str, ...]) -> bool:
    dotted = f".{name}."
    return any(f".{part}." in dotted for part in parts)


def part_of(name: str) -> str:
    """'projector', 'vision' or 'language' for a parameter or module name."""
    if _has_part(name, PROJECTOR_PARTS):
        return "projector"
    return "vision" if _has_part(name, VISION_PARTS) else "language"


def is_vlm_config(config) -> bool:
    return getattr(config, "vision_config", None) is not None


def is_vlm(model: nn.Module) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return is_vlm_config(getattr(base, "config", None))


def set_trainable_parts(model: nn.Module, freeze_vision: bool, projector_only: bool) -> dict[str, int]:
    """Freeze the vision tower (and, for stage 1, the language model); parameters a strategy left frozen
    stay frozen. Returns the trainable parameter count of each part."""
    counts = {"vision": 0, "projector": 0, "language": 0}
    for name, param in model.named_parameters():
        part = part_of(name)
        if (part == "vision" and freeze_vision) or (projector_only and part != "projector"):
            param.requires_grad_(False)
        if param.requires_grad:
            counts[part] += param.numel()
    if projector_only and not counts["projector"]:
        raise StropError(
            f"train_projector_only: {type(model).__name__} has no projector parameters "
            f"(looked for {', '.join(PROJECTOR_PARTS)})"
        )
    return counts


def language_linear_names(model: nn.Module, wanted: list[str] | str) -> list[str]:
    """Full names of the language model's nn.Linear modules that a LoRA target list selects ('all-linear':
    every one but the LM head). Vision tower and projector are left out, so LoRA adapts the language
    model only, as the stage-2 recipe asks."""
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or part_of(name) != "language" or name.endswith("lm_head"):
            continue
        if wanted == "all-linear" or name.rsplit(".", 1)[-1] in wanted:
            names.append(name)
    if not names:
        raise StropError(f"lora_target_modules: {wanted} selects no linear layer of the language model")
    return names


def restrict_adapter_to_language(model: nn.Module, peft_config, cfg: RunConfig) -> None:
    """On a VLM with a frozen vision tower, point a LoRA or IA3 config's targets at the language model
    only (IA3's default targets: PEFT's choice for the language model's own architecture)."""
    if not is_vlm(model) or not getattr(cfg, "freeze_vision_tower", True):
        return
    kind = type(peft_config).__name__
    if kind == "LoraConfig":
        wanted = peft_config.target_modules
        peft_config.target_modules = language_linear_names(
            model, "all-linear" if wanted in ("all-linear", None) else sorted(wanted)
        )
    elif kind == "IA3Config":
        from peft.utils import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD
        from peft.utils import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        text_type = base.config.get_text_config().model_type
        wanted = peft_config.target_modules or TARGETS.get(text_type)
        feedforward = peft_config.feedforward_modules or FEEDFORWARD.get(text_type, [])
        if not wanted:
            raise StropError(f"ia3_target_modules: PEFT has no default for '{text_type}'; list the modules to rescale")
        peft_config.target_modules = language_linear_names(model, sorted(wanted))
        peft_config.feedforward_modules = [n for n in peft_config.target_modules if n.rsplit(".", 1)[-1] in feedforward]


def load_processor(model_path: str | Path, trust_remote_code: bool = False):
    """The model's own processor (image processor + tokenizer + chat template)."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(str(model_path), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise StropError(
            f"could not load the processor of '{model_path}' ({type(err).__name__}: "
            f"{' '.join(str(err).split())}); a VLM folder needs processor_config.json, the image "
            "processor's and the tokenizer's files (Qwen2-VL's processor also needs torchvision)"
        ) from err
    if not hasattr(processor, "image_processor"):
        raise StropError(f"'{model_path}' has no image processor: is it a vision-language model?")
    if not getattr(processor, "chat_template", None):
        raise StropError(
            f"'{model_path}': the processor has no chat template (chat_template.jinja or "
            "processor_config.json's chat_template); copy it from the original model"
        )
    tokenizer = processor.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return processor


def image_token_ids(processor) -> set[int]:
    """Token ids that stand for image content (placeholders, their expansions, boundaries): never trained on."""
    tokenizer = processor.tokenizer
    names = [
        getattr(processor, attr, None)
        for attr in (
            "image_token",
            "boi_token",
            "eoi_token",
            "fake_image_token",
            "global_image_token",
            "vision_start_token",
            "vision_end_token",
        )
    ]
    names += ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<image>", "<fake_token_around_image>"]
    ids = {tokenizer.convert_tokens_to_ids(n) for n in names if isinstance(n, str)}
    ids |= {i for i in (getattr(processor, "image_token_id", None),) if isinstance(i, int)}
    return {i for i in ids if isinstance(i, int) and i != tokenizer.unk_token_id and i is not None}
