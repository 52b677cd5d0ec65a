"""Training objectives: what the model learns. One module per objective, registered here.

An objective owns its data shape (which rows it reads and how a batch looks) and its loss, a pure
function of log-probs. It never asks which update strategy is in use.
"""

from __future__ import annotations

from strop.errors import StropError
from strop.objectives.base import Objective
from strop.objectives.cpo import CPOObjective
from strop.objectives.distill import DistillObjective
from strop.objectives.dpo import DPOObjective, IPOObjective
from strop.objectives.grpo import DAPOObjective, DrGRPOObjective, GRPOObjective
from strop.objectives.kto import KTOObjective
from strop.objectives.orpo import ORPOObjective
from strop.objectives.ppo import PPOObjective
from strop.objectives.reward import RewardObjective
from strop.objectives.sft import SFTObjective
from strop.objectives.simpo import SimPOObjective
from strop.objectives.vision import VISION_DATASET_TYPES, VISION_OBJECTIVES, VISION_OF
from strop.run_types import RunConfig

OBJECTIVES: dict[str, Objective] = {
    "sft": SFTObjective(),
    "dpo": DPOObjective(),
    "ipo": IPOObjective(),
    "orpo": ORPOObjective(),
    "simpo": SimPOObjective(),
    "cpo": CPOObjective(),
    "kto": KTOObjective(),
    "reward": RewardObjective(),
    "distill": DistillObjective(),
    "grpo": GRPOObjective(),
    "dapo": DAPOObjective(),
    "dr_grpo": DrGRPOObjective(),
    "ppo": PPOObjective(),
    **VISION_OBJECTIVES,
}

#: The objective a dataset type implies when the config sets no `rl` (Axolotl-style configs such as
#: `type: orpo` + `orpo_alpha`, with no `rl: orpo`, mean ORPO).
IMPLIED_BY_DATASET_TYPE = {
    "dpo": "dpo",
    "orpo": "orpo",
    "kto": "kto",
    "chatml.intel": "dpo",
    "chatml.argilla": "dpo",
    "chatml.ultra": "dpo",
    "vision_chat": "vision_sft",
    "vision_dpo": "vision_dpo",
    "vision_kto": "vision_kto",
}


def get_objective(name: str) -> Objective:
    return OBJECTIVES[name]


def objective_name(cfg: RunConfig) -> str:
    """`rl`, else `reward_model: true`, else what the dataset types imply (SFT for SFT formats)."""
    images = any(spec.type in VISION_DATASET_TYPES for spec in cfg.datasets)
    if cfg.rl:
        return VISION_OF.get(cfg.rl, cfg.rl) if images else cfg.rl
    if getattr(cfg, "reward_model", False):
        return "reward"
    implied = {IMPLIED_BY_DATASET_TYPE.get(spec.type, "sft") for spec in cfg.datasets}
    if "vision_sft" in implied:  # text-only rows mixed into an image run (text_only_ratio)
        implied.discard("sft")
    if len(implied) > 1:
        raise StropError(f"datasets mix types of different objectives ({', '.join(sorted(implied))}): set rl")
    return implied.pop()


def known_dataset_types() -> set[str]:
    """Every `datasets[].type` some registered objective reads."""
    return {kind for objective in OBJECTIVES.values() for kind in objective.dataset_types}


def objective_for(cfg: RunConfig) -> Objective:
    """A new instance of the run's objective, holding the run's validated config: a run's state lives on
    its own objective, never on the registry's (which only answers for names, params and data types)."""
    objective = type(OBJECTIVES[objective_name(cfg)])()
    objective.cfg = cfg
    return objective


__all__ = ["OBJECTIVES", "Objective", "get_objective", "known_dataset_types", "objective_for", "objective_name"]
