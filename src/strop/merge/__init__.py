"""Model merging (`strop merge MERGE.yml`): combine fine-tuned checkpoints of one architecture.

Methods live one per module under `strop.merge.methods` and are registered in `METHODS` there;
`run_merge` streams the checkpoints tensor by tensor, so merging needs memory for a few tensors,
not for whole models.
"""

from strop.merge.engine import run_merge
from strop.merge.methods import METHODS

__all__ = ["METHODS", "run_merge"]
