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

from strop.models.quantized import load_4bit
from strop.run_types import RunConfig
from strop.runtime.distributed import QUANTIZED_BASE
from strop.strategies.lora import LoraStrategy


class QLoraStrategy(LoraStrategy):
    """`adapter: qlora`: LoRA with the base loaded in 4-bit whether or not `load_in_4bit` is set."""

    name = "qlora"
    fsdp_unsupported = QUANTIZED_BASE

    def quantized_base_estimate(self, cfg: RunConfig, adapter: int) -> bool:
        return True

    def load(self, model_path: str, cfg: RunConfig, device: torch.device) -> nn.Module:
        from strop.strategies.kernels import load_dtype

        return load_4bit(model_path, cfg, device, dtype=load_dtype(self, cfg, device))
