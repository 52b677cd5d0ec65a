"""Chat templates by the names Axolotl gives them (`chat_template: llama3`), for a base model whose
tokenizer has none or a different one.

Each is the published prompt format of its family, written as a Jinja template that renders every
prefix of a conversation as a prefix of the whole (tokenize.py locates replies that way):

- chatml: `<|im_start|>role\\n...<|im_end|>\\n` (OpenAI's ChatML);
- qwen_25: ChatML with Qwen2.5's default system prompt when the conversation has none;
- qwen3: ChatML (Qwen3's thinking blocks are the data's own text);
- llama3: `<|start_header_id|>role<|end_header_id|>\\n\\n...<|eot_id|>` after `<|begin_of_text|>`;
- gemma, gemma3: `<start_of_turn>user|model\\n...<end_of_turn>\\n` after `<bos>`; Gemma has no system
  role, so a system message opens the first user turn (its text, a blank line, then the user's);
- phi_3: `<|user|>\\n...<|end|>\\n`, `<|assistant|>\\n...<|end|>\\n` (and `<|system|>`).

`tokenizer_default` (or no value) keeps the tokenizer's own template.
"""

from __future__ import annotations

_CHATML_TURNS = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_GEMMA = (
    "{{ '<bos>' }}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<start_of_turn>user\n' + message['content'] + '\n\n' }}{% else %}"
    "{% if not (loop.index0 > 0 and message['role'] == 'user' and messages[loop.index0 - 1]['role'] == 'system') %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n' }}{% endif %}"
    "{{ message['content'] + '<end_of_turn>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
_QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

NAMED_TEMPLATES: dict[str, str] = {
    "chatml": _CHATML_TURNS,
    "qwen_25": (
        "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n" + _QWEN_SYSTEM + "<|im_end|>\n' }}"
        "{% endif %}" + _CHATML_TURNS
    ),
    "qwen3": _CHATML_TURNS,
    "llama3": (
        "{{ '<|begin_of_text|>' }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
        "'<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
    "gemma": _GEMMA,
    "gemma3": _GEMMA,
    "phi_3": (
        "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    ),
}
