"""Rewards: hand-worked cases for each type, the weighted total, metric names, and config errors."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from strop.errors import StropError
from strop.rl.rewards import REWARDS, RewardSpec, build_rewards, score_rewards
from strop.rl.rewards.length import length_penalty
from strop.rl.rewards.math_answer import equivalent, extract_answer


def reward(type_: str, base_dir=None, **options):
    return build_rewards([RewardSpec(type=type_, **options)], base_dir)[0].fn


def scores(fn, completions: list[str], rows: list[dict] | dict | None = None) -> list[float]:
    rows = rows if isinstance(rows, list) else [rows or {}] * len(completions)
    return fn([None] * len(completions), completions, rows)


class RunConfig(BaseModel):
    rewards: list[RewardSpec]


def test_registry_holds_the_built_in_types():
    assert set(REWARDS) == {
        "math",
        "match",
        "code",
        "format",
        "json_schema",
        "length",
        "reward_model",
        "function",
        "trl_function",
    }


@pytest.mark.parametrize(
    "text, answer",
    [
        (r"so the result is \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
        (r"first \boxed{3}, then \boxed{\frac{\sqrt{2}}{2}}", r"\frac{\sqrt{2}}{2}"),
        (r"\boxed{{a}{b}}", "{a}{b}"),
        ("Adding up, the answer is 42. That was easy.", "42"),
        ("Answer: 3.5.\nDone", "3.5"),
        ("The final answer is: $x+1$", "$x+1$"),
        ("7 apples and 1,234 pears, then 5 left", "5"),
        ("we get 3/4", "3/4"),
        ("no numbers here", None),
    ],
)
def test_math_extraction(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize(
    "left, right, same",
    [
        ("1/2", "0.5", True),
        (r"\frac{1}{2}", "0.5", True),
        (r"\dfrac{1}{2}", "1/2", True),
        ("1,000", "1000", True),
        ("$5", "5", True),
        ("50%", "50", True),
        ("x = 5", "5", True),
        ("0.3333333", "1/3", True),
        ("x+1", "1+x", True),
        ("2x", "x*2", True),
        ("(x-1)(x+1)", "x^2-1", True),
        (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt{2}}", True),
        ("Yes", "yes", True),
        ("0.5", "0.6", False),
        ("x+2", "x+1", False),
        ("3", "", False),
        ("9^9^9", "1", False),
        ("__import__('os').system('true')", "0", False),
        ("x" * 500, "x", False),
        ("pi.n(1000000)", "3", False),
        ("1.5x", "3x/2", True),
    ],
)
def test_math_equivalence(left, right, same):
    assert equivalent(left, right) is same


def test_math_reward():
    fn = reward("math")
    completions = [
        r"... \boxed{\frac{3}{4}}",
        "so the answer is 0.75.",
        "I think 3/4",
        "the answer is 0.7",
        "idk",
        "the answer is 3/4 of the cake",
    ]
    assert scores(fn, completions, {"answer": "3/4"}) == [1.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    assert scores(fn, ["5 + 7 = 12, so 72 in total"], {"answer": "Reasoning... #### 72"}) == [1.0]
    assert scores(fn, ["it is 12"], {"answer": 12}) == [1.0]
    assert scores(reward("math", field="solution", tolerance=0.01), ["3.14"], {"solution": r"\pi"}) == [1.0]


def test_math_reward_without_the_reference_field_is_a_config_error():
    with pytest.raises(StropError, match=r"math reward.*'answer'"):
        scores(reward("math"), ["42"], {"question": "?"})


def test_format_pattern_and_tags():
    pattern = reward("format", pattern=r"<think>.*</think>\s*<answer>.*</answer>")
    assert scores(
        pattern,
        ["  <think>a\nb</think>\n<answer>4</answer>\n", "<answer>4</answer>", "x <think></think><answer>4</answer>"],
    ) == [1.0, 0.0, 0.0]
    tags = reward("format", tags=["think", "answer"])
    assert scores(
        tags,
        [
            "<think>a</think> <answer>4</answer>",
            "<answer>4</answer><think>a</think>",
            "<think>a</think><think>b</think><answer>4</answer>",
            "<think>a<answer>4</answer></think>",
            "<think>a</think>",
            "preamble <think>a</think> middle <answer>4</answer> end",
        ],
    ) == [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    both = reward("format", pattern=r"<think>.*", tags=["think", "answer"])
    assert scores(both, ["<think>a</think><answer>4</answer>", "x<think>a</think><answer>4</answer>"]) == [1.0, 0.0]


def test_json_schema_inline_and_from_row():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    inline = reward("json_schema", schema=schema)
    assert scores(inline, ['{"n": 3}', '{"n": "3"}', "{n: 3}", 'Sure:\n```json\n{"n": 1}\n```', "[]"]) == [
        1.0,
        0.0,
        0.0,
        1.0,
        0.0,
    ]
    from_row = reward("json_schema")
    rows = [{"schema": schema}, {"schema": '{"type": "array"}'}]
    assert scores(from_row, ['{"n": 3}', '{"n": 3}'], rows) == [1.0, 0.0]
    with pytest.raises(StropError, match="'schema'"):
        scores(from_row, ['{"n": 3}'], {})
    with pytest.raises(StropError, match="not a valid JSON Schema"):
        scores(from_row, ['{"n": 3}'], {"schema": {"type": 5}})


@pytest.mark.parametrize("chars, expected", [(0, 0.0), (50, 0.0), (75, -0.5), (90, -0.8), (100, -1.0), (150, -1.0)])
def test_length_formula_default_target_is_half(chars, expected):
    assert length_penalty(chars, 100, 50) == pytest.approx(expected)
    assert scores(reward("length", max_chars=100), ["x" * chars]) == [pytest.approx(expected)]


def test_length_with_target():
    assert scores(reward("length", max_chars=100, target_chars=20), ["x" * 20, "x" * 60, "x" * 99]) == [
        0.0,
        pytest.approx(-0.5),
        pytest.approx(-79 / 80),
    ]


def write_module(folder, body: str):
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "my_rewards.py").write_text(body)


def test_function_from_a_file_relative_to_base_dir(tmp_path):
    write_module(
        tmp_path,
        "def brevity(prompts, completions, rows):\n    return [1.0 / (1 + len(c)) for c in completions]\n"
        "def wrong_length(prompts, completions, rows):\n    return [1.0]\n"
        "def not_numbers(prompts, completions, rows):\n    return ['high' for c in completions]\n"
        "def picky(prompts, completions, rows):\n    return [float(c) for c in completions]\n"
        "def broken(prompts, completions, rows):\n    raise KeyError('oops')\n",
    )
    fn = reward("function", tmp_path, function="sub/my_rewards.py:brevity")
    assert scores(fn, ["", "abc"]) == [1.0, 0.25]
    assert scores(reward("function", tmp_path, function="sub/my_rewards.py:picky"), ["1.5", "not a number"]) == [
        1.5,
        0.0,
    ]
    with pytest.raises(StropError, match="wrong_length.*2 numbers"):
        scores(reward("function", tmp_path, function="sub/my_rewards.py:wrong_length"), ["a", "b"])
    with pytest.raises(StropError, match="not_numbers.*'high'"):
        scores(reward("function", tmp_path, function="sub/my_rewards.py:not_numbers"), ["a"])
    with pytest.raises(StropError, match="broken.*KeyError"):
        scores(reward("function", tmp_path, function="sub/my_rewards.py:broken"), ["a", "b"])
    with pytest.raises(StropError, match="no function 'missing'"):
        reward("function", tmp_path, function="sub/my_rewards.py:missing")
    with pytest.raises(StropError, match="file not found"):
        reward("function", tmp_path, function="nope.py:fn")


def test_function_from_an_importable_module(tmp_path, monkeypatch):
    write_module(tmp_path, "def const(prompts, completions, rows):\n    return [2] * len(completions)\n")
    monkeypatch.syspath_prepend(str(tmp_path / "sub"))
    assert scores(reward("function", function="my_rewards:const"), ["a"]) == [2.0]
    with pytest.raises(StropError, match="cannot import"):
        reward("function", function="no_such_module_xyz:fn")


def test_reward_model_missing_folder(tmp_path):
    with pytest.raises(StropError, match="folder not found"):
        reward("reward_model", tmp_path, path="no-such-run")


def test_score_rewards_weights_and_names():
    specs = [
        RewardSpec(type="math", weight=2.0),
        RewardSpec(type="format", tags=["answer"], weight=0.5),
        RewardSpec(type="math", field="other"),
        RewardSpec(type="length", max_chars=40, name="short"),
    ]
    rewards = build_rewards(specs)
    assert [r.name for r in rewards] == ["math", "format", "math_2", "short"]
    completions = ["<answer>4</answer>", "the answer is 5" + " " * 15]  # 18 and 30 characters
    rows = [{"answer": "4", "other": "5"}, {"answer": "4", "other": "5"}]
    total, per_reward = score_rewards(rewards, [None, None], completions, rows)
    assert per_reward == {
        "math": [1.0, 0.0],
        "format": [1.0, 0.0],
        "math_2": [0.0, 1.0],
        "short": [0.0, pytest.approx(-0.5)],
    }
    assert total == [pytest.approx(2.5), pytest.approx(0.5)]


def test_name_collisions():
    specs = [RewardSpec(type="math", name="math_2"), RewardSpec(type="math"), RewardSpec(type="math")]
    assert [r.name for r in build_rewards(specs)] == ["math_2", "math", "math_3"]
    with pytest.raises(StropError, match="unique"):
        build_rewards([RewardSpec(type="math", name="a"), RewardSpec(type="format", tags=["x"], name="a")])


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"type": "maths"}, "unknown reward type 'maths' (known: code, format, function"),
        (
            {"type": "format", "patern": "x"},
            "unknown option 'patern' for reward type 'format'; did you mean 'pattern'?",
        ),
        ({"type": "code", "timeout": 3}, "did you mean 'timeout_s'?"),
        ({"type": "format"}, "give `pattern` and/or `tags`"),
        ({"type": "format", "pattern": "("}, "pattern: pattern is not a valid regular expression"),
        ({"type": "length", "max_chars": 10, "target_chars": 10}, "target_chars (10) must be below max_chars (10)"),
        ({"type": "length"}, "max_chars: Field required"),
        ({"type": "json_schema", "schema": {"type": 5}}, "not a valid JSON Schema"),
        ({"type": "math", "weight": "heavy"}, "weight"),
    ],
)
def test_config_errors(spec, message):
    with pytest.raises(ValidationError) as err:
        RunConfig.model_validate({"rewards": [{"type": "math"}, spec]})
    assert message in str(err.value)
    assert "rewards.1" in str(err.value)


def test_config_round_trip_keeps_the_options():
    config = RunConfig.model_validate({"rewards": [{"type": "format", "tags": ["think"], "weight": 0.5}]})
    assert config.model_dump()["rewards"][0] == {"type": "format", "weight": 0.5, "name": None, "tags": ["think"]}


def test_match_compares_normalised_text_with_the_row_field():
    from strop.rl.rewards import RewardSpec, build_rewards, score_rewards

    rows = [{"output": "Sentiment: positive"}] * 3
    completions = ["sentiment:  Positive ", "Sentiment: negative", "I think Sentiment: positive."]
    exact = build_rewards([RewardSpec(type="match")])
    assert score_rewards(exact, ["p"] * 3, completions, rows)[0] == [1.0, 0.0, 0.0]
    contains = build_rewards([RewardSpec(type="match", contains=True)])
    assert score_rewards(contains, ["p"] * 3, completions, rows)[0] == [1.0, 0.0, 1.0]
