"""QLoRA (Dettmers et al. 2023): LoRA adapters trained through a frozen base stored in 4-bit NormalFloat.

NF4 stores each weight as one of 16 levels q_i placed at quantiles of N(0, 1) rescaled to [-1, 1], per
block of 64 weights with that block's absmax c: w ≈ c · q_i. Double quantization stores the fp32
absmax constants themselves in 8-bit, per block of 256 (with one fp32 scale each), which brings the
overhead from 32/64 = 0.5 to 8/64 + 32/(64·256) ≈ 0.127 bits a weight. The forward dequantizes a
weight to the compute dtype just in time; gradients flow to the LoRA weights (kept in float32) and to
the input, never to the 4-bit base.

bitsandbytes (Linear4bit) does the storage and the kernels, on CUDA and, since 0.4x, on the CPU; only
the linear layers of the decoder are quantized (transformers keeps the LM head and embeddings in float).
The saved adapter is plain PEFT LoRA plus `strop_quantization.json`, which records the 4-bit base.
"""

from __future__ import annotations

import torch
from torch import nn

from strop.errors import StropError
from strop.strategies.lora import LoraStrategy


def bnb_4bit_config(compute_dtype: torch.dtype = torch.float32):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_quant_storage=torch.uint8)


def load_4bit(model_path: str, cfg, device: torch.device, eight_bit: bool = False) -> nn.Module:
    """The base with every decoder linear layer in NF4 (double-quantized); the rest stays float32.
    `eight_bit`: LLM.int8 instead (Dettmers et al. 2022: int8 weights, outlier features in fp16)."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        key = "load_in_8bit" if eight_bit else "load_in_4bit / QLoRA"
        raise StropError(f"{key} needs bitsandbytes: pip install bitsandbytes") from err
    from transformers import AutoConfig, AutoModelForCausalLM

    from strop.train.optim import autocast_dtype

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=cfg.trust_remote_code)
    if cfg.model_type and cfg.model_type not in (getattr(config, "architectures", None) or []):
        raise StropError(f"model_type is {cfg.model_type} but {model_path} is {config.architectures}")
    compute = autocast_dtype(cfg, device) or torch.float32
    from transformers import BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_8bit=True) if eight_bit else bnb_4bit_config(compute)
    return AutoModelForCausalLM.from_pretrained(
        model_path, config=config, dtype=torch.float32, quantization_config=quantization,
        device_map={"": device}, trust_remote_code=cfg.trust_remote_code, attn_implementation="sdpa")


class QLoraStrategy(LoraStrategy):
    """`adapter: qlora`: LoRA with the base loaded in 4-bit whether or not `load_in_4bit` is set."""

    name = "qlora"

    def load(self, model_path: str, cfg, device: torch.device) -> nn.Module:
        return load_4bit(model_path, cfg, device)
