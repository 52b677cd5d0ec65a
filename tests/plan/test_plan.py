"""strop plan: data profiling, the GPU table, each rule's output on crafted inputs, and the pipeline it writes."""

from __future__ import annotations

import pytest
import yaml
from tests.conftest import alpaca_rows, write_jsonl

from strop.errors import StropError
from strop.plan import make_plan, parse_gpu, profile_file, write_pipeline
from strop.plan.hardware import Hardware
from strop.plan.planner import plan_stages
from strop.train.estimate import GIB, shapes_of


def sft_rows(n: int) -> list[dict]:
    return [
        {"instruction": f"Say word {i}", "output": "one two three four five six seven eight nine ten"} for i in range(n)
    ]


def math_rows(n: int) -> list[dict]:
    return [{"prompt": f"What is {i} + 2?", "answer": str(i + 2)} for i in range(n)]


def pair_rows(n: int) -> list[dict]:
    return [{"prompt": f"Review {i}", "chosen": "Sentiment: positive", "rejected": "bad"} for i in range(n)]


@pytest.fixture
def files(tmp_path):
    def make(name: str, rows: list[dict]):
        return profile_file(str(write_jsonl(tmp_path / f"{name}.jsonl", rows)))

    return make


def meta_shapes(**sizes):
    """Shapes of a Llama built on the meta device: a real size's memory model with no memory used."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        return shapes_of(LlamaForCausalLM(LlamaConfig(**sizes)))


LLAMA_8B = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    vocab_size=128256,
)
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=300,
)


def test_profile_formats_lengths_and_verifiable_answers(files):
    sft = files("sft", sft_rows(20))
    assert (sft.format, sft.rows, sft.pairs, sft.reward, sft.counted_with) == (
        "alpaca",
        20,
        False,
        None,
        "word estimate",
    )
    # "Say word 0" + 10 words = 13 words → ceil(13 × 1.3) = 17 tokens, plus 5 per message × 2
    assert sft.lengths[0] == 17 + 10
    assert files("math", math_rows(5)).reward == ("math", "answer")
    assert files("pairs", pair_rows(3)).pairs
    code = files("code", [{"prompt": "write f", "tests": ["assert f() == 1"]}])
    assert code.reward == ("code", "tests")
    assert files("alpaca_math", [{"instruction": "2+2?", "output": "4"}]).reward == ("math", "output")
    assert files("words", [{"prompt": "name a colour", "answer": "red"}]).reward is None  # not a number
    assert (
        files(
            "chat", [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}]
        ).format
        == "chat"
    )


def test_profile_refuses_bad_rows_with_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [*sft_rows(2), {"instruction": "x", "output": ""}])
    with pytest.raises(StropError, match=r"bad.jsonl:3: field 'output' is empty"):
        profile_file(str(path))
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [*sft_rows(1), *math_rows(1)])
    with pytest.raises(StropError, match=r"mixed.jsonl:2: row format 'prompt'"):
        profile_file(str(mixed))


def test_percentile_is_nearest_rank(files):
    profile = files("sft", sft_rows(3))
    profile.lengths = list(range(1, 101))
    assert (profile.percentile(0.95), profile.percentile(1.0), profile.percentile(0.5)) == (95, 100, 50)


def test_gpu_table():
    assert parse_gpu("1x RTX 4090") == Hardware("rtx4090", 1, 24, True)
    assert parse_gpu("2x A100 80GB") == Hardware("a10080gb", 2, 80, True)
    assert parse_gpu("T4").bf16 is False
    assert parse_gpu("24GB").memory_gib == 24
    assert parse_gpu("cpu").cpu
    assert parse_gpu("1x RTX 4090").budget_gib == pytest.approx(24 * 0.9 - 0.5)
    with pytest.raises(StropError, match="unknown GPU 'RTX 9999'"):
        parse_gpu("RTX 9999")


def test_500_sft_rows_on_24gb_small_model_is_lora_r16(files):
    stages = plan_stages([files("sft", sft_rows(500))], parse_gpu("1x RTX 4090"), "chat", meta_shapes(**TINY), {})
    (sft,) = stages
    c = sft.config
    assert (sft.name, sft.strategy, c["lora_r"], c["lora_alpha"]) == ("sft", "lora", 16, 32)
    assert (c["learning_rate"], c["num_epochs"], c["neftune_noise_alpha"]) == (2e-4, 3, 5.0)
    assert c["micro_batch_size"] * c["gradient_accumulation_steps"] == 16
    assert c["sequence_len"] == 64  # p95 27 tokens, rounded up to 64
    assert sft.estimate.peak / GIB < parse_gpu("1x RTX 4090").budget_gib


def test_500_sft_rows_8b_on_24gb_is_qlora_r16(files):
    """strop keeps weights in float32: an 8B LoRA needs 32 GB of weights, so the rules fall to QLoRA."""
    (sft,) = plan_stages([files("sft", sft_rows(500))], parse_gpu("1x RTX 4090"), "domain", meta_shapes(**LLAMA_8B), {})
    assert (sft.strategy, sft.config["adapter"], sft.config["lora_r"]) == ("qlora", "qlora", 16)
    assert sft.estimate.peak / GIB <= parse_gpu("1x RTX 4090").budget_gib


def test_large_data_on_big_gpu_is_full_fine_tuning(files):
    profile = files("sft", sft_rows(10))
    profile.rows, profile.lengths = 60_000, profile.lengths * 6000
    (sft,) = plan_stages([profile], parse_gpu("H200"), "chat", meta_shapes(**TINY), {})
    assert (sft.strategy, sft.config["learning_rate"], sft.config["num_epochs"]) == ("full", 1e-5, 1)


def test_stages_follow_the_data(files):
    shapes, gpu = meta_shapes(**TINY), parse_gpu("24GB")
    names = lambda profiles: [s.name for s in plan_stages(profiles, gpu, "reasoning", shapes, {})]  # noqa: E731
    assert names([files("s", sft_rows(30)), files("p", pair_rows(30)), files("m", math_rows(30))]) == [
        "sft",
        "dpo",
        "grpo",
    ]
    assert names([files("p", pair_rows(30))]) == ["orpo"]
    grpo = plan_stages([files("m", math_rows(30))], gpu, "reasoning", shapes, {})[0]
    assert grpo.config["rewards"] == [{"type": "math", "field": "answer"}]
    assert (grpo.config["num_generations"], grpo.config["max_completion_length"]) == (8, 512)
    dpo = plan_stages([files("s", sft_rows(30)), files("p", pair_rows(30))], gpu, "chat", shapes, {})[1]
    assert (dpo.config["rl"], dpo.config["lora_r"], dpo.config["num_epochs"]) == ("dpo", 8, 1)


def test_cpu_gets_the_smallest_setting(files):
    (sft,) = plan_stages([files("s", sft_rows(500))], parse_gpu("cpu"), "chat", meta_shapes(**TINY), {})
    assert (sft.strategy, sft.config["lora_r"], sft.config["bf16"]) == ("lora", 8, False)


def test_nothing_fits_is_a_clear_error(files):
    with pytest.raises(StropError, match="nothing fits .*choose a smaller base_model"):
        plan_stages([files("s", sft_rows(50))], parse_gpu("2GB"), "chat", meta_shapes(**LLAMA_8B), {})


def test_partial_config_keys_are_kept(files):
    (sft,) = plan_stages(
        [files("s", sft_rows(50))],
        parse_gpu("24GB"),
        "chat",
        meta_shapes(**TINY),
        {"adapter": "dora", "learning_rate": 3e-4, "lora_target_modules": ["q_proj"]},
    )
    assert (sft.strategy, sft.config["learning_rate"], sft.config["lora_target_modules"]) == ("dora", 3e-4, ["q_proj"])


def test_cli_writes_a_pipeline_strop_pipeline_loads(tmp_path, tiny_model):
    from strop.cli import main
    from strop.config import load_config
    from strop.pipeline import load_pipeline

    (tmp_path / "data").mkdir()
    data = write_jsonl(tmp_path / "data" / "sft.jsonl", alpaca_rows(40))
    math = write_jsonl(tmp_path / "data" / "math.jsonl", math_rows(20))
    out = tmp_path / "plan" / "pipeline.yml"
    out.parent.mkdir()
    args = [
        "plan",
        "--data",
        str(data),
        str(math),
        "--gpu",
        "cpu",
        "--goal",
        "reasoning",
        "--model",
        str(tiny_model),
        "--out",
        str(out),
    ]
    assert main(args) == 0
    spec = load_pipeline(out)
    assert [s.name for s in spec.stages] == ["sft", "grpo", "export"]
    assert spec.base_model == str(tiny_model)
    for stage in spec.stages[:2]:
        cfg, _ = load_config(out.parent / stage.config)
        assert cfg.datasets[0].path.startswith("../data/")
    sft = yaml.safe_load((out.parent / "pipeline.sft.yml").read_text())
    assert sft["lora_r"] == 8 and sft["bf16"] is False
    assert main(args) == 2  # refuses to overwrite without --overwrite
    assert main([*args, "--overwrite"]) == 0


def test_partial_config_with_data_keys_is_refused(tmp_path):
    from strop.plan import read_partial

    partial = tmp_path / "partial.yml"
    partial.write_text("datasets: []\nlora_r: 4\n")
    with pytest.raises(StropError, match="datasets are for strop plan to decide"):
        read_partial(str(partial))


def test_unknown_goal_and_tokenizer_fallback(tmp_path, tiny_model):
    data = str(write_jsonl(tmp_path / "s.jsonl", sft_rows(5)))
    with pytest.raises(StropError, match="--goal must be one of"):
        make_plan([data], "cpu", "poetry")
    plan = make_plan([data], "cpu", "chat", {"base_model": str(tiny_model)})
    assert plan.stages[0].data[0].counted_with == "tokenizer" and not plan.notes


@pytest.mark.integration
def test_plan_on_the_default_model_writes_a_valid_pipeline(tmp_path):
    from strop.pipeline import load_pipeline

    data = write_jsonl(tmp_path / "sft.jsonl", alpaca_rows(30))
    plan = make_plan([str(data)], "cpu", "chat")
    assert plan.base_model == "smollm2-135m-instruct"
    assert plan.stages[0].data[0].counted_with == "tokenizer"
    write_pipeline(plan, tmp_path / "pipeline.yml")
    assert [s.name for s in load_pipeline(tmp_path / "pipeline.yml").stages] == ["sft", "export"]


@pytest.mark.integration
@pytest.mark.slow
def test_planned_stage_runs_on_the_default_model(tmp_path, monkeypatch):
    from strop.pipeline import run_pipeline

    data = write_jsonl(tmp_path / "sft.jsonl", alpaca_rows(16))
    plan = make_plan([str(data)], "cpu", "chat")
    out = tmp_path / "pipeline.yml"
    write_pipeline(plan, out, export=None)
    spec = yaml.safe_load(out.read_text())
    spec["stages"][0]["set"] = {"max_steps": 1, "micro_batch_size": 2, "gradient_accumulation_steps": 1}
    out.write_text(yaml.safe_dump(spec))
    monkeypatch.chdir(tmp_path)
    report = run_pipeline(out)
    assert "| sft | train |" in report.read_text()


def test_time_comes_from_a_measured_throughput_only(files):
    shapes = meta_shapes(**LLAMA_8B)
    (sft,) = plan_stages([files("s", sft_rows(500))], parse_gpu("H200"), "domain", shapes, {})
    assert sft.strategy == "lora"
    # 500 rows × 27 tokens × 3 epochs at 10,830 tokens/s (8.03e9 parameters), scaled to this model's size
    assert sft.seconds == pytest.approx(500 * 27 * 3 / (10_830 * 8.03e9 / shapes.total))
    (small,) = plan_stages([files("s", sft_rows(500))], parse_gpu("H200"), "domain", meta_shapes(**TINY), {})
    assert small.seconds is None  # no figure near a tiny model's size


def test_pairs_count_twice_in_the_memory_check(files):
    """A preference micro-batch holds chosen and rejected: its activations are those of 2 × micro rows."""
    from strop.plan.planner import validated
    from strop.train.estimate import estimate

    shapes = meta_shapes(**TINY)
    dpo = plan_stages([files("s", sft_rows(30)), files("p", pair_rows(30))], parse_gpu("24GB"), "chat", shapes, {})[1]
    doubled = validated({**dpo.config, "micro_batch_size": 2 * dpo.config["micro_batch_size"]}, "test")
    assert dpo.estimate.activations == estimate("lora", doubled, shapes, True).activations


def test_every_topic_has_a_fallback_and_every_rule_a_source():
    from strop.plan.rules import RULES, SOURCES, Facts

    nothing = Facts("chat", 0, 0, 0, False)
    for topic in {rule.topic for rule in RULES} - {"sft", "preference", "rl"}:  # settings always get a value
        assert [r for r in RULES if r.topic == topic][-1].when(nothing), topic
    for rule in RULES:
        assert rule.because.startswith(SOURCES), rule.because


def test_long_documents_are_capped_at_the_survey_length(files):
    profile = files("t", [{"text": "word " * 5000}])
    (sft,) = plan_stages([profile], parse_gpu("H200"), "domain", meta_shapes(**TINY), {})
    assert sft.config["sequence_len"] == 4096
