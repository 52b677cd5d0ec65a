"""Every registry holds exactly the extensions the README documents: adding one without its
documentation (or documenting one that is not registered) fails here."""

from strop.objectives import OBJECTIVES
from strop.objectives.rl_common import RolloutParams
from strop.rl.rewards import REWARDS
from strop.strategies import STRATEGIES


def test_objectives_are_the_documented_ones():
    assert set(OBJECTIVES) == {
        "sft",
        "dpo",
        "ipo",
        "orpo",
        "simpo",
        "cpo",
        "kto",
        "reward",
        "distill",
        "grpo",
        "dapo",
        "dr_grpo",
        "ppo",
        "vision_sft",
        "vision_dpo",
        "vision_ipo",
        "vision_orpo",
        "vision_simpo",
        "vision_cpo",
        "vision_kto",
    }


def test_strategies_are_the_documented_ones():
    assert set(STRATEGIES) == {
        "full",
        "lora",
        "qlora",
        "dora",
        "rslora",
        "ia3",
        "prompt_tuning",
        "prefix_tuning",
        "bitfit",
        "galore",
        "spectrum",
        "lisa",
        "moe_lora",
        "p_tuning_v2",
        "spider",
        "houlsby",
        "pfeiffer",
    }


def test_the_config_help_lists_every_reward_type_from_the_registry():
    help_text = RolloutParams.model_fields["rewards"].description
    assert help_text.endswith(
        "types math, match, code, format, json_schema, length, reward_model, function, trl_function."
    )
    assert all(name in help_text for name in REWARDS)
