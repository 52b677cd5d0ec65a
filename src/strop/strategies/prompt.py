"""Soft prompts: the model is frozen and only a few virtual tokens are learned.

- Prompt tuning (Lester et al. 2021): n trained embedding vectors P ∈ R^{n×d} are prepended to the input
  embeddings, [P; E(x)], at the first layer only.
- Prefix tuning (Li & Liang 2021): trained key/value vectors are prepended at every attention layer,
  attention(Q, [P_k; K], [P_v; V]); the input itself is unchanged.

PEFT's implementations and format. Prompt tuning makes the model's logits n positions longer than the
input; objectives compute log-probs aligned with their own input ids, so the strategy drops the logits
of the virtual positions (the only change needed; generation goes through PEFT's own `generate`).
"""

from __future__ import annotations

from pydantic import Field
from torch import nn

from strop.models.shapes import Shapes
from strop.run_types import RunConfig
from strop.strategies.base import StrategyParams
from strop.strategies.peft_base import PeftStrategy


class SoftPromptParams(StrategyParams):
    num_virtual_tokens: int = Field(
        20, gt=0, description="(prompt_tuning, prefix_tuning) Number of trained virtual tokens."
    )


def _drop_virtual_logits(model: nn.Module, n: int) -> None:
    """Wrap this PeftModel instance's forward so logits align with the caller's input ids."""
    forward = model.forward

    def aligned_forward(*args, **kwargs):
        out = forward(*args, **kwargs)
        ids = kwargs.get("input_ids", args[0] if args else None)
        length = ids.shape[1] if ids is not None else kwargs["inputs_embeds"].shape[1]
        logits = getattr(out, "logits", None)
        if logits is not None and logits.shape[1] == length + n:
            out.logits = logits[:, n:]
        return out

    model.forward = aligned_forward


class PromptTuningStrategy(PeftStrategy):
    name = "prompt_tuning"
    params = SoftPromptParams

    def describe(self, cfg: RunConfig) -> str:
        return f"{cfg.num_virtual_tokens} virtual tokens"

    def trainable_estimate(self, cfg: RunConfig, shapes: Shapes) -> int:
        return cfg.num_virtual_tokens * shapes.hidden

    def kernel_options(self, cfg: RunConfig):
        """None: PEFT inserts the virtual tokens (or prefix keys) in its own forward, which the fused loss
        would bypass, and prefix tuning feeds per-layer caches that checkpointing must not replay."""
        return None

    def peft_config(self, cfg: RunConfig):
        from peft import PromptTuningConfig

        return PromptTuningConfig(num_virtual_tokens=cfg.num_virtual_tokens, task_type="CAUSAL_LM")

    def adapt(self, model: nn.Module, cfg: RunConfig) -> nn.Module:
        from peft import get_peft_model

        model = get_peft_model(model, self.peft_config(cfg))
        _drop_virtual_logits(model, cfg.num_virtual_tokens)
        return model


class PrefixTuningStrategy(PeftStrategy):
    name = "prefix_tuning"
    params = SoftPromptParams
    describe = PromptTuningStrategy.describe
    kernel_options = PromptTuningStrategy.kernel_options

    def trainable_estimate(self, cfg: RunConfig, shapes: Shapes) -> int:
        return cfg.num_virtual_tokens * shapes.layers * 2 * shapes.kv  # keys and values per layer

    def peft_config(self, cfg: RunConfig):
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(num_virtual_tokens=cfg.num_virtual_tokens, task_type="CAUSAL_LM")
