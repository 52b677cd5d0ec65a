"""The contract every objective meets, and the log-prob helpers they share."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import nn

from strop.data.tokenize import IGNORE
from strop.kernels.packed_attention import attention_for
from strop.run_types import RunConfig, RunState

#: Batch key present (a 0-d tensor) only in the filler micro-batch of a rank that got no rows of a global
#: micro-batch (train/loop.py): it runs the model so every rank joins each collective, and its loss counts
#: 0. An objective that pools a statistic over the ranks (KTO's z₀) leaves such a batch's rows out.
FILLER = "filler"


def is_filler(batch: dict[str, torch.Tensor]) -> bool:
    return FILLER in batch


class Objective:
    """An objective builds its examples, collates them, counts normalisation units and computes a loss.

    The loop sums `count(batch)` over all micro-batches of an optimizer step and passes that total as
    `denominator`, so gradient accumulation gives the same update as one large batch.
    """

    name = "base"
    #: The `datasets[].type` values this objective reads.
    dataset_types: tuple[str, ...] = ()
    #: Pydantic model of this objective's own config keys (flat in the YAML), or None.
    params: type[BaseModel] | None = None
    #: Files it writes into output_dir besides the artifact: claimed as strop's before the run starts,
    #: so that --overwrite removes them (strop/manifest.py).
    output_files: tuple[str, ...] = ()
    #: The run's validated config, set by `objectives.objective_for`.
    cfg: RunConfig | None = None

    def build_data(self, cfg: RunConfig, tokenizer, base_dir: Path | None):
        raise NotImplementedError

    def collate(self, rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        raise NotImplementedError

    def loss(
        self, model: nn.Module, batch: dict[str, torch.Tensor], denominator: float
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The micro-batch's share of the step loss (divided by `denominator`) and metrics that are
        likewise shares: the loop sums both over the micro-batches of a step."""
        raise NotImplementedError

    def save_artifacts(self, model: nn.Module, out_dir: Path) -> None:
        """Write what the objective adds beside the strategy's artifact (the reward model's head)."""

    def prepare_training(self, run: RunState) -> None:
        """Called once after the strategy is applied and before the first step, when the policy still
        equals the reference model: the place to compute and cache reference log-probs."""

    def updates_per_batch(self, cfg: RunConfig) -> int:
        """Optimizer steps taken on each step's worth of data (RL reuses its rollouts this many times)."""
        return 1

    #: True when the rows of a step are made with the model itself (RL rollouts, by rl/engine.py): the
    #: loop then cannot prepare a step's batches ahead of it.
    rows_from_model = False

    def finish_step(self) -> dict[str, float]:
        """Metrics the objective gathered over the step's loss passes (beyond the summed loss shares)."""
        return {}


def shifted_token_logps(
    logits: torch.Tensor, labels: torch.Tensor, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of each next token and the mask of positions that count.

    Works in chunks of positions so the float32 log-softmax over the vocabulary exists for one chunk at
    a time rather than for the whole batch.
    """
    logits, targets = logits[:, :-1], labels[:, 1:]
    mask = targets != IGNORE
    safe = targets.masked_fill(~mask, 0)
    pieces = []
    for start in range(0, logits.shape[1], chunk):
        part = logits[:, start : start + chunk].float()
        pieces.append(-F.cross_entropy(part.transpose(1, 2), safe[:, start : start + chunk], reduction="none"))
    return torch.cat(pieces, dim=1) * mask, mask


def model_inputs(batch: dict[str, torch.Tensor], model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The keyword inputs of `model`'s forward; packed rows' segment ids become the attention mask that
    model takes (a FlexAttention block mask where it runs strop's packed attention, else a dense one);
    image inputs of vision batches pass through."""
    keys = ("input_ids", "attention_mask", "position_ids", "segment_ids")
    inputs: dict[str, torch.Tensor] = {k: batch[k] for k in keys if k in batch}
    return attention_for(inputs, model) | vision_inputs(batch)


def vision_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A batch's image inputs (pixel_values, image_grid_thw, ...), carried under `vision.` by the vision
    objectives (strop/vlm/data.py); empty for text batches."""
    return {k[len("vision.") :]: v for k, v in batch.items() if k.startswith("vision.")}
