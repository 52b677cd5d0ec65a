"""A base model with its decoder linear layers in 4-bit NF4, double-quantized (QLoRA, Dettmers et al. 2023;
the format is described in strategies/qlora.py), through bitsandbytes."""

from __future__ import annotations

import torch
from torch import nn

from strop.errors import StropError
from strop.moe.detect import QUANTIZATION_SKIPS, is_moe_config
from strop.run_types import RunConfig
from strop.runtime.precision import autocast_dtype


def bnb_4bit_config(compute_dtype: torch.dtype = torch.float32, skip: list[str] | None = None):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=torch.uint8,
        llm_int8_skip_modules=skip,
    )


def load_4bit(
    model_path: str, cfg: RunConfig, device: torch.device, eight_bit: bool = False, dtype: torch.dtype = torch.float32
) -> nn.Module:
    """The base with every decoder linear layer in NF4 (double-quantized); the rest in `dtype`.
    `eight_bit`: LLM.int8 instead (Dettmers et al. 2022: int8 weights, outlier features in fp16).

    `dtype` is also what bitsandbytes dequantizes the NF4 weights to. Loaded in float32 under bf16
    kernels, every matmul's weight went NF4 → fp32 → a bf16 copy: profiled on an H200 (8B QLoRA through
    `strop train`), dequantization and casts were 16.7% of the GPU time (9.2% in the direct benchmark row,
    which loads in bf16) and the command ran at 0.79× that row."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        key = "load_in_8bit" if eight_bit else "load_in_4bit / QLoRA"
        raise StropError(f"{key} needs bitsandbytes: pip install bitsandbytes") from err
    from transformers import AutoConfig, BitsAndBytesConfig

    from strop.models.loading import auto_class

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=cfg.trust_remote_code)
    if cfg.model_type and cfg.model_type not in (getattr(config, "architectures", None) or []):
        raise StropError(f"model_type is {cfg.model_type} but {model_path} is {config.architectures}")
    compute = autocast_dtype(cfg, device) or torch.float32
    skip = (
        QUANTIZATION_SKIPS if is_moe_config(config) else None
    )  # fused experts stay float: bnb quantizes nn.Linear only
    quantization = (
        BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
        if eight_bit
        else bnb_4bit_config(compute, skip)
    )
    return auto_class(config).from_pretrained(
        model_path,
        config=config,
        dtype=dtype,
        quantization_config=quantization,
        device_map={"": device},
        trust_remote_code=cfg.trust_remote_code,
        attn_implementation="sdpa",
    )
