import math

import pytest
import torch

from strop.config import load_config
from strop.objectives.distill import distill_loss, token_divergence
from strop.train.loop import train


def reference(student, teacher, t, kind, beta=0.5):
    out = []
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        ps = [math.exp(x / t) for x in s_row]
        pt = [math.exp(x / t) for x in t_row]
        ps = [p / sum(ps) for p in ps]
        pt = [p / sum(pt) for p in pt]
        kl = lambda a, b: sum(x * math.log(x / y) for x, y in zip(a, b))  # noqa: E731
        if kind == "forward_kl":
            out.append(kl(pt, ps))
        elif kind == "reverse_kl":
            out.append(kl(ps, pt))
        else:
            m = [beta * x + (1 - beta) * y for x, y in zip(pt, ps)]
            out.append(beta * kl(pt, m) + (1 - beta) * kl(ps, m))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_divergence_matches_reference_odd_shape(kind):
    gen = torch.Generator().manual_seed(0)
    student, teacher = (
        torch.randn(7, 13, generator=gen, dtype=torch.float64),
        torch.randn(7, 13, generator=gen, dtype=torch.float64),
    )
    got = token_divergence(student, teacher, 2.0, kind, 0.3).double()
    torch.testing.assert_close(got, reference(student, teacher, 2.0, kind, 0.3), rtol=1e-5, atol=1e-6)
    assert token_divergence(student, student, 2.0, kind).abs().max() < 1e-9


def test_hand_worked_forward_kl():
    # p_T = (1/2, 1/2), p_S = (e/(1+e), 1/(1+e)) at T=1: KL = ln(1+e) - 1/2 - ln 2 ... written out:
    p_s1 = math.e / (1 + math.e)
    expected = 0.5 * math.log(0.5 / p_s1) + 0.5 * math.log(0.5 / (1 - p_s1))
    got = token_divergence(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), 1.0)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_loss_weights_and_gradcheck():
    logps = torch.tensor([[-1.0, -2.0, -3.0]])
    div = torch.tensor([[0.5, 0.25, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    per_example, _ = distill_loss(logps, div, mask, alpha=0.25, temperature=2.0)
    assert float(per_example) == pytest.approx(0.25 * 3.0 + 0.75 * 4 * 0.75)
    student = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(3, 5, dtype=torch.float64)
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        assert torch.autograd.gradcheck(lambda s: token_divergence(s, teacher, 1.5, kind).double(), (student,))


@pytest.mark.parametrize("adapter", ["lora", "full"])
def test_distill_run_from_yaml(make_config, tiny_model, adapter):
    cfg, base = load_config(
        make_config(rl="distill", distill_teacher=str(tiny_model), adapter=adapter, max_steps=2, distill_loss="jsd")
    )
    out = train(cfg, base)
    first = (out / "metrics.jsonl").read_text().splitlines()[0]
    assert '"divergence"' in first


def test_teacher_with_other_vocabulary_is_refused(make_config, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from strop.errors import StropError

    other = tmp_path / "other"
    LlamaForCausalLM(
        LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            vocab_size=77,
        )
    ).save_pretrained(other)
    cfg, base = load_config(make_config(rl="distill", distill_teacher=str(other), distill_cross_tokenizer="off"))
    with pytest.raises(StropError, match="share a tokenizer"):
        train(cfg, base)


def test_generate_writes_chat_dataset_that_trains(tiny_model, tmp_path, make_config):
    import json

    from strop.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hello"}\n{"instruction": "Say", "input": "fox"}\n')
    out = tmp_path / "teacher.jsonl"
    assert main(["generate", str(tiny_model), str(prompts), "--out", str(out), "--max-new-tokens", "3"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["messages"][0]["content"] for r in rows] == ["hello", "Say\n\nfox"]
    assert all(r["messages"][1]["role"] == "assistant" for r in rows)
    assert not list(tmp_path.glob("teacher.jsonl.tmp*"))
