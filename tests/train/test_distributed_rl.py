"""RL under torchrun: two processes (FSDP2, gloo on the CPU) against one process with the same global
batch. Rollouts are keyed by global prompt position, so both sample the same completions; rewards,
advantages, losses, gradient norms and final weights must then agree, whichever way the two processes
generate (`rl_generation`), and a checkpoint of the two-process run, saved rollouts included, resumes
in one process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.train.test_distributed import _assert_same_weights, _run_in_process, _torchrun, _variant

from strop.rl.rollout import SamplingParams, keyed_uniform, row_keys, sample

REWARDS = """
def by_length(prompts, completions, rows):
    return [float(len(c) % 5) for c in completions]

def flat_when_even(prompts, completions, rows):
    return [1.0 if int(r["prompt"].split()[-1]) % 2 == 0 else float(len(c) % 5) for c, r in zip(completions, rows)]
"""

#: Rollout and loss metrics that two processes must log as one does.
KEYS = ("loss", "grad_norm", "reward", "reward_std", "completion_length", "truncated", "entropy", "kl", "clip_fraction")


def _rl_config(make_config, tmp_path: Path, **overrides) -> Path:
    """GRPO with token-level loss (loss_type dapo: its denominator is the step's completion tokens over
    every process) on 5 training prompts, 3 micro-batches of 2 prompts a step: the third holds one
    prompt, so under two processes rank 1 runs a filler group there. 3 validation prompts, evaluated
    at the last step: rank 1 answers one and a filler."""
    (tmp_path / "my_rewards.py").write_text(REWARDS)
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {w} {i}"}) + "\n" for i, w in enumerate("abcdefgh")))
    keys = {
        "rl": "grpo",
        "loss_type": "dapo",
        "rewards": [{"type": "function", "function": "my_rewards.py:by_length"}],
        "datasets": [{"path": str(data), "type": "prompt"}],
        "num_generations": 4,
        "max_completion_length": 8,
        "stop_strings": ["e"],  # uneven completion lengths, finished and truncated ones
        "sequence_len": 64,
        "gradient_accumulation_steps": 3,
        "max_steps": 3,
        "val_set_size": 3,
        "eval_steps": 3,
        "learning_rate": 5e-2,
        **overrides,
    }
    return make_config(**keys)


def _assert_same_rl_metrics(got: Path, expected: Path, keys: tuple[str, ...] = KEYS) -> None:
    for key in keys:  # rollout metrics are logged on the steps that sample (every num_iterations)
        ours, theirs = ([(m["step"], m[key]) for m in _metrics(out) if key in m] for out in (got, expected))
        assert [s for s, _ in ours] == [s for s, _ in theirs] and ours, key
        torch.testing.assert_close([v for _, v in ours], [v for _, v in theirs], rtol=1e-5, atol=1e-6, msg=key)
    if "eval_reward" in _metrics(expected)[-1]:
        assert _metrics(got)[-1]["eval_reward"] == pytest.approx(_metrics(expected)[-1]["eval_reward"], abs=1e-6)


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _completions(out: Path) -> list[tuple[str, str]]:
    lines = (out / "completions.jsonl").read_text().splitlines()
    return [(r["prompt"], r["completion"]) for r in map(json.loads, lines)]


# --- fast ------------------------------------------------------------------------------------------------


def test_keyed_draws_do_not_depend_on_the_batch(tiny_model):
    """A row's completion is a function of its key: sampled alone or in a batch with others, the same."""
    from strop.models import load_model, load_tokenizer

    model, tok = load_model(str(tiny_model)), load_tokenizer(str(tiny_model))
    prompts = [tok.encode("Say fox"), tok.encode("The quick brown fox jumps")]
    params = SamplingParams(max_new_tokens=6, temperature=1.0)
    together = sample(model, tok, prompts, params, n=3, keys=row_keys(7, [4, 9], 3))
    alone = sample(model, tok, prompts[1:], params, n=3, keys=row_keys(7, [9], 3))
    assert [c.ids for c in together[3:]] == [c.ids for c in alone]
    other_seed = sample(model, tok, prompts, params, n=3, keys=row_keys(8, [4, 9], 3))
    assert [c.ids for c in together] != [c.ids for c in other_seed]


def test_a_rank_whose_rows_ended_keeps_stepping_until_every_rank_has(tiny_model, monkeypatch):
    """Lockstep decoding as another rank still decoding sees it: every step runs a forward (here the
    other rank never ends early, so all max_new_tokens of them), rows that ended stay as they ended,
    and the completions equal those of decoding alone."""
    from strop.models import load_model, load_tokenizer
    from strop.rl import rollout
    from strop.runtime import distributed

    model, tok = load_model(str(tiny_model)), load_tokenizer(str(tiny_model))
    prompts = [tok.encode("Say fox"), tok.encode("hello world")]
    params = SamplingParams(max_new_tokens=16, temperature=1.0, stop_strings=("e", "o", "a", " "))
    keys = row_keys(3, [0, 1], 3)
    alone = rollout._sample_with_cache(model, tok, prompts, params, 3, None, keys)
    assert max(len(c.ids) for c in alone) < params.max_new_tokens  # every row ends early on its own
    forwards = []
    model.register_forward_hook(lambda module, args, out: forwards.append(1))
    monkeypatch.setattr(distributed, "all_ranks", lambda ended: False)
    stepped = rollout._sample_with_cache(model, tok, prompts, params, 3, None, keys, lockstep=True)
    assert [c.ids for c in stepped] == [c.ids for c in alone]
    assert len(forwards) == 1 + params.max_new_tokens  # the prefill, then one forward after each sampled token


def test_keyed_uniform_is_uniform_and_keyed():
    keys = row_keys(3, list(range(2000)), 4)
    assert keys.unique().numel() == keys.numel()
    draws = keyed_uniform(keys, 5)
    assert float(draws.min()) >= 0 and float(draws.max()) < 1
    assert abs(float(draws.mean()) - 0.5) < 0.01 and abs(float(draws.std()) - 12**-0.5) < 0.01
    assert torch.equal(keyed_uniform(keys[100:200], 5), draws[100:200])
    assert not torch.equal(keyed_uniform(keys, 6), draws)


# --- torchrun, 2 processes on the CPU ------------------------------------------------------------------


@pytest.mark.slow
def test_grpo_two_processes_match_one_then_resume_in_one(make_config, tmp_path):
    """2 processes × 1 prompt per micro-batch equal 1 process × 2, for both generation modes: the same
    completions, rewards, losses, KL and gradient norms each step, and the same LoRA weights after 3
    steps. With num_iterations 2 and β > 0 the old and reference log-probs (the adapter switched off)
    are forwards of the sharded policy too. The two-process checkpoint of step 1, which holds step 0's
    rollouts for the second update on them, then resumes in one process and ends where one process
    does."""
    path = _rl_config(make_config, tmp_path, save_steps=1, save_total_limit=3, kl_beta=0.05, num_iterations=2)
    one = _run_in_process(_variant(path, "one", micro_batch_size=2))
    expected = load_file(one / "adapter_model.safetensors")
    assert len({r for _, r in _completions(one)}) > 1  # sampling, not one repeated answer
    for mode in ("gather_per_layer", "full_copy"):
        _torchrun(_variant(path, mode, micro_batch_size=1, rl_generation=mode))
        two = path.parent / mode
        assert _completions(two) == _completions(one), mode
        _assert_same_rl_metrics(two, one)
        _assert_same_weights(expected, load_file(two / "adapter_model.safetensors"))

    two = path.parent / "gather_per_layer"
    assert (two / "checkpoint-1" / "rollouts.json").is_file()  # between the 2 updates on step 0's rollouts
    for later in ("checkpoint-2", "checkpoint-3"):  # as if killed after step 1: resume on ONE process
        shutil.rmtree(two / later)
    (two / "adapter_model.safetensors").unlink()
    resumed = _run_in_process(_variant(path, "gather_per_layer", micro_batch_size=2), resume=True)
    _assert_same_weights(expected, load_file(resumed / "adapter_model.safetensors"))
    _assert_same_rl_metrics(resumed, one)


@pytest.mark.slow
def test_dapo_dynamic_sampling_runs_in_lockstep_on_two_processes(make_config, tmp_path):
    """DAPO (dynamic sampling, clip-higher, truncation masking; overlong shaping off so that a constant
    reward stays flat) on 2 processes, where even-numbered prompts always score alike: each rank refills
    its own flat groups, every rank sampling the largest shortfall, so no rank waits on a forward the
    other never runs. Each step logs every real prompt's group once."""
    path = _rl_config(
        make_config,
        tmp_path,
        rl="dapo",
        loss_type="dapo",
        overlong_buffer_length=None,
        rewards=[{"type": "function", "function": "my_rewards.py:flat_when_even"}],
    )
    _torchrun(_variant(path, "dapo", micro_batch_size=1, max_steps=2))
    out = path.parent / "dapo"
    metrics = _metrics(out)
    assert [m["step"] for m in metrics] == [1, 2]
    assert any(m["dynamic_sampling_rounds"] >= 1 for m in metrics)
    assert all(m["kept_zero_variance_groups"] <= m["zero_variance_groups"] for m in metrics)
    assert all(0 < m["generation_s"] <= m["rollout_s"] for m in metrics)
    assert len(_completions(out)) == 2 * 5 * 4  # steps × training prompts × group size, fillers left out


@pytest.mark.slow
def test_ppo_two_processes_match_one(make_config, tmp_path):
    """PPO (value head on the root FSDP unit, advantages whitened over both ranks, KL to the adapter-off
    reference): 2 processes × 1 prompt equal 1 process × 2 prompts, value head included."""
    path = _rl_config(make_config, tmp_path, rl="ppo", num_generations=2, max_steps=2, val_set_size=0)
    one = _run_in_process(_variant(path, "one", micro_batch_size=2))
    _torchrun(_variant(path, "two", micro_batch_size=1))
    two = path.parent / "two"
    _assert_same_rl_metrics(two, one, ("loss", "grad_norm", "reward", "kl", "value_loss"))
    for name in ("adapter_model.safetensors", "value_head.safetensors"):
        _assert_same_weights(load_file(one / name), load_file(two / name))
