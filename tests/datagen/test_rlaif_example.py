"""The verifiable judge of the RLAIF → DPO measurement (src/strop/examples/rlaif/measure.py)."""

from strop.examples.rlaif.measure import SumJudge, make_prompts, score


def test_held_out_prompts_are_unseen():
    train, held = make_prompts(64, 64, seed=0)
    assert len(train) == len(held) == 64
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}


def test_judge_prefers_the_exact_then_the_correct_reply():
    assert score("55", "55") == score("55.", "55") == 1.0
    assert score("28 + 27 = 55", "55") == 0.5
    assert score("28 + 27 = 56", "55") == score("555", "55") == 0.0
    judge = SumJudge()
    prompt = "What is 28 + 27? Reply with only the number."
    assert judge.compare_many([(prompt, "55", "28 + 27 = 55"), (prompt, "56", "55"), (prompt, "5", "6")]) == [
        0.75,
        0.0,
        0.5,
    ]
    assert judge.describe()["pairs"] == 3
