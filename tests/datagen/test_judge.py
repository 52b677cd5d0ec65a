"""The LLM judge: lenient parsing, position-bias control, rubric files, an OpenAI-compatible endpoint."""

from __future__ import annotations

import math

import pytest
from datagen_support import JudgeHandler, serving_judge, write_jsonl

from strop.errors import StropError
from strop.judge import HttpBackend, LLMJudge, LocalBackend, parse_choice, parse_score, read_rubric


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Score: 7", 7.0),
        ("I'd give it 8/10.", 8.0),
        ("Rating = 3.5", 3.5),
        ("[[9]]", 9.0),
        ("**Score:** 6", 6.0),
        ("9", 9.0),
        ("Score: 42", None),
        ("no idea", None),
        ("between 3 and 4", None),
        ("The score is 10", 10.0),
    ],
)
def test_parse_score(text, expected):
    assert parse_score(text, 1, 10) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Winner: A", "A"),
        ("[[B]]", "B"),
        ("Answer B is better.", "B"),
        ("B", "B"),
        ("(A)", "A"),
        ("The better response is A", "A"),
        ("Winner: A or B, hard to say", None),
        ("both are fine", None),
        ("Verdict: **B**", "B"),
    ],
)
def test_parse_choice(text, expected):
    assert parse_choice(text) == expected


class Scripted:
    """A backend that answers by a rule on the judge prompt it receives."""

    name = "scripted"

    def __init__(self, rule):
        self.rule, self.prompts = rule, []

    def complete(self, prompts, temperature=0.0, max_new_tokens=None):
        self.prompts += prompts
        return [self.rule(p) for p in prompts]


def test_both_orders_cancel_a_position_biased_judge():
    judge = LLMJudge(Scripted(lambda p: "Winner: A"))
    assert judge.compare("q", "x", "y") == 0.5
    assert judge.asked == 2 and judge.unparseable == 0
    one_order = LLMJudge(Scripted(lambda p: "Winner: A"), both_orders=False)
    assert one_order.compare("q", "x", "y") == 1.0


def test_consistent_judge_prefers_the_longer_answer_in_both_orders():
    def longer(prompt):
        a = prompt.split("[Answer A]\n")[1].split("\n\n[Answer B]")[0]
        b = prompt.split("[Answer B]\n")[1].split("\n\nWhich")[0]
        return "Winner: A" if len(a) > len(b) else "Winner: B"

    backend = Scripted(longer)
    judge = LLMJudge(backend, rubric="Longer is better.")
    assert judge.compare_many([("q", "long answer", "s"), ("q", "s", "long answer")]) == [1.0, 0.0]
    assert all(p.startswith("Longer is better.") for p in backend.prompts)
    assert "[Answer A]\nlong answer" in backend.prompts[0] and "[Answer A]\ns\n" in backend.prompts[2]


def test_unparseable_answers_are_counted():
    judge = LLMJudge(Scripted(lambda p: "hmm"))
    assert math.isnan(judge.score("q", "r"))
    assert judge.compare("q", "a", "b") == 0.5
    assert judge.unparseable == 3 and judge.describe()["unparseable"] == 3
    half = LLMJudge(Scripted(lambda p: "Winner: B" if "[Answer A]\na" in p else "garbage"))
    assert half.compare("q", "a", "b") == 0.0  # the one readable order decides


def test_rubric_file(tmp_path):
    (tmp_path / "r.txt").write_text("  Be strict.\n")
    assert read_rubric(str(tmp_path / "r.txt")) == "Be strict."
    (tmp_path / "e.txt").write_text("\n")
    with pytest.raises(StropError, match="e.txt: the rubric file is empty"):
        read_rubric(str(tmp_path / "e.txt"))
    with pytest.raises(StropError, match="cannot read the rubric"):
        read_rubric(str(tmp_path / "missing.txt"))


def test_http_endpoint_judge(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with serving_judge() as url:
        _check_http_judge(url)


def _check_http_judge(url: str) -> None:
    judge = LLMJudge(HttpBackend(url, "judge-model"))
    assert judge.score("q", "four") == 5.0  # 1 + len("four") % 10
    assert judge.compare("q", "a longer one", "short") == 1.0
    assert judge.compare("q", "same", "same") == 0.5 and judge.unparseable == 2  # "It is a tie." both ways
    assert len(JudgeHandler.seen) == 5
    path, auth, body = JudgeHandler.seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test" and body["model"] == "judge-model"


def test_http_endpoint_down_is_a_strop_error():
    backend = HttpBackend("http://127.0.0.1:9/v1", "m", timeout=2)
    with pytest.raises(StropError, match="judge endpoint http://127.0.0.1:9/v1/chat/completions"):
        backend.complete(["hi"])


def test_local_model_judge_runs_and_counts(tiny_model):
    judge = LLMJudge(LocalBackend(str(tiny_model), max_new_tokens=4))
    p = judge.compare("What is two plus two?", "Four.", "Five.")
    score = judge.score("What is two plus two?", "Four.")
    assert 0.0 <= p <= 1.0 and (math.isnan(score) or 1 <= score <= 10)
    assert judge.asked == 3 and 0 <= judge.unparseable <= 3


def test_logit_verdicts_from_the_tiny_model_cancel_position_bias(tiny_model):
    backend = LocalBackend(str(tiny_model))
    judge = LLMJudge(backend, logprobs=True)
    prompt = judge.compare_prompt("q", "x", "y")
    swapped = judge.compare_prompt("q", "y", "x")
    p_a, p_a_swapped = backend.choice_probability([prompt, swapped])
    assert judge.compare("q", "x", "y") == pytest.approx((p_a + 1 - p_a_swapped) / 2)
    assert judge.compare("q", "x", "y") + judge.compare("q", "y", "x") == pytest.approx(1.0)
    with pytest.raises(StropError, match="need a local model"):
        LLMJudge(HttpBackend("http://127.0.0.1:9/v1", "m"), logprobs=True)


def test_win_rate_evaluator_takes_the_llm_judge_over_http(tmp_path):
    """`strop eval`'s win_rate with `judge_model` an endpoint: the judge (longer answer wins) sees each
    pair in both orders, so a longer reply wins, a shorter one loses and equal lengths tie."""
    from strop.evaluation import EVALUATORS, Subject

    class Canned:
        def __call__(self, prompts, n, temperature, max_new_tokens):
            return [[{"a": "a long reply", "b": "s", "c": "four"}[p[-1]["content"]]] for p in prompts]

    data = write_jsonl(
        tmp_path / "prompts.jsonl",
        [{"prompt": "a", "base": "short"}, {"prompt": "b", "base": "longer"}, {"prompt": "c", "base": "same"}],
    )
    with serving_judge() as url:
        options = EVALUATORS["win_rate"].options.model_validate(
            {"type": "win_rate", "data": str(data), "baseline_field": "base", "judge_model": url}
        )
        result = EVALUATORS["win_rate"].build(options, None)(Subject(None, None, Canned()))
        asked = len(JudgeHandler.seen)
    assert result.metrics == {"win_rate": 0.5, "wins": 1 / 3, "ties": 1 / 3, "losses": 1 / 3}
    assert asked == 6  # three pairs, both orders
