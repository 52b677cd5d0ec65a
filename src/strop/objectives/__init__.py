"""Training objectives: what the model learns. One module per objective, registered here.

An objective owns its data shape (which rows it reads and how a batch looks) and its loss, a pure
function of log-probs. It never asks which update strategy is in use.
"""

from __future__ import annotations

from strop.objectives.base import Objective
from strop.objectives.sft import SFTObjective

OBJECTIVES: dict[str, Objective] = {
    "sft": SFTObjective(),
}


def get_objective(name: str) -> Objective:
    return OBJECTIVES[name]


__all__ = ["OBJECTIVES", "Objective", "get_objective"]
