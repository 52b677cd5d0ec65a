"""LoRA (Hu et al. 2021) and its variants, on PEFT's layers.

    LoRA:    W' = W + (α / r) · B A,        A ∈ R^{r×d_in}, B ∈ R^{d_out×r}, B = 0 at start
    rsLoRA:  W' = W + (α / √r) · B A        (Kalajdzievski 2023: rank-stabilised scaling, so the update's
                                              size does not shrink as r grows)
    DoRA:    W' = m · (W + s·B A) / ‖W + s·B A‖_c   (Liu et al. 2024: a trained magnitude vector m per
                                              output row, ‖·‖_c the row-wise norm of the adapted weight;
                                              m starts at ‖W‖_c so W' = W at step 0)
    QLoRA:   LoRA over a frozen base stored in 4-bit NF4 with double quantization (Dettmers et al. 2023);
             see strategies/qlora.py. `adapter: lora` + `load_in_4bit: true` is QLoRA as in Axolotl.

Built on PEFT so that the saved adapter is the format vLLM, TGI, llama.cpp's converter and
`peft.PeftModel.from_pretrained` read; DoRA and rsLoRA are PEFT flags and save the same way.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from strop.models.shapes import Shapes, linear_targets
from strop.run_types import RunConfig
from strop.strategies.base import StrategyParams
from strop.strategies.peft_base import PeftStrategy


class LoraParams(StrategyParams):
    lora_r: int = Field(8, gt=0, description="LoRA rank.")
    lora_alpha: float = Field(
        16, gt=0, description="LoRA scaling numerator: the update is scaled by lora_alpha / lora_r."
    )
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    lora_target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or all-linear."
    )
    peft_use_dora: bool = Field(
        False, description="DoRA: decompose each adapted weight into magnitude and direction (LoRA on the direction)."
    )
    peft_use_rslora: bool = Field(
        False, description="rsLoRA: scale the update by lora_alpha / sqrt(lora_r) instead of lora_alpha / lora_r."
    )


class LoraStrategy(PeftStrategy):
    name = "lora"
    params = LoraParams
    target_key = "lora_target_modules"
    use_dora = False
    use_rslora = False

    def peft_config(self, cfg: RunConfig):
        from peft import LoraConfig

        return LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.lora_target_modules,
            use_dora=self.use_dora or cfg.peft_use_dora,
            use_rslora=self.use_rslora or cfg.peft_use_rslora,
            modules_to_save=getattr(cfg, "lora_modules_to_save", None),
            task_type="CAUSAL_LM",
        )

    def peft_config_for(self, model, cfg: RunConfig):
        """On an MoE model, `moe_lora_targets` picks what all-linear means (strop/moe/adapters.py)."""
        from strop.moe.adapters import apply_moe_targets

        config = self.peft_config(cfg)
        apply_moe_targets(model, cfg, config, config.use_dora)
        return config

    def kernel_options(self, cfg: RunConfig):
        """Every kernel; under DoRA the frozen base keeps its dtype, because DoRA's magnitude divides by the
        norm of the adapted weight itself (PEFT's DoRA forward, never the fused LoRA one, runs there)."""
        options = super().kernel_options(cfg)
        options.bf16_frozen = not (self.use_dora or cfg.peft_use_dora)
        return options

    def trainable_estimate(self, cfg: RunConfig, shapes: Shapes) -> int:
        """r·(in + out) per adapted linear (+ out for DoRA's magnitude); on an MoE with all-linear targets,
        what `moe_lora_targets` selects: r·E·(in + out) per fused expert weight (one LoRA pair per expert)
        and the routers trained fully."""
        dora = self.use_dora or cfg.peft_use_dora
        if shapes.moe_parts and cfg.lora_target_modules == "all-linear":
            names = {n for part in cfg.moe_lora_targets for n in shapes.moe_parts[part][0]}
            linears = [t for t in shapes.linears if t[0] in names]
            fused = sum(
                cfg.lora_r * e * (i + o) for part in cfg.moe_lora_targets for e, o, i in shapes.moe_parts[part][1]
            )
            saved = sum(shapes.moe_parts[part][2] for part in cfg.moe_lora_targets)
        else:
            linears, fused, saved = linear_targets(shapes, cfg.lora_target_modules), 0, 0
        return sum(cfg.lora_r * (i + o) + (o if dora else 0) for _, i, o in linears) + fused + saved

    def activation_bytes_per_token(self, cfg: RunConfig, shapes: Shapes) -> float:
        """DoRA rescales the base output and the LoRA output by m/‖W'‖: both are saved, 2 × d_out floats."""
        if not (self.use_dora or cfg.peft_use_dora):
            return 0
        return sum(8 * o for _, _, o in linear_targets(shapes, cfg.lora_target_modules))

    def describe(self, cfg: RunConfig) -> str:
        flags = [
            f
            for f, on in (
                ("dora", self.use_dora or cfg.peft_use_dora),
                ("rslora", self.use_rslora or cfg.peft_use_rslora),
                ("4-bit base", cfg.load_in_4bit or self.name == "qlora"),
                ("8-bit base", getattr(cfg, "load_in_8bit", False) and not cfg.load_in_4bit and self.name != "qlora"),
            )
            if on
        ]
        return f"r={cfg.lora_r} alpha={cfg.lora_alpha} targets={cfg.lora_target_modules}" + (
            f" ({', '.join(flags)})" if flags else ""
        )


class DoraStrategy(LoraStrategy):
    """`adapter: dora`, the same as `adapter: lora` + `peft_use_dora: true`."""

    name = "dora"
    use_dora = True


class RsLoraStrategy(LoraStrategy):
    """`adapter: rslora`, the same as `adapter: lora` + `peft_use_rslora: true`."""

    name = "rslora"
    use_rslora = True
