"""(IA)³ (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context
Learning"): learned vectors rescale activations elementwise,

    k ← l_k ⊙ k,   v ← l_v ⊙ v,   h_ff ← l_ff ⊙ h_ff      (l initialised to 1, so the model starts unchanged)

i.e. a per-feature scale on the outputs of the attention keys/values and on the input of the feed-forward
down projection. Tens of thousands of parameters for a 100M model. PEFT's layers, PEFT's format; the
scales merge exactly into the weights.
"""

from __future__ import annotations

from pydantic import Field

from strop.models.shapes import Shapes, linear_targets
from strop.run_types import RunConfig
from strop.strategies.base import StrategyParams
from strop.strategies.peft_base import PeftStrategy


class IA3Params(StrategyParams):
    ia3_target_modules: list[str] | None = Field(
        None,
        description="(ia3) Modules to rescale; default: PEFT's choice for the architecture (e.g. k_proj, v_proj, down_proj).",
    )
    ia3_feedforward_modules: list[str] | None = Field(
        None,
        description="(ia3) Which targets are feed-forward (scaled on their input, not output); default: PEFT's choice.",
    )


class IA3Strategy(PeftStrategy):
    name = "ia3"
    params = IA3Params
    target_key = "ia3_target_modules"

    def peft_config(self, cfg: RunConfig):
        from peft import IA3Config

        return IA3Config(
            target_modules=cfg.ia3_target_modules,
            feedforward_modules=cfg.ia3_feedforward_modules,
            task_type="CAUSAL_LM",
        )

    def describe(self, cfg: RunConfig) -> str:
        return f"targets={cfg.ia3_target_modules or 'PEFT default'}"

    def trainable_estimate(self, cfg: RunConfig, shapes: Shapes) -> int:
        """One scale per input feature of a feed-forward target, per output feature of the others."""
        from peft.utils import TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FF
        from peft.utils import TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS

        targets = cfg.ia3_target_modules or TARGETS.get(shapes.model_type, [])
        feedforward = cfg.ia3_feedforward_modules or FF.get(shapes.model_type, [])
        return sum(i if any(n.endswith(f) for f in feedforward) else o for n, i, o in linear_targets(shapes, targets))
