"""The reward module the GRPO config (qwen2.5--grpo-docs.yml, from Axolotl's docs/grpo.qmd) names: the
functions it lists, written for this test in TRL's calling convention."""

import re


def accuracy_reward(completions, answer, **kwargs):
    """1 when the last number of the completion is the row's answer."""
    scores = []
    for completion, expected in zip(completions, answer):
        numbers = re.findall(r"-?\d+", completion[0]["content"])
        scores.append(1.0 if numbers and numbers[-1] == str(expected) else 0.0)
    return scores


def format_reward(completions, **kwargs):
    """1 when the completion has <think> and <answer> blocks."""
    return [1.0 if "<think>" in c[0]["content"] and "<answer>" in c[0]["content"] else 0.0 for c in completions]


def prompt_transform(cfg, *args, **kwargs):
    """GSM8K rows {question, answer: "... #### 42"} as chat prompts with the bare answer."""

    def transform_fn(example, tokenizer=None):
        return {
            "prompt": [
                {"role": "system", "content": "Think in <think>, answer in <answer>."},
                {"role": "user", "content": example["question"]},
            ],
            "answer": example["answer"].split("####")[-1].strip(),
        }

    return transform_fn, {"remove_columns": ["question"]}
