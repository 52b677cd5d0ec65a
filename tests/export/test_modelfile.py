"""Ollama Modelfile content: family recognition, default SYSTEM, stops, parameters, FROM path."""

from __future__ import annotations

from pathlib import Path

import pytest

from strop.export.modelfile import detect_family, modelfile_text, write_modelfile

SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Qwen2.5 style: escaped newlines inside the Jinja string literals
QWEN_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}{%- for message in messages %}{%- if message.role != 'system' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
PLAIN_CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}"
)


def test_smollm2_template_becomes_chatml_with_default_system(tmp_path: Path) -> None:
    gguf = tmp_path / "smol-q4_k_m.gguf"
    gguf.write_bytes(b"")
    path = write_modelfile(
        gguf, SMOLLM2_TEMPLATE, tmp_path / "Modelfile", ["<|im_end|>"], {"temperature": 0.2, "num_ctx": 2048}
    )
    text = path.read_text()
    assert text.splitlines()[1] == "FROM ./smol-q4_k_m.gguf"
    assert 'TEMPLATE """' in text and "<|im_start|>assistant\n{{ end }}" in text
    assert "{{- range $i, $_ := .Messages }}" in text
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in text
    assert text.count('PARAMETER stop "<|im_end|>"') == 1  # family stop and explicit stop deduplicated
    assert 'PARAMETER stop "<|im_start|>"' in text
    assert "PARAMETER temperature 0.2" in text and "PARAMETER num_ctx 2048" in text
    assert not (tmp_path / "Modelfile.tmp").exists()


def test_qwen_style_escaped_newlines_give_its_default_system() -> None:
    text = modelfile_text("./q.gguf", QWEN_TEMPLATE)
    assert "# Chat format: chatml" in text
    assert 'SYSTEM """You are Qwen, created by Alibaba Cloud. You are a helpful assistant."""' in text


def test_chatml_without_injected_system_has_no_system_line() -> None:
    text = modelfile_text("./m.gguf", PLAIN_CHATML)
    assert "# Chat format: chatml" in text and "\nSYSTEM " not in text


def test_llama3_template() -> None:
    text = modelfile_text("./m.gguf", LLAMA3_TEMPLATE, params={"top_p": 0.9})
    assert detect_family(LLAMA3_TEMPLATE).name == "llama3"
    assert "<|start_header_id|>{{ .Role }}<|end_header_id|>" in text
    for stop in ("<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"):
        assert f'PARAMETER stop "{stop}"' in text
    assert "PARAMETER top_p 0.9" in text and "\nSYSTEM " not in text


def test_mistral_template() -> None:
    text = modelfile_text("./m.gguf", MISTRAL_TEMPLATE, system="Be brief.")
    assert "# Chat format: mistral" in text and "[INST] {{ if and $.System $last }}" in text
    assert 'PARAMETER stop "[INST]"' in text and 'SYSTEM """Be brief."""' in text


def test_unknown_template_falls_back_with_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    text = modelfile_text("./m.gguf", "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    assert "WARNING: unrecognised chat template" in text and "{{ .Prompt }}" in text
    assert "not one strop can translate" in capsys.readouterr().err
    assert "{{ .Prompt }}" in modelfile_text("./m.gguf", None)


def test_from_path_is_relative_to_the_modelfile(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    path = write_modelfile(tmp_path / "models" / "m.gguf", PLAIN_CHATML, tmp_path / "ollama" / "Modelfile")
    assert "FROM ../models/m.gguf" in path.read_text()


def test_booleans_and_strings_in_parameters() -> None:
    text = modelfile_text("./m.gguf", PLAIN_CHATML, params={"use_mmap": False, "stop_words": "a b"})
    assert "PARAMETER use_mmap false" in text and 'PARAMETER stop_words "a b"' in text
