"""The Axolotl key policy, dataset types, optimizers, schedules and stop rules, each on hand-made inputs."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

from strop.axolotl_keys import compat_rows, drop_blank_defaults, translate
from strop.config import DatasetSpec, config_class, load_config
from strop.data.axolotl_types import dataset_rows, remap_row, translate_datasets
from strop.errors import StropError
from strop.models.chat_templates import NAMED_TEMPLATES
from strop.strategies.optim import build_optimizer
from strop.train.optim import lr_factor
from strop.train.run_keys import StopRules, apply_per_epoch

BASE = {"datasets": [{"path": "d.jsonl", "type": "alpaca"}]}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_ignored_keys_print_one_line_each_and_off_values_pass(tmp_path, capsys):
    cfg, _ = load_config(
        write(
            tmp_path,
            {
                **BASE,
                "tf32": True,
                "strict": False,
                "liger_rope": True,
                "dataset_prepared_path": None,
                "deepspeed": None,
                "fp16": None,
                "max_grad_norm": None,
                "lora_target_linear": True,
                "adapter": "lora",
            },
        )
    )
    err = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in err] == ["strop: ignored: liger_rope", "strop: ignored: tf32"]  # YAML order
    assert (cfg.fp16, cfg.max_grad_norm, cfg.lora_target_modules) == (False, None, "all-linear")


def test_feature_strop_lacks_is_refused_when_on(tmp_path):
    with pytest.raises(StropError, match=r"relora: True is not supported: ReLoRA restarts are not implemented"):
        load_config(write(tmp_path, {**BASE, "relora": True}))


def test_trl_block_maps_to_rl_keys_and_rewards():
    out, notes = translate(
        {
            "rl": "grpo",
            "sequence_len": 100,
            "trl": {
                "beta": 0.04,
                "num_generations": 4,
                "max_completion_length": 28,
                "use_vllm": True,
                "reward_funcs": ["r.a", "r.b"],
                "reward_weights": [1.0, 0.5],
            },
        },
        "c.yml",
        set(config_class().model_fields),
    )
    assert out["kl_beta"] == 0.04 and out["num_generations"] == 4 and out["sequence_len"] == 128
    assert out["rewards"] == [
        {"type": "trl_function", "function": "r.a", "weight": 1.0},
        {"type": "trl_function", "function": "r.b", "weight": 0.5},
    ]
    assert any(n.startswith("ignored: trl.use_vllm") for n in notes)
    with pytest.raises(StropError, match=r"trl.bogus is not a key strop knows"):
        translate({"trl": {"bogus": 1}}, "c.yml", set())


def test_blank_values_fall_back_only_where_null_is_not_a_value():
    fields = config_class().model_fields
    assert drop_blank_defaults({"fp16": None, "max_grad_norm": None, "eval_steps": None}, fields) == {
        "max_grad_norm": None,
        "eval_steps": None,
    }


def _spec(_rl: str | None = None, **keys) -> DatasetSpec:
    raw = {"datasets": [{"path": "d.jsonl", **keys}], "rl": _rl}
    translate_datasets(raw, "c.yml", {"alpaca", "chat", "dpo", "kto", "text", "prompt"})
    return DatasetSpec.model_validate(raw["datasets"][0])


def test_chat_template_maps_fields_and_roles():
    spec = _spec(
        type="chat_template",
        field_messages="conv",
        message_property_mappings={"role": "from", "content": "value"},
        roles={"assistant": ["bot"], "user": ["human"]},
    )
    assert spec.type == "chat"
    row = {"conv": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "yo"}]}
    assert remap_row(spec, row, "d:1") == {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    }


def test_dpo_chat_types():
    default = _spec(type="chat_template.default", field_messages="conversation", _rl="dpo")
    assert default.type == "dpo"
    row = {
        "conversation": [{"role": "user", "content": "q"}],
        "chosen": {"role": "assistant", "content": "good"},
        "rejected": {"role": "assistant", "content": "bad"},
    }
    assert remap_row(default, row, "d:1") == {
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": "good",
        "rejected": "bad",
    }
    argilla = _spec(type="chat_template.argilla", _rl="orpo")
    conv = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert remap_row(argilla, {"chosen": conv, "rejected": conv}, "d:1")["chosen"] == conv
    assert (
        _spec(type="llama3.ultra", _rl="kto").type == "kto"
        and _spec(type="llama3.ultra", _rl="dpo").type == "chatml.ultra"
    )
    bt = _spec(type="bradley_terry.chat_template")
    assert remap_row(bt, {"system": "s", "input": "q", "chosen": "c", "rejected": "r"}, "d:1")["prompt"] == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "q"},
    ]


def test_completion_field_and_refused_training_roles():
    spec = _spec(type="completion", field="body")
    assert (spec.type, remap_row(spec, {"body": "text here"}, "d:1")) == ("text", {"text": "text here"})
    with pytest.raises(StropError, match=r"roles_to_train: \['user', 'assistant'\] is not supported"):
        _spec(type="chat_template", roles_to_train=["user", "assistant"])


def test_exact_deduplication_across_datasets(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n{"text": "y"}\n')
    (tmp_path / "b.jsonl").write_text('{"text": "y"}\n{"text": "z"}\n{"text": "z"}\n')
    cfg = types.SimpleNamespace(
        dataset_exact_deduplication=True,
        datasets=[DatasetSpec(path="a.jsonl", type="text"), DatasetSpec(path="b.jsonl", type="text")],
    )
    assert [row["text"] for _, row in dataset_rows(cfg, cfg.datasets[1], tmp_path)] == ["z"]


def test_input_output_trains_only_labelled_segments(tiny_model):
    from transformers import AutoTokenizer

    from strop.data.formats import input_output
    from strop.data.tokenize import IGNORE, tokenize_example

    tok = AutoTokenizer.from_pretrained(tiny_model)
    example = input_output(
        {"segments": [{"text": "hello world ", "label": False}, {"text": "lazy dog", "label": True}]}, "d:1"
    )
    tokens = tokenize_example(example, tok, train_on_inputs=False, where="d:1")
    trained = [t for t, label in zip(tokens["input_ids"], tokens["labels"]) if label != IGNORE]
    assert tok.decode(trained) == "lazy dog"
    assert tok.decode(tokens["input_ids"]) == "hello world lazy dog"


def test_warmup_stable_decay_schedule():
    options = {"num_decay_steps": 4, "min_lr_ratio": 0.1}
    values = [lr_factor(step, 0, 10, "warmup_stable_decay", options) for step in (0, 5, 6, 8, 10)]
    assert values == pytest.approx([1.0, 1.0, 1.0, 0.1 + 0.9 * 0.5, 0.1])
    assert lr_factor(9, 0, 10, "warmup_stable_decay", {}) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0)))


def test_stop_rules():
    early = StopRules(types.SimpleNamespace(early_stopping_patience=2, loss_watchdog_threshold=None))
    assert [early.update({"eval_loss": v}) is not None for v in (1.0, 0.9, 0.95, 0.92)] == [False, False, False, True]
    watchdog = StopRules(
        types.SimpleNamespace(early_stopping_patience=None, loss_watchdog_threshold=5.0, loss_watchdog_patience=2)
    )
    assert [watchdog.update({"loss": v}) is not None for v in (6, 4, 6, 7)] == [False, False, False, True]


def test_per_epoch_sets_unset_steps():
    cfg = types.SimpleNamespace(
        gradient_accumulation_steps=2, saves_per_epoch=2, evals_per_epoch=4, save_steps=None, eval_steps=7
    )
    apply_per_epoch(cfg, micro_batches_per_epoch=10)
    assert (cfg.save_steps, cfg.eval_steps) == (2, 7)


def _opt_cfg(name: str):
    return types.SimpleNamespace(
        optimizer=name, weight_decay=0.0, learning_rate=1e-3, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8
    )


def test_low_bit_optimizers(monkeypatch):
    params = [torch.nn.Parameter(torch.randn(64, 256))]
    assert type(build_optimizer(params, _opt_cfg("adamw_bnb_8bit"), torch.device("cpu"))).__name__ == "AdamW8bit"
    assert type(build_optimizer(params, _opt_cfg("paged_adamw_8bit"), torch.device("cpu"))).__name__ == "PagedAdamW8bit"
    monkeypatch.setitem(sys.modules, "torchao.optim", None)
    with pytest.raises(StropError, match=r"adamw_torch_4bit needs torchao"):
        build_optimizer(params, _opt_cfg("adamw_torch_4bit"), torch.device("cpu"))


def test_load_in_8bit_base_under_lora(tiny_model):
    from strop.strategies import get_strategy

    spec = config_class().model_validate(
        {**BASE, "base_model": str(tiny_model), "adapter": "lora", "load_in_8bit": True, "bf16": False}
    )
    model = get_strategy("lora").load(str(tiny_model), spec, torch.device("cpu"))
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear8bitLt"


def test_special_tokens_resize_embeddings(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from strop.models.tokens import apply_tokens, fit_embeddings

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    rows = model.get_input_embeddings().weight.shape[0]
    cfg = types.SimpleNamespace(
        special_tokens={"eos_token": "<|eot_id|>", "pad_token": "<|endoftext|>"}, tokens=["<x>"]
    )
    assert apply_tokens(tok, cfg) == ["<|eot_id|>", "<x>"]
    fit_embeddings(model, tok)
    assert model.get_input_embeddings().weight.shape[0] == rows + 2
    assert model.config.eos_token_id == tok.convert_tokens_to_ids("<|eot_id|>")
    tok.add_tokens(["<y>"])
    fit_embeddings(model, tok, multiple_of=32)  # resize_token_embeddings_to_32x
    assert model.get_input_embeddings().weight.shape[0] == -(-(rows + 3) // 32) * 32


def test_pretraining_dataset_reads_its_text_column_whole(tmp_path, capsys):
    raw = {"pretraining_dataset": [{"path": "c4.jsonl", "name": "en", "type": "pretrain", "text_column": "body"}]}
    cfg, _ = load_config(write(tmp_path, raw))
    assert [(d.path, d.name, d.type, d.field) for d in cfg.datasets] == [("c4.jsonl", "en", "text", "body")]
    assert "strop does not stream" in capsys.readouterr().err
    with pytest.raises(StropError, match=r"pretraining_dataset\[0\]: unknown key\(s\) \['skip_rows'\]"):
        load_config(write(tmp_path, {"pretraining_dataset": [{"path": "c4.jsonl", "skip_rows": 3}]}))


def test_no_amp_switches_are_strops_autocast_keys(tmp_path):
    cfg, _ = load_config(write(tmp_path, {**BASE, "bfloat16": True}))
    assert cfg.bf16 is True


def test_drop_system_message_and_alpaca_prompt_styles():
    spec = _spec(type="chat_template", drop_system_message=True)
    row = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]}
    assert remap_row(spec, row, "d:1") == {"messages": [{"role": "user", "content": "q"}]}
    assert _spec(type="alpaca:phi").type == "alpaca"


@pytest.mark.parametrize("name", sorted(NAMED_TEMPLATES))
def test_named_template_renders_every_prefix_as_a_prefix(name):
    """tokenize.py finds each reply by rendering the conversation's prefixes: each must start the whole."""
    from jinja2 import Template

    conv = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "sure"},
    ]
    template = Template(NAMED_TEMPLATES[name])
    whole = template.render(messages=conv, add_generation_prompt=False)
    for end in range(1, len(conv)):
        assert whole.startswith(template.render(messages=conv[:end], add_generation_prompt=False)), end
    assert "sure" in whole and "Be brief." in whole


def test_trl_function_reward_gets_trl_arguments(tmp_path):
    from strop.rl.rewards import build_rewards

    (tmp_path / "mine.py").write_text(
        "def score(prompts, completions, answer, **kw):\n"
        "    return [float(c[0]['content'] == a) + 0.5 * (p[-1]['role'] == 'user') for p, c, a in zip(prompts, completions, answer)]\n"
    )
    reward = build_rewards([{"type": "trl_function", "function": "mine.score"}], tmp_path)[0]
    prompts = [[{"role": "user", "content": "q"}]] * 2
    assert reward.fn(prompts, ["4", "5"], [{"prompt": "q", "answer": "4"}, {"prompt": "q", "answer": "4"}]) == [
        1.5,
        0.5,
    ]


def test_readme_table_lists_every_key():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [key for key, _, _ in compat_rows() if f"| `{key}` |" not in readme]
    assert not missing, f"README's Axolotl table lacks {missing}: run `strop config --axolotl-keys`"


@pytest.mark.parametrize("name", ["adamw_bnb_8bit", "adamw_torch", "adamw_torch_8bit"])
def test_low_bit_optimizer_state_survives_a_checkpoint(name, tmp_path):
    """Save after two steps, load into a fresh optimizer: the third step is identical (bitsandbytes shares
    its quantization maps between parameters and nests them; torchao's states are tensor subclasses)."""
    import json

    from safetensors.torch import load_file, save_file

    from strop.train.checkpoint import _join_optimizer, _split_optimizer

    if name == "adamw_torch_8bit":
        pytest.importorskip("torchao")
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(64, 512)), torch.nn.Parameter(torch.randn(64, 256))]
    opt = build_optimizer(params, _opt_cfg(name), torch.device("cpu"))
    for _ in range(2):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    tensors, meta = _split_optimizer(opt.state_dict())
    save_file(tensors, tmp_path / "o.safetensors")
    (tmp_path / "m.json").write_text(json.dumps(meta))
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    again = build_optimizer(copies, _opt_cfg(name), torch.device("cpu"))
    again.load_state_dict(
        _join_optimizer(load_file(tmp_path / "o.safetensors"), json.loads((tmp_path / "m.json").read_text()))
    )
    for p, q in zip(params, copies):
        p.grad = torch.ones_like(p)
        q.grad = torch.ones_like(q)
    opt.step()
    again.step()
    for p, q in zip(params, copies):
        assert torch.equal(p, q)


def test_grpo_prompt_transform_from_the_config_folder(tmp_path):
    from strop.data.axolotl_types import load_transform

    (tmp_path / "mine.py").write_text(
        "def transform(cfg, *args, **kwargs):\n"
        "    def fn(example, tokenizer=None):\n"
        "        return {'prompt': [{'role': 'user', 'content': example['q']}], 'answer': example['a'].split('#')[-1]}\n"
        "    return fn, {'remove_columns': ['q']}\n"
    )
    apply = load_transform("mine.transform", None, tmp_path)
    assert apply({"q": "2+2?", "a": "so #4", "id": 7}) == {
        "a": "so #4",
        "id": 7,
        "prompt": [{"role": "user", "content": "2+2?"}],
        "answer": "4",
    }
    with pytest.raises(StropError, match=r"datasets type 'mine.nothing': mine has no function 'nothing'"):
        load_transform("mine.nothing", None, tmp_path)
