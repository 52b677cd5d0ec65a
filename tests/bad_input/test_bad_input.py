"""Bad input through every command, in process: each case must end in exit status 2 with one
`strop: error:` line that names the culprit (file and line, field, tensor, function, row), print no
traceback, and leave nothing at the output path that could pass for a finished run.

Each case is (id, argv built from the World, regex the message must match). The World holds good
models built once per session; a case writes only the one bad thing it is about.
"""

from __future__ import annotations

import re

import pytest
from bad_input_world import World, looks_complete

from strop.cli import main

Q = re.escape
W = World

SFT_DATA = [
    (
        "jsonl-malformed-line",
        lambda w: ["train", w.data_config("data.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": \n')],
        r"data\.jsonl:2: malformed JSON",
    ),
    (
        "jsonl-line-is-a-list",
        lambda w: ["train", w.data_config("data.jsonl", "[1, 2]\n[3]\n")],
        r"data\.jsonl:1: each line must be a JSON object, got list",
    ),
    (
        "jsonl-line-is-a-string",
        lambda w: ["train", w.data_config("data.jsonl", w.rows(4) + ["just text"])],
        r"data\.jsonl:5: each line must be a JSON object, got str",
    ),
    (
        "jsonl-not-utf8-midway",
        lambda w: [
            "train",
            w.data_config(
                "data.jsonl",
                b'{"instruction": "a", "output": "b"}\n' * 2 + b'{"instruction": "caf\xe9", "output": "b"}\n',
            ),
        ],
        r"data\.jsonl:3: not UTF-8 text \(byte 0xe9\)",
    ),
    (
        "jsonl-missing-field",
        lambda w: ["train", w.data_config("data.jsonl", [{"instruction": "a"}])],
        r"data\.jsonl:1: missing field 'output'",
    ),
    (
        "jsonl-field-wrong-type",
        lambda w: ["train", w.data_config("data.jsonl", [{"instruction": "a", "output": ["b"]}])],
        r"data\.jsonl:1: field 'output' must be a string, got list",
    ),
    (
        "alpaca-empty-output",
        lambda w: ["train", w.data_config("data.jsonl", w.rows(4) + [{"instruction": "a", "output": " "}])],
        r"data\.jsonl:5: field 'output' is empty",
    ),
    ("empty-file", lambda w: ["train", w.data_config("data.jsonl", "")], r"dataset .*data\.jsonl is empty"),
    (
        "dataset-missing",
        lambda w: ["train", w.config(str(w.tmp / "nope.jsonl"))],
        r"dataset file not found: .*nope\.jsonl",
    ),
    ("dataset-is-a-folder", lambda w: ["train", w.config(str(w.tmp))], r"dataset path .* is a folder"),
    (
        "dataset-unknown-suffix",
        lambda w: ["train", w.data_config("data.txt", "hello\n")],
        r"data\.txt: unsupported file type '\.txt'",
    ),
    (
        "json-not-a-list",
        lambda w: ["train", w.data_config("data.json", '{"rows": 1}')],
        r"data\.json: a JSON dataset must be a list",
    ),
    (
        "json-malformed",
        lambda w: ["train", w.data_config("data.json", '[\n{"instruction": "a",\n}\n]')],
        r"data\.json:3: malformed JSON",
    ),
    (
        "json-item-not-object",
        lambda w: ["train", w.data_config("data.json", '[{"instruction": "a", "output": "b"}, 7]')],
        r"data\.json\[1\]: each item must be an object, got int",
    ),
    (
        "parquet-broken",
        lambda w: ["train", w.data_config("data.parquet", b"PAR1 this is not parquet")],
        r"data\.parquet: not a readable Parquet file",
    ),
    (
        "csv-ragged-row",
        lambda w: ["train", w.data_config("data.csv", 'instruction,output\na,b\n"c,d\n')],
        r"data\.csv: not a readable CSV file",
    ),
    (
        "csv-missing-column",
        lambda w: ["train", w.data_config("data.csv", "instruction,answer\na,b\n")],
        r"data\.csv:line 2: missing field 'output'",
    ),
    (
        "chat-empty-assistant-reply",
        lambda w: [
            "train",
            w.data_config(
                "chat.jsonl",
                [
                    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
                    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]},
                ],
                "chat",
            ),
        ],
        r"chat\.jsonl:2: messages\[1\]: the assistant reply is empty",
    ),
    (
        "sharegpt-empty-gpt-turn",
        lambda w: [
            "train",
            w.data_config(
                "chat.jsonl",
                [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "  "}]}],
                "sharegpt",
            ),
        ],
        r"chat\.jsonl:1: conversations\[1\]: the assistant reply is empty",
    ),
    (
        "chat-no-assistant",
        lambda w: ["train", w.data_config("chat.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}], "chat")],
        r"chat\.jsonl:1: the conversation has no assistant message",
    ),
    (
        "chat-bad-role",
        lambda w: ["train", w.data_config("chat.jsonl", [{"messages": [{"role": "robot", "content": "hi"}]}], "chat")],
        r"chat\.jsonl:1: messages\[0\]: field 'role' must be one of",
    ),
    (
        "chat-content-not-text",
        lambda w: ["train", w.data_config("chat.jsonl", [{"messages": [{"role": "user", "content": 3}]}], "chat")],
        r"chat\.jsonl:1: messages\[0\]: field 'content' must be a string, got int",
    ),
    (
        "chat-messages-not-list",
        lambda w: ["train", w.data_config("chat.jsonl", [{"messages": "hi"}], "chat")],
        r"chat\.jsonl:1: field 'messages' must be a non-empty list",
    ),
    (
        "text-empty",
        lambda w: ["train", w.data_config("text.jsonl", [{"text": ""}], "text")],
        r"text\.jsonl:1: field 'text' is empty",
    ),
    (
        "completion-empty",
        lambda w: ["train", w.data_config("c.jsonl", [{"prompt": "a", "completion": ""}], "completion")],
        r"c\.jsonl:1: field 'completion' is empty",
    ),
    (
        "all-rows-over-sequence-len",
        lambda w: ["train", w.data_config("data.jsonl", [{"instruction": "word " * 200, "output": "b"}])],
        r"no training examples left after tokenization: dropped 1 of 1 examples longer than sequence_len=128",
    ),
    (
        "row-over-sequence-len-error",
        lambda w: [
            "train",
            w.data_config(
                "data.jsonl",
                w.rows(4) + [{"instruction": "word " * 200, "output": "b"}],
                excess_length_strategy="error",
            ),
        ],
        r"data\.jsonl:5: \d+ tokens, over sequence_len=128",
    ),
]

PREFERENCE_DATA = [
    (
        "dpo-same-reply",
        lambda w: [
            "train",
            w.data_config("pairs.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "a"}], "dpo", rl="dpo"),
        ],
        r"pairs\.jsonl:1: 'chosen' and 'rejected' are the same reply",
    ),
    (
        "dpo-missing-rejected",
        lambda w: ["train", w.data_config("pairs.jsonl", [{"prompt": "p", "chosen": "a"}], "dpo", rl="dpo")],
        r"pairs\.jsonl:1: missing field 'rejected'",
    ),
    (
        "kto-label-not-bool",
        lambda w: [
            "train",
            w.data_config("kto.jsonl", [{"prompt": "p", "completion": "a", "label": "yes"}], "kto", rl="kto"),
        ],
        r"kto\.jsonl:1: field 'label' must be true or false, got 'yes'",
    ),
    ("dpo-with-alpaca-rows", lambda w: ["train", w.config(rl="dpo")], r"type 'alpaca' is not read by rl: dpo"),
]

CONFIG = [
    (
        "config-typo-key",
        lambda w: ["train", w.config(learning_rat=1e-3)],
        r"unknown key 'learning_rat'; did you mean 'learning_rate'",
    ),
    ("config-missing", lambda w: ["train", str(w.tmp / "nope.yml")], r"config file not found: .*nope\.yml"),
    ("config-bad-yaml", lambda w: ["train", w.file("c.yml", "base_model: [x\n")], r"c\.yml: not valid YAML"),
    (
        "config-not-a-mapping",
        lambda w: ["train", w.file("c.yml", "- a\n- b\n")],
        r"c\.yml: the top level must be a mapping",
    ),
    ("set-without-value", lambda w: ["train", w.config(), "--set", "lora_r"], r"--set 'lora_r': expected key=value"),
    ("set-wrong-type", lambda w: ["train", w.config(), "--set", "lora_r=abc"], r"lora_r: .*integer"),
    ("micro-batch-zero", lambda w: ["train", w.config(micro_batch_size=0)], r"micro_batch_size"),
    (
        "val-set-larger-than-train",
        lambda w: ["train", w.config(val_set_size=0.9)],
        r"val_set_size=0\.9 holds out 14 of 16 examples, more than the 2 left to train on",
    ),
    (
        "val-set-count-above-rows",
        lambda w: ["train", w.config(val_set_size=40)],
        r"val_set_size=40\.0 leaves no training examples out of 16",
    ),
    ("val-set-not-whole", lambda w: ["train", w.config(val_set_size=1.5)], r"val_set_size=1\.5: use a share below 1"),
    (
        "chat-template-unknown",
        lambda w: ["train", w.config(chat_template="llama9")],
        r"chat_template: unknown template 'llama9'",
    ),
    ("train-nproc-zero", lambda w: ["train", w.config(), "--nproc", "0"], r"train: argument --nproc: must be in \[1"),
]

MODELS = [
    (
        "base-model-missing",
        lambda w: ["train", w.config(base_model=str(w.tmp / "nomodel"))],
        r"base_model: no such file or folder: .*nomodel",
    ),
    (
        "base-model-folder-without-config",
        lambda w: ["train", w.config(base_model=str(w.tmp))],
        r"base_model: .* is a folder without config\.json",
    ),
    (
        "base-model-is-a-weights-file",
        lambda w: ["train", w.config(base_model=str(w.tiny / "model.safetensors"))],
        r"base_model: .*model\.safetensors is a file; give the model's folder",
    ),
    (
        "base-model-corrupt-safetensors",
        lambda w: [
            "train",
            w.config(base_model=w.broken(w.tiny, "model.safetensors", text=b"\x10" + bytes(7) + b"{x}")),
        ],
        r"m/model\.safetensors: not a readable safetensors file",
    ),
    (
        "base-model-truncated-safetensors",
        lambda w: ["train", w.config(base_model=w.broken(w.tiny, "model.safetensors", keep=0.5))],
        r"m/model\.safetensors: not a readable safetensors file",
    ),
    (
        "base-model-config-not-json",
        lambda w: ["train", w.config(base_model=w.broken(w.tiny, "config.json", text="{nope"))],
        r"m/config\.json",
    ),
    (
        "gguf-truncated",
        lambda w: ["train", w.config(base_model=w.file("model.gguf", b"GGUF\x03\x00\x00\x00" + b"\x00" * 10))],
        r"base_model: .*model\.gguf is not a complete GGUF file",
    ),
    (
        "gguf-not-gguf",
        lambda w: ["train", w.config(base_model=w.file("model.gguf", "I am text"))],
        r"base_model: .*model\.gguf is not a GGUF file",
    ),
    (
        "gguf-missing",
        lambda w: ["train", w.config(base_model=str(w.tmp / "none.gguf"))],
        r"base_model: GGUF file not found",
    ),
    (
        "tokenizer-folder-missing",
        lambda w: ["train", w.config(tokenizer_config=str(w.tmp / "tok"))],
        r"tokenizer: no such folder: .*tok",
    ),
    (
        "base-model-without-tokenizer",
        lambda w: ["train", w.config(base_model=w.broken(w.tiny, "tokenizer.json", text="{}"))],
        r"could not load a tokenizer from '.*/m'",
    ),
    (
        "model-type-mismatch",
        lambda w: ["train", w.config(model_type="Qwen2ForCausalLM")],
        r"model_type is Qwen2ForCausalLM but .* is LlamaForCausalLM",
    ),
]

STRATEGIES = [
    (
        "lora-target-missing",
        lambda w: ["train", w.config(lora_target_modules=["qproj"])],
        r"lora_target_modules: 'qproj' \(did you mean 'q_proj'\?\) not found in LlamaForCausalLM; its linear layers are: .*v_proj",
    ),
    (
        "lora-target-one-of-two-missing",
        lambda w: ["train", w.config(lora_target_modules=["q_proj", "value"])],
        r"lora_target_modules: 'value'.* not found",
    ),
    (
        "ia3-target-missing",
        lambda w: ["train", w.config(adapter="ia3", ia3_target_modules=["key_proj"], ia3_feedforward_modules=[])],
        r"ia3_target_modules: 'key_proj'",
    ),
    (
        "galore-target-missing",
        lambda w: ["train", w.config(adapter="galore", galore_target_modules=["attention"])],
        r"galore_target_modules: 'attention'",
    ),
    ("bitfit-without-biases", lambda w: ["train", w.config(adapter="bitfit")], r"bitfit trains only bias terms"),
    ("unknown-adapter", lambda w: ["train", w.config(adapter="lorra")], r"lorra"),
]

REWARDS = [
    (
        "reward-raises",
        lambda w: ["train", w.rl_config("rewards.py:raises")],
        r"prompts\.jsonl:\d+: function reward 'rewards\.py:raises' raised ValueError: boom \(at rewards\.py:3\)",
    ),
    (
        "reward-wrong-length",
        lambda w: ["train", w.rl_config("rewards.py:too_short")],
        r"function reward 'rewards\.py:too_short' must return a list of 4 numbers \(one per completion\), got length 1",
    ),
    (
        "reward-returns-none",
        lambda w: ["train", w.rl_config("rewards.py:nones")],
        r"prompts\.jsonl:\d+: function reward 'rewards\.py:nones' returned None",
    ),
    (
        "reward-returns-text",
        lambda w: ["train", w.rl_config("rewards.py:text")],
        r"function reward 'rewards\.py:text' .* got str",
    ),
    (
        "reward-syntax-error",
        lambda w: [w.file("broken.py", "def f(:\n") and "train", w.rl_config("broken.py:f")],
        r"function reward 'broken\.py:f': .*broken\.py:1: syntax error",
    ),
    (
        "reward-raises-on-import",
        lambda w: [
            w.file("boom.py", "import json\nraise RuntimeError('no key')\n") and "train",
            w.rl_config("boom.py:f"),
        ],
        r"function reward 'boom\.py:f': importing .*boom\.py raised RuntimeError: no key \(at boom\.py:2\)",
    ),
    (
        "reward-function-missing",
        lambda w: ["train", w.rl_config("rewards.py:nope")],
        r"function reward 'rewards\.py:nope': rewards\.py has no function 'nope'",
    ),
    (
        "reward-file-missing",
        lambda w: ["train", w.rl_config("gone.py:f")],
        r"function reward 'gone\.py:f': file not found",
    ),
    (
        "reward-module-missing",
        lambda w: ["train", w.rl_config("no_such_module_xyz:f")],
        r"cannot import no_such_module_xyz",
    ),
    (
        "reward-unknown-type",
        lambda w: ["train", w.rl_config(None, rewards=[{"type": "maths"}])],
        r"unknown reward type 'maths'",
    ),
    (
        "reward-unknown-option",
        lambda w: ["train", w.rl_config(None, rewards=[{"type": "length", "max_char": 9}])],
        r"unknown option 'max_char' for reward type 'length'; did you mean 'max_chars'",
    ),
    (
        "math-reward-row-without-answer",
        lambda w: ["train", w.rl_config(None, rewards=[{"type": "math"}])],
        r"prompts\.jsonl:1: math reward: the dataset row has no 'answer' field",
    ),
    (
        "code-reward-row-without-tests",
        lambda w: ["train", w.rl_config(None, rewards=[{"type": "code"}])],
        r"prompts\.jsonl:1: code reward: the dataset row has no 'tests' field",
    ),
    ("rl-without-rewards", lambda w: ["train", w.rl_config(None)], r"grpo needs rewards"),
    (
        "rl-prompt-ends-with-reply",
        lambda w: [
            "train",
            w.rl_config(rows=[{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]),
        ],
        r"prompts\.jsonl:1: field 'messages' ends with an assistant turn",
    ),
]

MERGE = [
    (
        "merge-shapes-differ",
        lambda w: ["merge", w.merge_config(models=[w.tiny, w.wide]), "--out", str(w.out)],
        r"wide does not match .* \(6 differing tensors\):\n  model\.layers\.0\.mlp\.down_proj\.weight: shape \[64, 128\] vs \[64, 96\]",
    ),
    (
        "merge-layer-count-differs",
        lambda w: ["merge", w.merge_config(models=[w.tiny, w.deep]), "--out", str(w.out)],
        r"model\.layers\.2\.mlp\.down_proj\.weight: only in .*deep",
    ),
    (
        "merge-vocab-differs",
        lambda w: [
            "merge",
            w.merge_config("task_arithmetic", [w.wide_vocab], base_model=str(w.tiny)),
            "--out",
            str(w.out),
        ],
        r"model\.embed_tokens\.weight: shape \[\d+, 64\] vs \[\d+, 64\]",
    ),
    (
        "merge-architectures-differ",
        lambda w: ["merge", w.merge_config(models=[w.tiny, w.qwen]), "--out", str(w.out)],
        r"models differ in model_type: .* has 'llama', .* has 'qwen2'",
    ),
    (
        "merge-model-missing",
        lambda w: ["merge", w.merge_config(models=[w.tiny, w.tmp / "gone"]), "--out", str(w.out)],
        r"model folder not found: .*gone",
    ),
    (
        "merge-truncated-weights",
        lambda w: [
            "merge",
            w.merge_config(models=[w.tiny, w.broken(w.tiny, "model.safetensors", keep=0.5)]),
            "--out",
            str(w.out),
        ],
        r"cannot read .*m/model\.safetensors",
    ),
    (
        "merge-config-json-broken",
        lambda w: [
            "merge",
            w.merge_config(models=[w.tiny, w.broken(w.tiny, "config.json", text="{")]),
            "--out",
            str(w.out),
        ],
        r"m/config\.json is not valid JSON",
    ),
    (
        "merge-unknown-method",
        lambda w: ["merge", w.merge_config("average"), "--out", str(w.out)],
        r"unknown merge_method 'average'",
    ),
    (
        "merge-slerp-without-t",
        lambda w: ["merge", w.merge_config("slerp"), "--out", str(w.out)],
        r"slerp needs `parameters: \{t: \.\.\.\}`",
    ),
    (
        "merge-slerp-t-out-of-range",
        lambda w: ["merge", w.merge_config("slerp", parameters={"t": 2}), "--out", str(w.out)],
        r"slerp t must be a number in \[0, 1\], got 2",
    ),
    (
        "merge-nan-weight",
        lambda w: [
            "merge",
            w.merge_config(
                models=[{"model": str(w.tiny), "parameters": {"weight": float("nan")}}, {"model": str(w.tiny)}]
            ),
            "--out",
            str(w.out),
        ],
        r"models\[0\] .*parameters: weight is nan; merge parameters must be finite",
    ),
    (
        "merge-parameter-typo",
        lambda w: [
            "merge",
            w.merge_config("ties", [{"model": str(w.tiny), "parameters": {"densty": 0.5}}], base_model=str(w.tiny)),
            "--out",
            str(w.out),
        ],
        r"merge_method ties takes no parameter 'densty'",
    ),
    (
        "merge-bad-yaml",
        lambda w: ["merge", w.file("merge.yml", "merge_method: [linear\n"), "--out", str(w.out)],
        r"merge\.yml is not valid YAML",
    ),
]

MERGE_LORA_EXPORT = [
    (
        "merge-lora-other-base",
        lambda w: ["merge-lora", "--base", str(w.wide), "--adapter", str(w.adapter), "--out", str(w.out)],
        r"adapter .*adapter does not fit base model LlamaForCausalLM .*wide.*: \d+ tensors differ in shape, e\.g\. size mismatch for .*mlp",
    ),
    (
        "merge-lora-not-an-adapter",
        lambda w: ["merge-lora", "--base", str(w.tiny), "--adapter", str(w.tiny), "--out", str(w.out)],
        r"has no adapter_config\.json: not a LoRA adapter folder",
    ),
    (
        "merge-lora-corrupt-adapter",
        lambda w: [
            "merge-lora",
            "--base",
            str(w.tiny),
            "--adapter",
            w.broken(w.adapter, "adapter_model.safetensors", keep=0.3),
            "--out",
            str(w.out),
        ],
        r"m/adapter_model\.safetensors: not a readable safetensors file",
    ),
    (
        "merge-lora-adapter-config-broken",
        lambda w: [
            "merge-lora",
            "--base",
            str(w.tiny),
            "--adapter",
            w.broken(w.adapter, "adapter_config.json", text="{"),
            "--out",
            str(w.out),
        ],
        r"m/adapter_config\.json: not valid JSON",
    ),
    (
        "merge-lora-base-missing",
        lambda w: ["merge-lora", "--base", str(w.tmp / "gone"), "--adapter", str(w.adapter), "--out", str(w.out)],
        r"--base: no such file or folder: .*gone",
    ),
    (
        "merge-lora-no-arguments",
        lambda w: ["merge-lora", "--out", str(w.out)],
        r"merge-lora needs a training CONFIG\.yml, or all of",
    ),
    (
        "export-folder-without-config",
        lambda w: ["export", str(w.tmp), "--out", str(w.out / "m.gguf")],
        r"is not a Hugging Face model folder \(no config\.json\)",
    ),
    (
        "export-an-adapter",
        lambda w: ["export", str(w.adapter), "--out", str(w.out / "m.gguf")],
        r"adapter is a LoRA adapter, not a model: merge it",
    ),
    (
        "export-corrupt-weights",
        lambda w: ["export", w.broken(w.tiny, "model.safetensors", keep=0.5), "--out", str(w.out / "m.gguf")],
        r"m/model\.safetensors: not a readable safetensors file",
    ),
    (
        "export-config-broken",
        lambda w: ["export", w.broken(w.tiny, "config.json", text="{"), "--out", str(w.out / "m.gguf")],
        r"m/config\.json: not valid JSON",
    ),
    (
        "export-missing-folder",
        lambda w: ["export", str(w.tmp / "gone"), "--out", str(w.out / "m.gguf")],
        r"model folder .*gone does not exist",
    ),
    (
        "export-unknown-qtype",
        lambda w: ["export", str(w.tiny), "--gguf", "q9", "--out", str(w.out / "m.gguf")],
        r"export: argument --gguf: invalid choice: 'q9'",
    ),
]

OTHER_COMMANDS = [
    (
        "chat-negative-max-new-tokens",
        lambda w: ["chat", str(w.tiny), "--prompt", "hi", "--max-new-tokens", "-3"],
        r"chat: argument --max-new-tokens: must be in \[1, .*got -3",
    ),
    (
        "chat-negative-temperature",
        lambda w: ["chat", str(w.tiny), "--prompt", "hi", "--temperature", "-1"],
        r"chat: argument --temperature: must be in \[0",
    ),
    (
        "chat-model-missing",
        lambda w: ["chat", str(w.tmp / "gone"), "--prompt", "hi"],
        r"model: no such file or folder: .*gone",
    ),
    (
        "chat-adapter-on-other-base",
        lambda w: ["chat", w.broken(w.adapter, "strop_config.yml", text=f"base_model: {w.wide}\n"), "--prompt", "hi"],
        r"adapter .*/m does not fit base model",
    ),
    (
        "chat-adapter-config-yaml-broken",
        lambda w: ["chat", w.broken(w.adapter, "strop_config.yml", text="base_model: [\n"), "--prompt", "hi"],
        r"m/strop_config\.yml: not valid YAML",
    ),
    (
        "eval-data-missing",
        lambda w: ["eval", str(w.tiny), str(w.tmp / "gone.jsonl")],
        r"dataset file not found: .*gone\.jsonl",
    ),
    (
        "eval-type-without-replies",
        lambda w: ["eval", str(w.tiny), w.file("d.jsonl", w.rows(4)), "--type", "dpo"],
        r"eval: dataset type 'dpo' has no reference replies",
    ),
    (
        "eval-bad-row",
        lambda w: ["eval", str(w.tiny), w.file("d.jsonl", w.rows(4) + [[1]])],
        r"d\.jsonl:5: each line must be a JSON object",
    ),
    (
        "reward-score-not-a-reward-model",
        lambda w: ["reward-score", str(w.adapter), w.file("d.jsonl", [{"prompt": "p", "response": "r"}])],
        r"adapter: no reward_head\.safetensors",
    ),
    (
        "reward-score-row-without-response",
        lambda w: ["reward-score", str(w.adapter), w.file("d.jsonl", [{"prompt": "p"}])],
        r"d\.jsonl:1: each row needs 'prompt' \(string or messages\) and 'response'",
    ),
    (
        "reward-score-batch-size-zero",
        lambda w: ["reward-score", str(w.adapter), w.file("d.jsonl", w.rows(4)), "--batch-size", "0"],
        r"reward-score: argument --batch-size: must be in \[1",
    ),
    (
        "generate-bad-prompt-row",
        lambda w: ["generate", str(w.tiny), w.file("p.jsonl", [{"question": "?"}]), "--out", str(w.out / "g.jsonl")],
        r"p\.jsonl:1: expected a field 'prompt', 'instruction' or 'messages'",
    ),
    (
        "spectrum-fraction-above-one",
        lambda w: ["spectrum", str(w.tiny), "--top-fraction", "2"],
        r"spectrum: argument --top-fraction: must be in \(0, 1\]",
    ),
    ("estimate-config-typo", lambda w: ["estimate", w.config(lora_rr=4)], r"unknown key 'lora_rr'"),
    (
        "pipeline-stages-not-mappings",
        lambda w: ["pipeline", w.file("p.yml", "stages: [1, 2]\n")],
        r"p\.yml: invalid pipeline: stages\.0",
    ),
    (
        "pipeline-stage-config-missing",
        lambda w: ["pipeline", w.file("p.yml", "stages: [{name: sft, kind: train, config: gone.yml}]\n")],
        r"p\.yml: stage sft: config file not found: gone\.yml",
    ),
    ("pipeline-bad-yaml", lambda w: ["pipeline", w.file("p.yml", "stages: [\n")], r"p\.yml: not valid YAML"),
    ("unknown-command", lambda w: ["trian"], r"argument COMMAND: invalid choice: 'trian'"),
]

CASES = SFT_DATA + PREFERENCE_DATA + CONFIG + MODELS + STRATEGIES + REWARDS + MERGE + MERGE_LORA_EXPORT + OTHER_COMMANDS


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `strop ARGV` run in this process; argparse's exit counts too."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_there_are_enough_cases_and_unique_ids():
    ids = [case[0] for case in CASES]
    assert len(ids) >= 60 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("build, culprit", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_ends_in_one_clear_line(world, capsys, monkeypatch, build, culprit):
    monkeypatch.chdir(world.tmp)  # nothing may land in the repository, whatever a case gets wrong
    code, out, err = run_cli(build(world), capsys)
    assert code == 2, f"exit {code}\n{err[-3000:]}"
    assert "Traceback" not in err + out, err
    errors = [line for line in err.splitlines() if line.startswith("strop: error: ")]
    assert len(errors) == 1, err
    assert re.search(culprit, err[err.index("strop: error: ") :]), err
    assert not looks_complete(world.out), sorted(p.name for p in world.out.iterdir())
