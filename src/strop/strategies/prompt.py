"""Soft prompts: the model is frozen and only a few virtual tokens are learned.

- Prompt tuning (Lester et al. 2021): n trained embedding vectors P ∈ R^{n×d} are prepended to the input
  embeddings, [P; E(x)], at the first layer only.
- Prefix tuning (Li & Liang 2021): trained key/value vectors are prepended at every attention layer,
  attention(Q, [P_k; K], [P_v; V]); the input itself is unchanged. Li & Liang reparameterise the prefix
  for stable training: P = MLP(P'), a small embedding P' (n × d_kv) through Linear-Tanh-Linear to every
  layer's keys and values; the MLP is dropped after training and only P is saved.
- P-Tuning v2 (Liu et al. 2022, "P-Tuning v2: Prompt Tuning Can Be Comparable to Fine-tuning Universally
  Across Scales and Tasks"): the same deep prompts (trained keys/values at every layer), and so the same
  PEFT layer and the same artifact. What differs is the recipe, here the strategy's defaults: P is
  trained directly (no reparameterisation; the paper finds it unhelpful or harmful on many NLU tasks
  and keeps it optional, as `prefix_projection` does here), and the paper's target is understanding
  tasks (classification, labelling) across model scales. Its other change, a linear classification head
  in place of verbalizer tokens, has no counterpart in a causal LM: strop's objectives read labels as
  text through the LM head.

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
        20, gt=0, description="(prompt_tuning, prefix_tuning, p_tuning_v2) Number of trained virtual tokens."
    )
    prefix_projection: bool | None = Field(
        None,
        description="(prefix_tuning, p_tuning_v2) Reparameterise the prefix through a Linear-Tanh-Linear MLP "
        "while training (saved as the plain prefix); default: true for prefix_tuning (Li & Liang), false "
        "for p_tuning_v2.",
    )
    prefix_projection_hidden: int | None = Field(
        None, gt=0, description="(prefix_projection) Hidden width of the MLP; default: the key/value width."
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
    kernel_options = PromptTuningStrategy.kernel_options
    #: Whether the prefix trains through the MLP when `prefix_projection` is not set.
    projection_default = True

    def projected(self, cfg: RunConfig) -> bool:
        return self.projection_default if cfg.prefix_projection is None else cfg.prefix_projection

    def describe(self, cfg: RunConfig) -> str:
        how = "through an MLP" if self.projected(cfg) else "directly"
        return f"{cfg.num_virtual_tokens} virtual keys/values per layer, trained {how}"

    def trainable_estimate(self, cfg: RunConfig, shapes: Shapes) -> int:
        """n × (keys and values of every layer); with the MLP instead: P' (n × d_kv), Linear(d_kv, h),
        Linear(h, 2·L·d_kv), with biases."""
        out = shapes.layers * 2 * shapes.kv
        if not self.projected(cfg):
            return cfg.num_virtual_tokens * out
        hidden = cfg.prefix_projection_hidden or shapes.kv
        return cfg.num_virtual_tokens * shapes.kv + (shapes.kv + 1) * hidden + (hidden + 1) * out

    def peft_config(self, cfg: RunConfig):
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(
            num_virtual_tokens=cfg.num_virtual_tokens,
            prefix_projection=self.projected(cfg),
            encoder_hidden_size=cfg.prefix_projection_hidden,
            task_type="CAUSAL_LM",
        )


class PTuningV2Strategy(PrefixTuningStrategy):
    """Deep prompt tuning as P-Tuning v2 trains it: the per-layer prefix itself, no MLP by default."""

    name = "p_tuning_v2"
    projection_default = False
