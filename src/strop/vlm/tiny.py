"""Random-weight vision-language models built from configs, with a processor made locally (no hub).

Why here and not only in tests: the learning check, the shipped shapes example and bench/vlm_speed.py
all need a VLM of a real family (Qwen2-VL, LLaVA) without a download. Each builder writes a complete
model folder (config, safetensors weights, tokenizer, image processor, processor chat template) that
`AutoModelForImageTextToText` and `AutoProcessor` load like any checkpoint from the hub.

The tokenizer is a byte-level BPE trained on a few sentences plus the family's image special tokens; the
chat template is ChatML that renders an image part as the family's placeholder, which the processor
expands into one token per image patch (Qwen2-VL) or per vision feature (LLaVA).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What shape is this? A red circle.",
    "Describe the image. A blue square on white.",
    "green triangle yellow star purple",
    "What colour is the shape? orange",
    "hello world " * 3,
    "Sentiment: positive negative",
]

#: The family's image placeholder and the other special tokens its processor and template use.
FAMILY_TOKENS = {
    "qwen2_vl": ("<|image_pad|>", ["<|vision_start|>", "<|vision_end|>", "<|video_pad|>"]),
    "llava": ("<image>", []),
    "idefics3": ("<image>", ["<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]),
    "gemma3": ("<image_soft_token>", ["<start_of_image>", "<end_of_image>"]),
}
_IMAGE_PART = {
    "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>",
    "llava": "<image>\n",
    "idefics3": "<image>",
    "gemma3": "<start_of_image>",
}


def chat_template(family: str) -> str:
    """ChatML whose content is a string or a list of {type: text|image} parts."""
    image = _IMAGE_PART[family]
    return (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
        "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
        "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '" + image.replace("\n", "\\n") + "' }}"
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
        "{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )


def build_tokenizer(family: str, corpus: list[str] | None = None, vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    image_token, extra = FAMILY_TOKENS[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", image_token, *extra]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS + list(corpus or []), trainer)
    named = {"image_token": image_token}
    if family == "gemma3":  # Gemma 3's processor reads the image boundary tokens from the tokenizer
        named |= {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token="<|im_start|>",
        extra_special_tokens=named,
    )
    fast.chat_template = chat_template(family)
    return fast


def _decoder(vocab: int, hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, **extra) -> dict:
    """A decoder's text config with untied embeddings; `extra` holds the family's own keys and token ids."""
    return dict(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        tie_word_embeddings=False,
        **extra,
    )


@dataclass(frozen=True)
class TowerSizes:
    """A tiny LLaVA, Idefics3 or Gemma 3: a decoder and a CLIP or SigLIP vision tower of 14-pixel patches.
    `vocab` None: the tokenizer's size."""

    image_size: int
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    vision_width: int = 32
    vision_depth: int = 2
    vocab: int | None = None

    @classmethod
    def of(cls, image_size: int, sizes: dict) -> TowerSizes:
        """The sizes a builder was given, over the family's default image size."""
        return cls(**({"image_size": image_size} | sizes))

    def text(self, tok, **extra) -> dict:
        return _decoder(
            self.vocab or len(tok),
            self.hidden,
            self.layers,
            self.heads,
            self.kv_heads,
            self.intermediate,
            max_position_embeddings=4096,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id,
            **extra,
        )

    def tower(self, **extra) -> dict:
        return dict(
            hidden_size=self.vision_width,
            intermediate_size=self.vision_width * 2,
            num_hidden_layers=self.vision_depth,
            num_attention_heads=2,
            image_size=self.image_size,
            patch_size=14,
            **extra,
        )


def qwen2_vl_config(
    token_ids: dict[str, int],
    vocab: int,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    vision_width: int = 32,
    vision_depth: int = 2,
    vision_heads: int = 2,
    mlp_ratio: float = 2,
):
    """A Qwen2-VL config; `token_ids` holds eos/pad/bos and the image, video and vision boundary token ids."""
    from transformers import Qwen2VLConfig

    text = _decoder(
        vocab,
        hidden,
        layers,
        heads,
        kv_heads,
        intermediate,
        max_position_embeddings=32768,
        eos_token_id=token_ids["eos"],
        pad_token_id=token_ids["pad"],
        bos_token_id=token_ids["bos"],
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": _mrope_sections(hidden // heads)},
    )
    vision = dict(
        depth=vision_depth,
        embed_dim=vision_width,
        hidden_size=hidden,
        num_heads=vision_heads,
        mlp_ratio=mlp_ratio,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        in_channels=3,
    )
    return Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=token_ids["image_token_id"],
        video_token_id=token_ids["video_token_id"],
        vision_start_token_id=token_ids["vision_start_token_id"],
        vision_end_token_id=token_ids["vision_end_token_id"],
        tie_word_embeddings=False,
    )


def qwen2_vl_token_ids(tok) -> dict[str, int]:
    names = {
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
    }
    return {k: tok.convert_tokens_to_ids(v) for k, v in names.items()} | {
        "eos": tok.eos_token_id,
        "pad": tok.pad_token_id,
        "bos": tok.bos_token_id,
    }


def qwen2_vl_parts(tok, **sizes):
    """(config, processor) of a Qwen2-VL; the sizes default to a tiny one. transformers' Qwen2-VL processor
    needs torchvision (for its video processor) even for images."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor

    config = qwen2_vl_config(qwen2_vl_token_ids(tok), sizes.pop("vocab", None) or len(tok), **sizes)
    images = Qwen2VLImageProcessor(
        min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    processor = Qwen2VLProcessor(image_processor=images, tokenizer=tok, chat_template=tok.chat_template)
    return config, processor


def _mrope_sections(head_dim: int) -> list[int]:
    """Qwen2-VL's rotary halves split over (time, height, width): the sections sum to head_dim / 2."""
    half = head_dim // 2
    temporal = half // 4
    height = (half - temporal) // 2
    return [temporal, height, half - temporal - height]


def llava_parts(tok, **sizes):
    """(config, processor) of a LLaVA-1.5 (CLIP vision tower, two-layer MLP projector, Llama decoder)."""
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaProcessor

    size = TowerSizes.of(28, sizes)
    config = LlavaConfig(
        text_config=size.text(tok, model_type="llama"),
        vision_config=size.tower(model_type="clip_vision_model", projection_dim=size.vision_width),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    images = CLIPImageProcessor(
        size={"shortest_edge": size.image_size}, crop_size={"height": size.image_size, "width": size.image_size}
    )
    processor = LlavaProcessor(
        image_processor=images,
        tokenizer=tok,
        patch_size=14,
        vision_feature_select_strategy="default",
        chat_template=tok.chat_template,
        num_additional_image_tokens=1,
    )
    return config, processor


def idefics3_parts(tok, **sizes):
    """(config, processor) of an Idefics3 / SmolVLM (SigLIP tower, pixel-shuffle connector, Llama decoder);
    one image per picture (no splitting into tiles), (image_size / 14 / 2)² tokens each."""
    from transformers import Idefics3Config, Idefics3ImageProcessor, Idefics3Processor

    size = TowerSizes.of(56, sizes)
    config = Idefics3Config(
        text_config=size.text(tok, model_type="llama"),
        vision_config=size.tower(),
        scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=False,
    )
    longest = {"longest_edge": size.image_size}
    images = Idefics3ImageProcessor(do_image_splitting=False, size=longest, max_image_size=longest)
    processor = Idefics3Processor(
        image_processor=images,
        tokenizer=tok,
        image_seq_len=(size.image_size // 28) ** 2,
        chat_template=tok.chat_template,
    )
    return config, processor


def gemma3_parts(tok, **sizes):
    """(config, processor) of a Gemma 3 (SigLIP tower, pooled projector, Gemma 3 decoder); 4 tokens an image."""
    from transformers import Gemma3Config, Gemma3ImageProcessor, Gemma3Processor

    size = TowerSizes.of(56, sizes)
    text = size.text(tok, model_type="gemma3_text", head_dim=size.hidden // size.heads, sliding_window=64)
    ids = {
        name: tok.convert_tokens_to_ids(token)
        for name, token in (
            ("boi_token_index", "<start_of_image>"),
            ("eoi_token_index", "<end_of_image>"),
            ("image_token_index", "<image_soft_token>"),
        )
    }
    config = Gemma3Config(
        text_config=text,
        vision_config=size.tower(model_type="siglip_vision_model"),
        mm_tokens_per_image=4,
        **ids,
        tie_word_embeddings=False,
    )
    images = Gemma3ImageProcessor(size={"height": size.image_size, "width": size.image_size})
    processor = Gemma3Processor(
        image_processor=images, tokenizer=tok, image_seq_length=4, chat_template=tok.chat_template
    )
    return config, processor


BUILDERS = {"qwen2_vl": qwen2_vl_parts, "llava": llava_parts, "idefics3": idefics3_parts, "gemma3": gemma3_parts}


def build_tiny_vlm(
    folder: Path, family: str = "qwen2_vl", seed: int = 0, corpus: list[str] | None = None, **sizes
) -> Path:
    """Write a random-weight VLM of `family` with its processor into `folder` and return the folder."""
    from transformers import AutoModelForImageTextToText

    tok = build_tokenizer(family, corpus)
    config, processor = BUILDERS[family](tok, **sizes)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder
