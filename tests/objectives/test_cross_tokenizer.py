"""Cross-tokenizer distillation: ULD by hand, offset alignment by hand, and a byte-BPE student learning
from a character-level teacher (two tokenizers built here, no hub)."""

from __future__ import annotations

import json
import math
import string

import pytest
import torch
from tests.conftest import CHATML, alpaca_rows

from strop.config import load_config
from strop.objectives.cross_tokenizer import aligned_positions, token_ends, uld_distance
from strop.train.loop import train


def test_uld_by_hand_with_different_vocabulary_sizes():
    # p_S = (3/4, 1/4); p_T = (1/4, 1/2, 1/4) sorted (1/2, 1/4, 1/4); padded p_S = (3/4, 1/4, 0):
    # |1/2 − 3/4| + |1/4 − 1/4| + |1/4 − 0| = 1/2
    student = torch.tensor([[math.log(3), 0.0]])
    teacher = torch.tensor([[0.0, math.log(2), 0.0]])
    assert float(uld_distance(student, teacher)) == pytest.approx(0.5, abs=1e-6)


def test_uld_ignores_token_identity_and_uses_temperature():
    # the same probabilities on other tokens and in another order: distance 0
    student = torch.tensor([[math.log(2), 0.0, 0.0]])
    teacher = torch.tensor([[0.0, -math.inf, 0.0, math.log(2)]])
    assert float(uld_distance(student, teacher)) == pytest.approx(0.0, abs=1e-6)
    # T = 2 on logits (ln 9, 0): p = (3/4, 1/4); against a uniform teacher over two: 1/4 + 1/4
    got = uld_distance(torch.tensor([[math.log(9), 0.0]]), torch.tensor([[0.0, 0.0]]), temperature=2.0)
    assert float(got) == pytest.approx(0.5, abs=1e-6)


def test_uld_gradcheck():
    student = torch.tensor([[0.3, -1.2, 2.0, 0.7]], dtype=torch.float64, requires_grad=True)
    teacher = torch.tensor([[1.0, 0.1, -0.5]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda s: uld_distance(s, teacher, 1.5), (student,))


def test_alignment_by_end_offsets():
    # "hello world": words end at 5 and 11, characters at 1..11
    assert aligned_positions([5, 11], list(range(1, 12))) == [(0, 4), (1, 10)]
    assert aligned_positions([3, 7], [2, 5, 7]) == [(1, 2)]
    assert aligned_positions([2, 2, 5], [2, 5]) == [(0, 0), (2, 1)]  # an empty span matches once
    assert aligned_positions([], [1, 2]) == []


def test_token_ends_follow_the_decoded_text(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    ids = tok("<|im_start|>user\nThe quick brown fox.<|im_end|>", add_special_tokens=False)["input_ids"]
    text, ends = token_ends(tok, ids)
    assert ends[-1] == len(text) and ends == sorted(ends)
    for k in range(len(ids)):
        assert text[: ends[k]] == tok.decode(
            ids[: k + 1], skip_special_tokens=False, clean_up_tokenization_spaces=False
        )


@pytest.fixture(scope="module")
def char_teacher(tmp_path_factory):
    """A tiny Llama whose tokenizer has one token per character (the student's is byte-level BPE)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("char-teacher")
    vocab = {"<unk>": 0, "<pad>": 1, **{c: i + 2 for i, c in enumerate(string.printable)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<pad>")
    fast.chat_template = CHATML
    fast.save_pretrained(folder)
    torch.manual_seed(3)
    config = LlamaConfig(
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(fast),
        max_position_embeddings=1024,
        pad_token_id=1,
        eos_token_id=1,
        bos_token_id=1,
    )
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"divergence"' in line]


@pytest.mark.slow
def test_auto_distils_across_tokenizers_and_lowers_uld(make_config, char_teacher):
    """Four rows in one micro-batch: every step sees the same batch, so the ULD term must fall."""
    cfg, base = load_config(
        make_config(
            alpaca_rows(4),
            rl="distill",
            distill_teacher=str(char_teacher),
            adapter="full",
            distill_alpha=0.0,
            distill_temperature=1.0,
            micro_batch_size=4,
            max_steps=8,
            learning_rate=1e-2,
            warmup_steps=0,
        )
    )
    records = _metrics(train(cfg, base))
    assert len(records) == 8
    # `aligned` is the share of response positions compared: a character-level teacher ends a token at
    # every character, so at every end of a student token
    assert all(r["aligned"] == pytest.approx(1.0) for r in records)
    assert records[-1]["divergence"] < 0.5 * records[0]["divergence"]  # measured: 1.20 → 0.17
    assert records[0]["loss"] == pytest.approx(records[0]["divergence"], rel=1e-5)  # alpha 0, T 1: loss = ULD


@pytest.mark.slow
def test_same_tokenizer_stays_on_kl_unless_uld_is_asked(make_config, tiny_model):
    cfg, base = load_config(make_config(rl="distill", distill_teacher=str(tiny_model), max_steps=1))
    assert "aligned" not in _metrics(train(cfg, base))[0]
    cfg, base = load_config(
        make_config(
            rl="distill",
            distill_teacher=str(tiny_model),
            max_steps=1,
            distill_cross_tokenizer="uld",
            output_dir=str(base / "uld"),
        )
    )
    first = _metrics(train(cfg, base))[0]
    # same tokenizer: every response position aligns with itself, and ULD of equal models is 0
    assert first["aligned"] == pytest.approx(1.0) and first["divergence"] == pytest.approx(0.0, abs=1e-6)


def test_packed_rows_are_refused_across_tokenizers(make_config, char_teacher):
    from strop.errors import StropError

    cfg, base = load_config(make_config(rl="distill", distill_teacher=str(char_teacher), sample_packing=True))
    with pytest.raises(StropError, match="sample_packing: false"):
        train(cfg, base)


def test_token_ends_of_a_segmentation_the_tokenizer_would_not_make(tiny_model):
    """ids spelling "hello" one character at a time do not round-trip (the tokenizer merges them), so
    the ends come from decoding each prefix: 1, 2, 3, 4, 5."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    ids = [tok.convert_tokens_to_ids(c) for c in "hello"]
    assert tok("hello", add_special_tokens=False)["input_ids"] != ids
    assert token_ends(tok, ids) == ("hello", [1, 2, 3, 4, 5])


def test_auto_tells_tokenizers_apart_by_their_tokens(tiny_model, char_teacher, tmp_path):
    from transformers import AutoTokenizer

    from strop.objectives.distill import _other_tokenizer

    student = AutoTokenizer.from_pretrained(tiny_model)
    assert _other_tokenizer(str(char_teacher), student, 300, 300, False)  # same size, other tokens
    assert not _other_tokenizer(str(tiny_model), student, 300, 300, False)
    assert _other_tokenizer(str(tiny_model), student, 301, 300, False)  # another size
    assert not _other_tokenizer(str(tmp_path), student, 300, 300, False)  # no tokenizer files: taken as shared
