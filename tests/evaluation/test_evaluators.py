"""Each built-in evaluator against values worked out by hand, with canned replies where a model would
generate (a stub generator), so every expected number below follows from the rows written here."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from strop.errors import StropError
from strop.evaluation import EVALUATORS, Subject, build_evaluators, check_specs
from strop.evaluation.match import normalize, score_replies
from strop.evaluation.passk import pass_at_k
from strop.evaluation.preference import pair_metrics
from strop.evaluation.winrate import judge_both_orders, win_rate


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class CannedGenerator:
    """Replies looked up by the last user message; `n` samples are the list given for that prompt."""

    def __init__(self, replies: dict[str, list[str]]):
        self.replies, self.calls = replies, []

    def __call__(self, conversations, n=1, temperature=0.0, max_new_tokens=64):
        self.calls.append((n, temperature))
        return [self.replies[c[-1]["content"]][:n] for c in conversations]


def canned(replies: dict[str, list[str]]) -> Subject:
    return Subject(None, None, CannedGenerator(replies))


# ---------------------------------------------------------------- match --------------------------------


def test_normalize_follows_squad():
    assert normalize("  The Cat, sat!  ") == "cat sat"
    assert normalize("An apple a day") == "apple day"


def test_match_exact_and_normalised(tmp_path):
    rows = [
        {"instruction": "q1", "output": "Paris"},
        {"instruction": "q2", "output": "The cat."},
        {"instruction": "q3", "output": "42"},
        {"instruction": "q4", "output": "yes"},
    ]
    data = write_jsonl(tmp_path / "held.jsonl", rows)
    subject = canned({"q1": ["Paris"], "q2": ["cat"], "q3": ["41"], "q4": [" yes "]})
    [evaluator] = build_evaluators([{"type": "match", "data": str(data)}])
    result = evaluator(subject)
    # exact (stripped): q1 and q4 → 2/4; normalised adds q2 ("the cat." → "cat") → 3/4
    assert result.metrics == {"match/exact_match": 0.5, "match/normalized_match": 0.75}
    assert result.samples[1] == {"prompt": "q2", "reference": "The cat.", "reply": "cat"}


def test_score_replies_hand_values():
    assert score_replies(["A", "b"], ["a", "b"]) == {"exact_match": 0.5, "normalized_match": 1.0}


# ---------------------------------------------------------------- pass@k -------------------------------


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Share of all k-subsets of n samples (c correct) that hold at least one correct sample."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_hand_values_and_large_n():
    assert pass_at_k(4, 1, 1) == 0.25  # one correct in four, one draw
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(200, 0, 10) == 0.0
    # C(1000, 100) overflows a float; the product form does not: 1 - prod_{i=991}^{1000} (1 - 100/i)
    expected = 1 - math.comb(990, 100) / math.comb(1000, 100)
    assert pass_at_k(1000, 10, 100) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_pass_at_k_math_evaluator(tmp_path):
    rows = [{"prompt": "1+1?", "answer": "2"}, {"prompt": "3*3?", "answer": 9}]
    data = write_jsonl(tmp_path / "math.jsonl", rows)
    subject = canned(
        {
            "1+1?": ["The answer is 2", "3", "\\boxed{2}", "two"],  # 2 correct of 4
            "3*3?": ["6", "8", "7", "so 9"],
        }
    )  # 1 correct of 4
    [evaluator] = build_evaluators([{"type": "pass_at_k", "data": str(data), "n": 4, "k": [1, 2], "temperature": 0.7}])
    result = evaluator(subject)
    # pass@1 = mean(2/4, 1/4) = 0.375; pass@2 = mean(1 - C(2,2)/C(4,2), 1 - C(3,2)/C(4,2)) = mean(5/6, 1/2) = 2/3
    assert result.metrics["pass_at_k/pass@1"] == pytest.approx(0.375)
    assert result.metrics["pass_at_k/pass@2"] == pytest.approx(2 / 3)
    assert subject.generate.calls == [(4, 0.7)]


def test_pass_at_k_code_evaluator_runs_the_sandbox(tmp_path):
    rows = [{"prompt": "write add", "tests": ["assert add(2, 2) == 4", "assert add(1, -1) == 0"]}]
    data = write_jsonl(tmp_path / "code.jsonl", rows)
    good, bad = "```python\ndef add(a, b):\n    return a + b\n```", "def add(a, b):\n    return a - b"
    subject = canned({"write add": [good, bad, bad]})
    spec = {
        "type": "pass_at_k",
        "data": str(data),
        "reward": "code",
        "n": 3,
        "k": [1, 3],
        "reward_options": {"timeout_s": 3, "memory_mb": 256},
    }
    [evaluator] = build_evaluators([spec])
    # one of three samples passes both tests (the other passes one of two: not correct)
    assert evaluator(subject).metrics == {"pass_at_k/pass@1": pytest.approx(1 / 3), "pass_at_k/pass@3": 1.0}


def test_pass_at_k_k_above_n_is_refused(tmp_path):
    with pytest.raises(StropError, match=r"k: every value must be in \[1, n=2\]"):
        check_specs([{"type": "pass_at_k", "data": "x.jsonl", "n": 2, "k": [3]}])


# ---------------------------------------------------------------- preference ---------------------------


def test_pair_metrics_hand_values():
    # margins 1, -1, 0 (a tie is not a win) → accuracy 1/3, mean margin 0; then 2 and 0.5 → 1, 1.25
    assert pair_metrics([2.0, 0.0, 1.0], [1.0, 1.0, 1.0]) == {"accuracy": pytest.approx(1 / 3), "margin": 0.0}
    assert pair_metrics([3.0, 1.0], [1.0, 0.5], "rm_") == {"rm_accuracy": 1.0, "rm_margin": 1.25}


# ---------------------------------------------------------------- win rate -----------------------------


class AlwaysFirst:
    def compare(self, prompt, first, second):
        return 1.0


class PrefersLonger:
    def compare(self, prompt, first, second):
        return 1.0 if len(first) > len(second) else 0.0 if len(first) < len(second) else 0.5


def test_a_judge_that_always_picks_the_first_reply_gives_ties():
    # order 1: model first → 1; order 2: baseline first → model gets 1 - 1 = 0; mean 0.5: a tie
    assert judge_both_orders(AlwaysFirst(), "p", "model", "baseline") == 0.5
    metrics, probabilities = win_rate(AlwaysFirst(), ["p1", "p2"], ["a", "b"], ["c", "d"])
    assert probabilities == [0.5, 0.5]
    assert metrics == {"win_rate": 0.5, "wins": 0.0, "ties": 1.0, "losses": 0.0}


def test_win_rate_both_orders_with_a_consistent_judge(tmp_path):
    rows = [
        {"prompt": "a", "base": "x"},
        {"prompt": "b", "base": "long baseline"},
        {"prompt": "c", "base": "same"},
        {"prompt": "d", "base": "y"},
    ]
    data = write_jsonl(tmp_path / "prompts.jsonl", rows)
    subject = canned({"a": ["longer"], "b": ["short"], "c": ["four"], "d": ["zz"]})
    options = EVALUATORS["win_rate"].options.model_validate(
        {"type": "win_rate", "data": str(data), "baseline_field": "base", "reward_model": "unused"}
    )
    evaluate = EVALUATORS["win_rate"].build(options, None, judge=PrefersLonger())
    result = evaluate(subject)
    # a: win, b: loss, c: tie (4 = 4 chars), d: win → (2 + 0.5) / 4
    assert result.metrics == {"win_rate": 0.625, "wins": 0.5, "ties": 0.25, "losses": 0.25}


def test_reward_model_judge_is_bradley_terry():
    from strop.evaluation.winrate import RewardModelJudge

    class Scores:
        def score(self, prompts, responses):
            return [float(len(r)) for r in responses]

    judge = RewardModelJudge(Scores())
    assert judge.compare("p", "abc", "a") == pytest.approx(1 / (1 + math.exp(-2)))
    assert judge_both_orders(judge, "p", "abc", "a") == pytest.approx(1 / (1 + math.exp(-2)))


def test_win_rate_needs_exactly_one_baseline():
    with pytest.raises(StropError, match="exactly one of baseline_field and baseline_model"):
        check_specs([{"type": "win_rate", "data": "p.jsonl", "reward_model": "rm"}])


# ---------------------------------------------------------------- specs --------------------------------


def test_unknown_option_names_the_closest(tmp_path):
    with pytest.raises(StropError, match=r"evaluators\[0\]: unknown option 'max_new_token' .*'max_new_tokens'"):
        check_specs([{"type": "match", "data": "x.jsonl", "max_new_token": 3}])
    with pytest.raises(StropError, match="unknown evaluator type 'bleu'"):
        check_specs([{"type": "bleu", "data": "x"}])
    with pytest.raises(StropError, match="share a name"):
        check_specs([{"type": "match", "data": "a"}, {"type": "match", "data": "b"}])


def test_missing_file_fails_at_build(tmp_path):
    with pytest.raises(StropError, match="dataset file not found: nope.jsonl"):
        build_evaluators([{"type": "match", "data": "nope.jsonl"}], tmp_path)


# ---------------------------------------------------------------- forgetting ---------------------------


def test_forgetting_compares_the_headline_metrics():
    from strop.evaluation import EvalResult
    from strop.evaluation.forgetting import compare, describe

    base = {
        "task": EvalResult({"task/exact_match": 0.25, "task/normalized_match": 0.5}),
        "general": EvalResult({"general/perplexity": 10.0}),
    }
    tuned = {
        "task": EvalResult({"task/exact_match": 0.75, "task/normalized_match": 0.75}),
        "general": EvalResult({"general/perplexity": 12.5}),
    }
    result = compare(base, tuned)
    assert result["target"] == {
        "metric": "task/exact_match",
        "base": 0.25,
        "tuned": 0.75,
        "change": 0.5,
        "higher_is_better": True,
    }
    assert result["general"] == {
        "metric": "general/perplexity",
        "base": 10.0,
        "tuned": 12.5,
        "change": 2.5,
        "higher_is_better": False,
    }
    assert result["metrics"]["task/normalized_match"]["change"] == 0.25
    assert describe(result) == [
        "target: task/exact_match 0.25 -> 0.75 (change +0.5, better)",
        "general: general/perplexity 10 -> 12.5 (change +2.5, worse)",
    ]


def test_general_set_kind_is_recognised(tmp_path):
    from strop.evaluation.forgetting import general_spec

    (tmp_path / "g.txt").write_text("text")
    assert general_spec(str(tmp_path / "g.txt"))["type"] == "perplexity"
    rows = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "q", "output": "a"}])
    assert general_spec(str(rows)) | {"data": ""} == {
        "type": "match",
        "name": "general",
        "data": "",
        "format": "alpaca",
    }
    chat = write_jsonl(tmp_path / "c.jsonl", [{"messages": [{"role": "user", "content": "q"}]}])
    assert general_spec(str(chat))["format"] == "chat"
    odd = write_jsonl(tmp_path / "o.jsonl", [{"question": "q"}])
    with pytest.raises(StropError, match=r"o\.jsonl:1: eval_forgetting cannot tell what to measure .*fields: question"):
        general_spec(str(odd))
