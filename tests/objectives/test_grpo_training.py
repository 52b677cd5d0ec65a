"""GRPO, DAPO and PPO through the real loop on the tiny model: logged losses and advantages against a
hand computation from the logged rollouts, learning on a simple reward, and the RL bookkeeping."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch

from strop.config import load_config
from strop.train import loop

PROMPTS = [{"prompt": f"Say {w} {i}", "target": w} for i, w in enumerate(["fox", "dog", "world", "review"] * 4)]

REWARDS_MODULE = """
def by_length(prompts, completions, rows):
    return [float(len(c) % 5) for c in completions]

def short(prompts, completions, rows):
    return [-float(len(c)) / 10 for c in completions]
"""


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(loop, "plot_losses", lambda *a, **k: None)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def rl_config(make_config, tmp_path):
    (tmp_path / "my_rewards.py").write_text(REWARDS_MODULE)
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PROMPTS))

    def make(function: str = "by_length", **overrides):
        keys = {
            "rl": "grpo",
            "rewards": [{"type": "function", "function": f"my_rewards.py:{function}"}],
            "num_generations": 4,
            "max_completion_length": 8,
            "micro_batch_size": 2,
            "max_steps": 2,
            "sequence_len": 64,
            "temperature": 1.0,
            "log_completions_steps": 1,
            "datasets": [{"path": str(data), "type": "prompt"}],
            **overrides,
        }
        return load_config(make_config(**keys))

    return make


def records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def advantages(rewards: list[float], scale: bool = True) -> list[float]:
    mean = statistics.fmean(rewards)
    spread = statistics.stdev(rewards) if scale else 1.0
    return [(r - mean) / (spread + 1e-4 if scale else 1.0) for r in rewards]


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_logged_loss_matches_a_hand_computation_from_the_rollouts(rl_config, loss_type):
    """With one update per rollout batch, ρ = 1 and β = 0, so each token costs −Â of its completion:
    grpo → −mean_i Â_i (= 0: advantages are centred per group), dapo → −Σ Â_i n_i / Σ n_i,
    dr_grpo → −Σ Â_i n_i / (N · max_completion_length)."""
    cfg, base = rl_config(loss_type=loss_type, gradient_accumulation_steps=2)
    out = loop.train(cfg, base)
    rollouts, metrics = records(out / "completions.jsonl"), records(out / "metrics.jsonl")
    assert len(metrics) == 2 and len(rollouts) == 2 * 2 * 2 * 4  # steps × accumulation × prompts × G
    for step, logged in enumerate(metrics):
        rows = [r for r in rollouts if r["step"] == step]
        adv = [a for g in range(0, len(rows), 4) for a in advantages([r["reward"] for r in rows[g : g + 4]])]
        lengths = [r["tokens"] for r in rows]
        expected = {
            "grpo": -statistics.fmean(adv),
            "dapo": -sum(a * n for a, n in zip(adv, lengths)) / sum(lengths),
            "dr_grpo": -sum(a * n for a, n in zip(adv, lengths)) / (len(rows) * 8),
        }[loss_type]
        assert logged["loss"] == pytest.approx(expected, abs=1e-5)
        assert logged["reward"] == pytest.approx(statistics.fmean(r["reward"] for r in rows))
        assert logged["completion_length"] == pytest.approx(statistics.fmean(lengths))
        assert logged["clip_fraction"] == 0.0 and logged["entropy"] > 0
    assert (out / "adapter_config.json").is_file()


def test_several_iterations_reuse_the_rollouts_and_clip(rl_config):
    cfg, base = rl_config(num_iterations=3, max_steps=3, learning_rate=5e-2, kl_beta=0.1, adapter="full")
    out = loop.train(cfg, base)
    rollouts, metrics = records(out / "completions.jsonl"), records(out / "metrics.jsonl")
    assert {r["step"] for r in rollouts} == {0}  # sampled once, trained on three times
    assert "reward" in metrics[0] and "reward" not in metrics[1]
    assert metrics[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy still is the reference
    assert metrics[2]["kl"] > 0 and metrics[2]["clip_fraction"] > 0  # it moved, and the clip acted


def test_grpo_learns_to_raise_a_simple_reward(rl_config):
    """Reward −len(completion)/10: the tiny model learns to end its replies sooner."""
    cfg, base = rl_config(
        "short",
        max_steps=12,
        num_generations=8,
        learning_rate=2e-2,
        max_completion_length=12,
        adapter="full",
        warmup_steps=0,
        lr_scheduler="constant",
    )
    metrics = records(loop.train(cfg, base) / "metrics.jsonl")
    first, last = [statistics.fmean(m["reward"] for m in part) for part in (metrics[:3], metrics[-3:])]
    assert last > first + 0.2, (first, last)


def test_dapo_drops_constant_groups_and_refills(rl_config, tmp_path):
    (tmp_path / "half.py").write_text(
        "def half(prompts, completions, rows):\n"
        "    return [1.0 if r['target'] in ('fox', 'dog') else float(len(c) % 3)\n"
        "            for c, r in zip(completions, rows)]\n"
    )
    cfg, base = rl_config(rl="dapo", rewards=[{"type": "function", "function": "half.py:half"}], max_steps=2)
    metrics = records(loop.train(cfg, base) / "metrics.jsonl")
    assert any(m["zero_variance_groups"] > 0 for m in metrics)
    assert all(m["kept_zero_variance_groups"] <= m["zero_variance_groups"] for m in metrics)
    assert all("reward/overlong" in m for m in metrics)  # DAPO's overlong shaping is on by default
    assert all(0 < m["generation_s"] <= m["rollout_s"] for m in metrics)  # refill rounds included


def test_ppo_trains_a_value_head(rl_config):
    cfg, base = rl_config(rl="ppo", num_generations=2, max_steps=2, num_iterations=2)
    out = loop.train(cfg, base)
    metrics = records(out / "metrics.jsonl")
    assert all(math.isfinite(m["loss"]) and m["value_loss"] >= 0 for m in metrics)
    assert metrics[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # LoRA: reference = adapter off = policy at start
    assert (out / "value_head.safetensors").is_file() and (out / "adapter_config.json").is_file()


def test_held_out_reward_is_evaluated(rl_config):
    cfg, base = rl_config(val_set_size=4, eval_steps=1, max_steps=1)
    metrics = records(loop.train(cfg, base) / "metrics.jsonl")
    assert "eval_reward" in metrics[-1] and "eval_reward/function" in metrics[-1]


def test_rl_needs_rewards(rl_config):
    from strop.errors import StropError

    cfg, base = rl_config(rewards=[])
    with pytest.raises(StropError, match="needs rewards"):
        loop.train(cfg, base)


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(rl_config, tmp_path):
    """Rollouts are seeded by (seed, step), so a run stopped after step 2 and resumed samples the same
    completions from the restored weights and ends with the same adapter."""
    from safetensors.torch import load_file

    keys = {"lr_scheduler": "constant", "warmup_steps": 0, "learning_rate": 1e-2, "save_steps": 2}
    cfg, base = rl_config(**keys, max_steps=4, output_dir=str(tmp_path / "straight"))
    straight = loop.train(cfg, base)
    cfg, base = rl_config(**keys, max_steps=2, output_dir=str(tmp_path / "resumed"))
    loop.train(cfg, base)
    cfg, base = rl_config(**keys, max_steps=4, output_dir=str(tmp_path / "resumed"))
    resumed = loop.train(cfg, base, resume=True)
    a, b = (load_file(str(out / "adapter_model.safetensors")) for out in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert records(straight / "completions.jsonl")[-8:] == records(resumed / "completions.jsonl")[-8:]


def test_a_run_resumed_between_the_iterations_of_a_batch_reuses_its_saved_rollouts(rl_config, tmp_path):
    """num_iterations 2: a checkpoint after step 1 falls between the two updates on one batch of rollouts.
    It keeps them (rollouts.json), so the resumed step 2 trains on the rollouts the uninterrupted run
    trained on, not on fresh ones from the updated weights."""
    from safetensors.torch import load_file

    keys = {"lr_scheduler": "constant", "learning_rate": 1e-2, "save_steps": 1, "num_iterations": 2}
    straight = loop.train(*rl_config(**keys, max_steps=3, output_dir=str(tmp_path / "straight")))
    loop.train(*rl_config(**keys, max_steps=1, output_dir=str(tmp_path / "resumed")))
    assert (tmp_path / "resumed" / "checkpoint-1" / "rollouts.json").is_file()
    resumed = loop.train(*rl_config(**keys, max_steps=3, output_dir=str(tmp_path / "resumed")), resume=True)
    assert not (resumed / "checkpoint-2" / "rollouts.json").exists()  # a batch boundary: nothing to keep
    a, b = (load_file(str(out / "adapter_model.safetensors")) for out in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ppo_scores_with_a_reward_model_trained_by_strop(rl_config, make_config, tmp_path):
    """RLHF end to end on the tiny model: `rl: reward` on pairs, then PPO whose reward is that model."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"prompt": f"Say {w}", "chosen": f"{w} indeed", "rejected": "no"}) + "\n"
            for w in ["fox", "dog", "world", "review"] * 2
        )
    )
    reward_cfg, base = load_config(
        make_config(
            rl="reward", datasets=[{"path": str(pairs), "type": "dpo"}], max_steps=1, output_dir=str(tmp_path / "rm")
        )
    )
    reward_model = loop.train(reward_cfg, base)
    cfg, base = rl_config(
        rl="ppo",
        rewards=[{"type": "reward_model", "path": str(reward_model)}],
        num_generations=2,
        max_steps=1,
        output_dir=str(tmp_path / "ppo"),
    )
    metrics = records(loop.train(cfg, base) / "metrics.jsonl")
    assert metrics[0]["reward/reward_model_std"] > 0  # real, varying scores from the reward model
    assert math.isfinite(metrics[0]["loss"]) and metrics[0]["grad_norm"] > 0
