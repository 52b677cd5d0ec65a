"""Every preference objective trains with full and LoRA through the one loop, on the tiny model."""

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from strop.cli import main
from strop.config import load_config
from strop.objectives import preference_common
from strop.train.loop import prepare, train, train_step

PAIR_KEYS = {
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
}


def pair_rows(n: int = 12) -> list[dict]:
    words = ["fox", "dog", "world", "review", "quick", "lazy"]
    return [
        {
            "prompt": f"Classify the sentiment of this review. {words[i % 6]} {i}",
            "chosen": "Sentiment: positive" if i % 2 else "Sentiment: negative",
            "rejected": f"Sentiment: {'negative' if i % 2 else 'positive'} {words[i % 3]}",
        }
        for i in range(n)
    ]


@pytest.fixture
def pref_config(make_config, tmp_path):
    def make(rl: str, rows=None, kind="dpo", **overrides):
        data = {"path": str(tmp_path / "data.jsonl"), "type": kind}
        overrides.setdefault("max_steps", 2)
        return make_config(rows or pair_rows(), rl=rl, datasets=[data], **overrides)

    return make


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("adapter", ["lora", "full"])
@pytest.mark.parametrize("rl", ["dpo", "ipo", "orpo", "simpo", "cpo", "kto", "reward"])
def test_objective_trains_with_strategy(pref_config, rl, adapter):
    cfg, base = load_config(pref_config(rl, adapter=adapter, val_set_size=2, eval_steps=2))
    out = train(cfg, base)
    logged = records(out)
    assert len(logged) == 2 and all(math.isfinite(r["loss"]) for r in logged)
    keys = (
        {"loss", "rewards/chosen", "rewards/rejected", "kl"}
        if rl == "kto"
        else PAIR_KEYS - ({"logps/chosen", "logps/rejected"} if rl == "reward" else set())
    )
    assert keys <= set(logged[-1]) and "eval_loss" in logged[-1]
    assert (out / ("adapter_model.safetensors" if adapter == "lora" else "model.safetensors")).is_file()
    assert (out / "reference_logps.safetensors").is_file() == (rl in ("dpo", "ipo", "kto"))


def test_dpo_starts_at_log_two_and_learns(pref_config):
    """Policy = reference at step 0, so the sigmoid loss is exactly log 2; training widens the margin."""
    cfg, base = load_config(
        pref_config("dpo", adapter="full", max_steps=6, learning_rate=3e-3, micro_batch_size=6, rl_beta=0.5)
    )
    logged = records(train(cfg, base))
    assert logged[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)
    assert logged[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-4)
    assert logged[-1]["loss"] < logged[0]["loss"] - 0.05 and logged[-1]["rewards/margins"] > 0


def _one_step_update(config: Path, overrides: list[str]) -> dict[str, torch.Tensor]:
    cfg, base = load_config(config, overrides)
    run = prepare(cfg, base)
    run.model = run.strategy.apply(run.model, cfg)
    run.objective.prepare_training(run)
    params = run.strategy.trainable_parameters(run.model)
    before = {k: v.detach().clone() for k, v in params.items()}
    run.model.train()
    train_step(run, 0, torch.optim.SGD(list(params.values()), lr=1.0), None, None)
    return {k: params[k].detach() - before[k] for k in params}


@pytest.mark.parametrize("rl", ["dpo", "orpo"])
def test_accumulation_1x4_equals_4x1(pref_config, rl):
    path = pref_config(rl, adapter="full", max_grad_norm=None)
    big = _one_step_update(path, ["micro_batch_size=4", "gradient_accumulation_steps=1", "rl_beta=2.0"])
    small = _one_step_update(path, ["micro_batch_size=1", "gradient_accumulation_steps=4", "rl_beta=2.0"])
    assert any(v.abs().max() > 0 for v in big.values())
    for name in big:
        torch.testing.assert_close(small[name], big[name], rtol=1e-4, atol=1e-6)


def test_live_reference_with_adapter_off_equals_precomputed(pref_config):
    """LoRA's reference computed live (adapter disabled) gives the same first steps as the cache."""
    path = pref_config("dpo", lora_dropout=0.0, learning_rate=5e-2)
    cached = records(train(*load_config(path, ["output_dir=" + str(path.parent / "cached")])))
    live = records(
        train(*load_config(path, ["output_dir=" + str(path.parent / "live"), "precompute_ref_log_probs=false"]))
    )
    for a, b in zip(cached, live):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["rewards/margins"] == pytest.approx(b["rewards/margins"], abs=1e-5)
    assert not (path.parent / "live" / "reference_logps.safetensors").exists()


def test_live_reference_needs_an_adapter(pref_config):
    from strop.errors import StropError

    cfg, base = load_config(pref_config("dpo", adapter="full", precompute_ref_log_probs=False))
    with pytest.raises(StropError, match="precompute_ref_log_probs: false needs an adapter"):
        train(cfg, base)


def test_reference_cache_is_reused_on_resume(pref_config, monkeypatch):
    path = pref_config("kto", max_steps=2, save_steps=1)
    cfg, base = load_config(path)
    out = train(cfg, base)
    cache = load_file(out / "reference_logps.safetensors")["logps"]
    assert cache.shape == (12 * 2, 2)  # 12 pairs → 24 KTO rows, (matched, mismatched) each

    def refuse(*args, **kwargs):
        raise AssertionError("reference log-probs recomputed on resume")

    monkeypatch.setattr(preference_common, "compute_reference", refuse)
    cfg, base = load_config(path, ["max_steps=3"])
    train(cfg, base, resume=True)
    assert records(out)[-1]["step"] == 3
    torch.testing.assert_close(load_file(out / "reference_logps.safetensors")["logps"], cache)


def test_orpo_survey_config_runs_unchanged(tmp_path, tiny_model, monkeypatch):
    """../shared/survey/orpo_config.yml: `type: orpo` + `orpo_alpha`, no `rl` key; only model and data swapped."""
    survey = Path(__file__).resolve().parents[3] / "shared" / "survey" / "orpo_config.yml"
    raw = (
        yaml.safe_load(survey.read_text())
        if survey.exists()
        else {
            "base_model": "x",
            "adapter": "lora",
            "lora_r": 16,
            "lora_alpha": 32,
            "output_dir": "./orpo-model",
            "datasets": [{"path": "domain_orpo.jsonl", "type": "orpo"}],
            "orpo_alpha": 0.1,
        }
    )
    assert raw["datasets"][0]["type"] == "orpo" and raw["orpo_alpha"] == 0.1 and "rl" not in raw
    (tmp_path / "domain_orpo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pair_rows(4)))
    raw["base_model"] = str(tiny_model)
    (tmp_path / "orpo_config.yml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    cfg, base = load_config(tmp_path / "orpo_config.yml")
    run = prepare(cfg, base)
    assert run.objective.name == "orpo" and cfg.orpo_alpha == 0.1
    out = train(cfg, base)
    assert out.resolve() == (tmp_path / "orpo-model").resolve()
    assert len(records(out)) == 4 and "log_odds_ratio" in records(out)[0]


def test_preference_keys_are_accepted(tmp_path, pref_config):
    cfg, _ = load_config(pref_config("dpo", rl_beta=0.2, dpo_loss_type="robust", dpo_label_smoothing=0.1))
    assert (cfg.rl_beta, cfg.dpo_loss_type) == (0.2, "robust")
    cfg, _ = load_config(pref_config("dpo", dpo_beta=0.3))
    assert cfg.dpo_beta == 0.3


def test_reward_model_saves_head_and_scores_from_the_cli(pref_config, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from strop.rl.reward_scorer import RewardScorer

    path = pref_config(None, reward_model=True, adapter="full", max_steps=4, learning_rate=3e-3)
    cfg, base = load_config(path)
    out = train(cfg, base)
    assert json.loads((out / "reward_head.json").read_text())["hidden_size"] == 64
    assert not any("reward_head" in k for k in load_file(out / "model.safetensors"))
    AutoModelForCausalLM.from_pretrained(out)  # still a plain causal LM
    rows = [
        {"prompt": "Classify the sentiment of this review. fox 1", "response": r}
        for r in ("Sentiment: positive", "Sentiment: negative fox")
    ]
    (tmp_path / "score.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["reward-score", str(out), str(tmp_path / "score.jsonl"), "-o", str(tmp_path / "scored.jsonl")]) == 0
    scored = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    direct = RewardScorer(out).score([r["prompt"] for r in rows], [r["response"] for r in rows], batch_size=1)
    assert [s["score"] for s in scored] == pytest.approx(direct, abs=1e-5)
    assert scored[0]["response"] == "Sentiment: positive" and scored[0]["score"] != scored[1]["score"]


def test_reward_model_with_lora_reloads(pref_config, tmp_path):
    from strop.rl.reward_scorer import RewardScorer

    out = train(*load_config(pref_config("reward", max_steps=2)))
    assert (out / "adapter_model.safetensors").is_file() and (out / "reward_head.safetensors").is_file()
    scores = RewardScorer(out).score(["hello"], ["world"])
    assert len(scores) == 1 and math.isfinite(scores[0])
