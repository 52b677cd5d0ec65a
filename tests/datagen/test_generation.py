"""Generators on the tiny random model (its text is gibberish: these test plumbing, filters and formats),
with a local HTTP judge whose taste is known (the longer answer wins), and `strop data` output training."""

from __future__ import annotations

import json

import pytest
from datagen_support import serving_judge, write_jsonl

from strop.cli import main
from strop.config import load_config
from strop.datagen.instruct import evolution_problem, instruction_problem, lcs, rouge_l
from strop.datagen.sink import Sink
from strop.errors import StropError
from strop.train.loop import train

PROMPTS = [{"prompt": f"Classify the sentiment of this review: {w}"} for w in ("fox", "dog", "world", "quick")]


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rouge_l_by_hand():
    assert lcs("a b c d e".split(), "a c e f".split()) == 3
    # candidate 5 words, reference 4, LCS 3: P = 3/5, R = 3/4, F = 2PR/(P+R) = 2·3/(5+4)
    assert rouge_l("A b c d e", "a c e f") == pytest.approx(6 / 9)
    assert rouge_l("x", "") == 0.0


def test_self_instruct_heuristics():
    pool = ["Write a poem about the sea."]
    assert instruction_problem("Write a poem about the sea!", pool) == "too similar to an existing instruction"
    assert instruction_problem("Draw a picture of a cat for me", pool) == "blacklisted word"
    assert instruction_problem("Hi there", pool) == "length"
    assert instruction_problem("- List three prime numbers", pool) == "starts with punctuation"
    assert instruction_problem("List three prime numbers below twenty", pool) is None


def test_evolution_elimination():
    original = "Explain photosynthesis"
    assert evolution_problem(original, "", "x") == "empty evolution"
    assert evolution_problem(original, "Explain photosynthesis.", "x") == "no new information"
    assert evolution_problem(original, "#Rewritten Prompt#: explain it", "x") == "copied the rewrite prompt"
    assert evolution_problem(original, "Explain photosynthesis in C4 plants", "Sorry, I cannot.") == "answer refuses"
    assert evolution_problem(original, "Explain photosynthesis in C4 plants", "It fixes carbon.") is None


def test_sink_resumes_from_the_last_commit_without_duplicates(tmp_path):
    out = tmp_path / "o.jsonl"
    sink = Sink(out, key={"a": 1})
    sink.write({"i": 0})
    sink.commit(1)
    sink.write({"i": 1})  # written, never committed: the kill comes here
    sink.close()
    assert not out.exists()
    again = Sink(out, key={"a": 1})
    assert again.resumed and again.consumed == 1
    again.write({"i": 1})
    again.commit(2)
    again.finish({"command": "test"})
    assert _rows(out) == [{"i": 0}, {"i": 1}]
    card = json.loads((tmp_path / "o.jsonl.card.json").read_text())
    assert card["rows"] == 2 and card["resumed"] is True
    assert not list(tmp_path.glob(".o.jsonl*"))
    other = Sink(tmp_path / "p.jsonl", key={"a": 1})
    other.write({"i": 9})
    other.commit(1)
    other.close()
    assert not Sink(tmp_path / "p.jsonl", key={"a": 2}).resumed  # other arguments: start afresh


@pytest.mark.slow
def test_rlaif_pairs_train_a_dpo_step(tiny_model, tmp_path, make_config):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    out = tmp_path / "pairs.jsonl"
    with serving_judge() as url:
        assert (
            main(
                [
                    "data",
                    "rlaif",
                    str(prompts),
                    "--policy",
                    str(tiny_model),
                    "--judge",
                    url,
                    "--samples",
                    "3",
                    "--max-new-tokens",
                    "6",
                    "--out",
                    str(out),
                ]
            )
            == 0
        )
    rows = _rows(out)
    assert rows and all(len(r["chosen"]) > len(r["rejected"]) and r["judge_p"] == 1.0 for r in rows)
    card = json.loads((tmp_path / "pairs.jsonl.card.json").read_text())
    assert card["judge"]["asked"] == 4 * 3 * 2 and card["dataset_type"] == "dpo"  # C(3,2) pairs, both orders
    cfg, base = load_config(
        make_config(rows, rl="dpo", datasets=[{"path": str(out), "type": "dpo"}], max_steps=1, micro_batch_size=2)
    )
    assert (train(cfg, base) / "metrics.jsonl").is_file()


def test_compare_writes_all_pairs_and_kto_rows(tiny_model, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS[:2])
    with serving_judge() as url:
        assert (
            main(
                [
                    "data",
                    "compare",
                    str(prompts),
                    "--teacher",
                    str(tiny_model),
                    "--judge",
                    url,
                    "--samples",
                    "3",
                    "--max-new-tokens",
                    "6",
                    "--out",
                    str(tmp_path / "all.jsonl"),
                ]
            )
            == 0
        )
        assert (
            main(
                [
                    "data",
                    "rlaif",
                    str(prompts),
                    "--policy",
                    str(tiny_model),
                    "--judge",
                    url,
                    "--format",
                    "kto",
                    "--max-new-tokens",
                    "6",
                    "--out",
                    str(tmp_path / "kto.jsonl"),
                ]
            )
            == 0
        )
    pairs = _rows(tmp_path / "all.jsonl")
    card = json.loads((tmp_path / "all.jsonl.card.json").read_text())
    ties = card["counts"].get("tie", 0)
    assert len(pairs) + ties <= 2 * 3 and all(len(p["chosen"]) > len(p["rejected"]) for p in pairs)
    kto = _rows(tmp_path / "kto.jsonl")
    assert [r["label"] for r in kto] == [True, False] * (len(kto) // 2)


class Echo:
    """A backend that answers by rule, standing in for a model that follows instructions."""

    name = "echo"

    def __init__(self, rule):
        self.rule = rule

    def complete(self, prompts, temperature=0.0, max_new_tokens=None):
        return [self.rule(p) for p in prompts]


def test_constitutional_pairs_revised_over_original(tmp_path):
    from strop.datagen.feedback import constitutional

    (tmp_path / "c.txt").write_text("Be polite.\n\nBe concise.\n")
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS[:3])

    def rule(prompt):
        if prompt.startswith("Classify"):
            return "fox" if "fox" in prompt else "ok"
        if "Critique the response" in prompt:
            return "It is curt."
        return "ok" if "[Response]\nok" in prompt else "Kindly: a fox."

    constitutional(Echo(rule), str(tmp_path / "c.txt"), str(prompts), str(tmp_path / "o.jsonl"))
    rows = _rows(tmp_path / "o.jsonl")
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("Kindly: a fox.", "fox")]
    assert rows[0]["principle"] in ("Be polite.", "Be concise.")
    assert json.loads((tmp_path / "o.jsonl.card.json").read_text())["counts"] == {"pairs": 1, "revision unchanged": 2}


def test_generators_run_on_the_tiny_model(tiny_model, tmp_path):
    seeds = write_jsonl(
        tmp_path / "seeds.jsonl",
        [{"instruction": "Name a fruit that is red"}, {"instruction": "Translate hello into French"}],
    )
    common = ["--model", str(tiny_model), "--max-new-tokens", "8"]
    assert (
        main(
            [
                "data",
                "self-instruct",
                str(seeds),
                *common,
                "--count",
                "2",
                "--max-rounds",
                "2",
                "--out",
                str(tmp_path / "si.jsonl"),
            ]
        )
        == 0
    )
    card = json.loads((tmp_path / "si.jsonl.card.json").read_text())
    assert card["rows"] + sum(n for k, n in card["counts"].items() if k.startswith("dropped")) >= 1
    assert all(set(r) == {"instruction", "input", "output"} for r in _rows(tmp_path / "si.jsonl"))
    assert (
        main(
            [
                "data",
                "evol-instruct",
                str(seeds),
                *common,
                "--operators",
                "deepen",
                "constraints",
                "--out",
                str(tmp_path / "evol.jsonl"),
            ]
        )
        == 0
    )
    card = json.loads((tmp_path / "evol.jsonl.card.json").read_text())
    assert sum(card["counts"].values()) == 2  # each instruction either evolved or dropped with a reason
    with pytest.raises(StropError, match="unknown operator"):
        from strop.datagen.instruct import evol_instruct

        evol_instruct(None, str(seeds), str(tmp_path / "x.jsonl"), ["sideways"])


def test_traces_keep_only_verified_answers(tmp_path):
    from strop.datagen.verified import Verifier, parse_reward_specs, reasoning_traces

    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "2+2?", "answer": "4"}, {"prompt": "3+3?", "answer": "6"}])
    answers = iter(["Answer: 4", "Answer: 5", "Answer: 4", "Answer: 7", "Answer: 8", "Answer: 9"])
    verifier = Verifier(Echo(lambda p: next(answers)), parse_reward_specs(["math"]), k=3, temperature=1.0)
    reasoning_traces(verifier, str(prompts), str(tmp_path / "t.jsonl"), keep=2)
    rows = _rows(tmp_path / "t.jsonl")
    assert rows == [{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "Answer: 4"}]}]
    card = json.loads((tmp_path / "t.jsonl.card.json").read_text())
    assert card["counts"] == {"prompts solved": 1, "prompts unsolved": 1}


def test_difficulty_filter_with_a_verifier(tmp_path):
    from strop.datagen.verified import Verifier, difficulty_filter, parse_reward_specs

    replies = {"easy": "Answer: 1", "hard": "Answer: 0"}
    verifier = Verifier(Echo(lambda p: replies[p.rsplit("\n", 1)[-1]]), parse_reward_specs(["math"]), k=2)
    stage = difficulty_filter(verifier, 0.25, 0.75)
    items = [("x:1", {"prompt": "easy", "answer": "1"}), ("x:2", {"prompt": "hard", "answer": "1"})]
    assert stage.check_batch(items) == [("too easy", "passed 2/2 > 0.75"), ("too hard", "passed 0/2 < 0.25")]


@pytest.mark.slow
def test_data_filter_cli_output_trains(tmp_path, tiny_model, make_config, capsys):
    topics = [
        "Name the capital of France",
        "Describe how bees make honey",
        "Explain why ice floats on water",
        "Give a synonym for happy",
        "Summarise the plot of Hamlet briefly",
        "List two uses of copper wire",
    ]
    rows = [
        {"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": f"{t}? Sure."}]} for t in topics
    ]
    data = write_jsonl(tmp_path / "d.jsonl", rows + rows[:2])
    evals = write_jsonl(tmp_path / "eval.jsonl", [rows[5]])
    out = tmp_path / "clean.jsonl"
    assert (
        main(
            [
                "data",
                "filter",
                str(data),
                "--out",
                str(out),
                "--exact-dedup",
                "--decontaminate",
                str(evals),
                "--contamination-ngram",
                "5",
                "--language",
                "en",
                "--rejects",
                str(tmp_path / "r.jsonl"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert len(_rows(out)) == 5 and "exact duplicate: 2" in printed and "contaminated (eval.jsonl): 1" in printed
    cfg, base = load_config(
        make_config(rows, datasets=[{"path": str(out), "type": "chat"}], max_steps=1, micro_batch_size=2)
    )
    assert (train(cfg, base) / "metrics.jsonl").is_file()
    assert main(["data", "filter", str(data), "--out", str(out)]) == 2  # no filter chosen


def test_bad_inputs_name_the_file_and_leave_nothing_behind(tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "hi", "completion": "there"}])
    out = tmp_path / "o.jsonl"
    assert main(["data", "filter", str(data), "--out", str(out), "--decontaminate", str(tmp_path / "nope.jsonl")]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "completion": "b"}\n{oops\n')
    assert main(["data", "filter", str(bad), "--out", str(out), "--exact-dedup"]) == 2
    errors = capsys.readouterr().err
    assert "nope.jsonl" in errors and f"{bad}:2: malformed JSON" in errors
    assert not out.exists()  # a resumable partial file may stay, hidden, for the corrected rerun
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["bad.jsonl", "d.jsonl"]
    assert main(["data", "traces", str(data), "--teacher", "x", "--reward", "{bad", "--out", str(out)]) == 2
    assert main(["data", "rlaif", str(data), "--policy", "x", "--judge", "x", "--samples", "1", "--out", str(out)]) == 2
    assert main(["data", "mix", f"{data}:-1", "--total", "3", "--out", str(out)]) == 2
    errors = capsys.readouterr().err
    assert "--reward {bad: malformed JSON" in errors and "--samples must be at least 2" in errors
    assert "the weight must be ≥ 0" in errors


def test_a_generator_killed_mid_run_resumes_without_duplicates(tmp_path):
    from strop.datagen.runner import run_prompts

    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"q{i}"} for i in range(5)])
    out, seen = tmp_path / "o.jsonl", []

    def handle(start, batch, sink, die_at=None):
        for _, _, prompt in batch:
            seen.append(prompt)
            sink.write({"prompt": prompt, "completion": prompt.upper()})
            if prompt == die_at:
                raise KeyboardInterrupt  # killed after writing part of the batch

    with pytest.raises(KeyboardInterrupt):
        run_prompts(str(prompts), str(out), {"k": 1}, {}, 2, "t", lambda s, b, k: handle(s, b, k, die_at="q3"))
    assert not out.exists() and seen == ["q0", "q1", "q2", "q3"]
    sink = run_prompts(str(prompts), str(out), {"k": 1}, {}, 2, "t", handle)
    assert seen[4:] == ["q2", "q3", "q4"]  # the unfinished batch is redone, the finished one is not
    assert [r["prompt"] for r in _rows(out)] == ["q0", "q1", "q2", "q3", "q4"] and sink.resumed
