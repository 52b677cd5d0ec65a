"""Filters on crafted rows with hand-computed expectations: which row goes, and the reason reported."""

from __future__ import annotations

import json
import random

import pytest
from datagen_support import write_jsonl

from strop.data.mixture import mixture_counts
from strop.datagen import filters as f
from strop.datagen.diversity import DiversitySelect, even_allocation
from strop.datagen.filtering import run_filters
from strop.datagen.language import detect
from strop.datagen.minhash import MinHasher, NearDuplicateIndex, bands_for, estimate, jaccard, shingles
from strop.datagen.mixture import mix, parse_source
from strop.errors import StropError


def test_shingles_and_exact_jaccard():
    assert shingles("The cat sat. On the mat!", 3) == {"the cat sat", "cat sat on", "sat on the", "on the mat"}
    assert shingles("Two words", 5) == {"two words"}
    a, b = shingles("a b c d e", 2), shingles("a b c x y", 2)  # {ab bc cd de} vs {ab bc cx xy}: 2 / 6
    assert jaccard(a, b) == pytest.approx(2 / 6)


def test_minhash_estimates_jaccard_within_its_standard_error():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(400)]
    hasher = MinHasher(num_perm=256, seed=3)
    for overlap in (0, 50, 100, 150, 200):
        a = set(rng.sample(vocab, 200))
        b = set(rng.sample(sorted(a), overlap)) | set(rng.sample(sorted(set(vocab) - a), 200 - overlap))
        exact = jaccard(a, b)
        # standard error sqrt(J(1-J)/k) ≤ 0.032 at k = 256; allow four of them
        assert abs(estimate(hasher.signature(a), hasher.signature(b)) - exact) < 0.13, (overlap, exact)


def test_lsh_bands_put_the_s_curve_step_near_the_threshold():
    bands, rows = bands_for(0.8, 128)
    assert bands * rows <= 128
    step = (1 / bands) ** (1 / rows)  # similarity where P(candidate) rises fastest
    assert 0.6 < step < 0.9
    p = lambda s: 1 - (1 - s**rows) ** bands  # noqa: E731
    assert p(0.95) > 0.99 and p(0.3) < 0.01


def test_near_duplicate_index_finds_the_edit_and_not_the_stranger():
    base = "the quick brown fox jumps over the lazy dog near the river bank on a sunny day in june"
    index = NearDuplicateIndex(threshold=0.7, ngram=3)
    assert index.find(base, "a:1") is None
    found = index.find(base.replace("june", "july"), "a:2")  # 15 of 16 trigrams kept: J = 14/16
    assert found is not None and found[0] == "a:1" and found[1] > 0.7
    assert index.find("completely different text about cooking pasta with garlic and oil tonight", "a:3") is None


def _rows(texts):
    return [{"instruction": t, "output": "ok answer here"} for t in texts]


def test_run_filters_reports_each_drop_with_its_reason(tmp_path):
    text = "Explain why the sky is blue during a clear afternoon in summer time please"
    rows = _rows([text, text.upper() + "!!", text.replace("please", "now"), "Short", "Name three rivers in Europe"])
    rows[3]["output"] = "x"
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out, rejects = tmp_path / "o.jsonl", tmp_path / "r.jsonl"
    stages = [
        f.Length(min_words=2, part="response"),
        f.ExactDedup(),
        f.NearDedup(0.5, ngram=3),
    ]  # the "now" row: J = 12/18
    report = run_filters(str(data), str(out), stages, rejects_path=str(rejects))
    kept = [json.loads(line)["instruction"] for line in out.read_text().splitlines()]
    assert kept == [text, "Name three rivers in Europe"]
    assert report.dropped["length"] == {"too short": 1}
    assert report.dropped["exact-dedup"] == {"exact duplicate": 1}
    assert report.dropped["near-dedup"] == {"near duplicate": 1}
    assert report.seen["near-dedup"] == 3
    dropped = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert {d["where"].rsplit(":", 1)[1]: d["filter"] for d in dropped} == {
        "2": "exact-dedup",
        "3": "near-dedup",
        "4": "length",
    }
    by_filter = {d["filter"]: d["reason"] for d in dropped}
    assert by_filter["exact-dedup"] == f"exact duplicate: same text as {data}:1"
    assert by_filter["near-dedup"].startswith("near duplicate: J≈0.") and by_filter["near-dedup"].endswith(f"{data}:1")
    card = json.loads((tmp_path / "o.jsonl.card.json").read_text())
    assert card["rows"] == 2 and card["report"]["read"] == 5 and card["filters"][2]["threshold"] == 0.5


def test_decontamination_drops_the_row_that_quotes_the_eval_set(tmp_path):
    question = "a train leaves the station at nine and travels sixty miles per hour for three hours how far"
    eval_file = write_jsonl(tmp_path / "gsm_test.jsonl", [{"prompt": question, "answer": "180"}])
    clean = {"instruction": "Write a haiku about autumn leaves falling gently on a quiet pond", "output": "ok"}
    dirty = {"instruction": "Solve: " + question + "?", "output": "180 miles"}
    stage = f.Decontaminate([str(eval_file)], ngram=13)
    assert stage.check("d:1", clean) is None
    label, detail = stage.check("d:2", dirty)
    assert label == "contaminated (gsm_test.jsonl)" and f"{eval_file}:1" in detail
    # eval text: 18 question words + "180" = 7 13-grams; the row: "solve" + question + "180 miles" = 21 words,
    # 9 13-grams, of which the 6 inside the question and the one ending in "180" are shared: 7/9
    assert detail.startswith("78% of 13-grams")
    assert f.Decontaminate([str(eval_file)], ngram=13, threshold=0.8).check("d:2", dirty) is None


def test_language_heuristic_and_filter():
    assert detect("The cat is on the mat and it is happy") == "en"
    assert detect("Le chat est sur la table et il dort dans la maison") == "fr"
    assert detect("Der Hund ist nicht in dem Haus und die Katze auch") == "de"
    assert detect("Привет, как дела?") == "ru"
    assert detect("これは日本語の文です") == "ja"
    assert detect("12345 !!!") == "unknown"
    stage = f.Language(["en"])
    assert stage.check("x", {"prompt": "What is the capital of France?", "completion": "It is Paris."}) is None
    assert stage.check("x", {"prompt": "Quelle est la capitale de la France ?", "completion": "C'est Paris."}) == (
        "language fr",
        "detected fr",
    )


def test_length_filter_bounds_and_parts():
    row = {"messages": [{"role": "user", "content": "one two three"}, {"role": "assistant", "content": "a b c d e"}]}
    assert f.Length(min_words=5).check("x", row) is None
    assert f.Length(max_words=4).check("x", row) == ("too long", "response has 5 words > 4")
    assert f.Length(min_words=4, part="prompt").check("x", row) == ("too short", "prompt has 3 words < 4")
    with pytest.raises(StropError, match="part must be"):
        f.Length(part="middle")


class FixedJudge:
    def __init__(self, scores):
        self.scores = scores

    def describe(self):
        return {"model": "fixed"}

    def score_many(self, pairs):
        return [self.scores[response] for _, response in pairs]


def test_judge_score_threshold_counts_unparseable_apart():
    stage = f.JudgeScore(FixedJudge({"good": 8.0, "bad": 3.0, "??": float("nan")}), min_score=5)
    items = [("x:1", {"prompt": "q", "completion": r}) for r in ("good", "bad", "??")]
    assert stage.check_batch(items) == [
        None,
        ("low judge score", "score 3 < 5"),
        ("judge answer unparseable", "no score in the judge's answer"),
    ]


def test_difficulty_keeps_the_middle_pass_rates():
    counts = {"easy": (4, 4), "hard": (0, 4), "mid": (2, 4)}
    stage = f.Difficulty(lambda items: [counts[row["prompt"]] for _, row in items], 0.25, 0.75, {})
    items = [("x", {"prompt": p}) for p in ("easy", "hard", "mid")]
    assert stage.check_batch(items) == [("too easy", "passed 4/4 > 0.75"), ("too hard", "passed 0/4 < 0.25"), None]


def test_even_allocation_water_fills():
    assert even_allocation([10, 10, 10], 6) == [2, 2, 2]
    assert even_allocation([1, 10, 10], 9) == [1, 4, 4]
    assert even_allocation([2, 3], 10) == [2, 3]


def test_diversity_selection_keeps_the_rare_cluster():
    maths = [("m", {"prompt": f"what is {i} plus {i + 1}", "completion": "sum"}) for i in range(30)]
    poems = [("p", {"prompt": "write a poem about the sea and the moon", "completion": "waves"})] * 2
    kept, dropped = DiversitySelect(budget=6, clusters=2, seed=0).select(maths + poems)
    assert len(kept) == 6 and len(dropped) == 26
    assert sum(w == "p" for w, _ in kept) == 2  # uniform sampling would keep 6·2/32 ≈ 0.4 of them
    assert dropped[0][1][0] == "not selected"


def test_mixture_counts_and_temperature():
    assert mixture_counts([100, 100], [0.7, 0.3], 10) == [7, 3]
    assert mixture_counts([300, 100], [None, None], 8) == [6, 2]
    # T = 2: shares ∝ sqrt(0.9), sqrt(0.1) = 0.75, 0.25
    assert mixture_counts([10, 10], [0.9, 0.1], 100, temperature=2.0) == [75, 25]
    assert sum(mixture_counts([5, 5, 5], [1, 1, 1], 10)) == 10
    assert parse_source("a/b.jsonl:0.25") == ("a/b.jsonl", 0.25) and parse_source("c.jsonl") == ("c.jsonl", None)


def test_mix_realises_the_weights_and_repeats_a_small_source(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"a{i}", "completion": "x"} for i in range(50)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": f"b{i}", "completion": "x"} for i in range(5)])
    summary = mix([f"{a}:0.6", f"{b}:0.4"], str(tmp_path / "m.jsonl"), total=20, seed=3)
    rows = [json.loads(line)["prompt"] for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert sum(r.startswith("a") for r in rows) == 12 and sum(r.startswith("b") for r in rows) == 8
    assert len({r for r in rows if r.startswith("a")}) == 12  # without replacement
    assert sorted({r for r in rows if r.startswith("b")}) == [f"b{i}" for i in range(5)]  # each once before twice
    assert summary[str(b)]["repeated"] is True
    again = mix([f"{a}:0.6", f"{b}:0.4"], str(tmp_path / "m2.jsonl"), total=20, seed=3)
    assert again == summary and (tmp_path / "m2.jsonl").read_text() == (tmp_path / "m.jsonl").read_text()


def test_model_embeddings_are_unit_vectors_and_identical_texts_coincide(tiny_model):
    from strop.datagen.diversity import model_embedder

    vectors = model_embedder(str(tiny_model))(["hello world", "The quick brown fox jumps.", "hello world"])
    assert vectors.shape[0] == 3 and abs(float((vectors**2).sum(axis=1).max()) - 1.0) < 1e-5
    assert float(vectors[0] @ vectors[2]) > 0.9999


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"instruction": "Do", "input": "this", "output": "done"}, ("Do\n\nthis", "done")),
        (
            {
                "messages": [
                    {"role": "system", "content": "S"},
                    {"role": "user", "content": "U"},
                    {"role": "assistant", "content": "A"},
                ]
            },
            ("S\nU", "A"),
        ),
        ({"conversations": [{"from": "human", "value": "U"}, {"from": "gpt", "value": "A"}]}, ("U", "A")),
        ({"prompt": "P", "chosen": [{"role": "assistant", "content": "C"}], "rejected": "R"}, ("P", "C")),
        ({"prompt": "P", "completion": "C", "label": False}, ("P", "C")),
        ({"text": "T"}, ("", "T")),
    ],
)
def test_row_texts_reads_every_training_format(row, expected):
    from strop.datagen.rows import row_texts

    assert row_texts(row) == expected


class DyingJudge(FixedJudge):
    """Scores by response length; raises (a kill) when it meets `die_on`."""

    def __init__(self, die_on=None):
        self.die_on = die_on

    def score_many(self, pairs):
        if any(response == self.die_on for _, response in pairs):
            raise KeyboardInterrupt
        return [float(len(response)) for _, response in pairs]


def test_a_killed_filter_pass_resumes_to_the_same_result(tmp_path):
    rows = [{"prompt": f"question {i % 5}", "completion": "y" * (i % 5 + 1)} for i in range(12)]  # 5..11 repeat
    data = write_jsonl(tmp_path / "d.jsonl", rows)

    def run(out, judge):
        stages = [f.ExactDedup(), f.JudgeScore(judge, min_score=3)]
        return run_filters(
            str(data), str(tmp_path / out), stages, rejects_path=str(tmp_path / f"{out}.rej"), batch_size=4
        )

    whole = run("a.jsonl", DyingJudge())
    with pytest.raises(KeyboardInterrupt):
        run("b.jsonl", DyingJudge(die_on=rows[4]["completion"]))  # in the second batch
    resumed = run("b.jsonl", DyingJudge())
    assert (tmp_path / "b.jsonl").read_text() == (tmp_path / "a.jsonl").read_text()
    assert resumed.as_dict() == whole.as_dict()
    # rows 5-11 repeat rows 0-4; of those five the judge (score = length) drops lengths 1 and 2
    assert whole.dropped == {"exact-dedup": {"exact duplicate": 7}, "judge-score": {"low judge score": 2}}
    assert (tmp_path / "b.jsonl.rej").read_text() == (tmp_path / "a.jsonl.rej").read_text()
