"""Does logit distillation beat plain SFT for a smaller student? Measured on SmolLM2-135M-Instruct.

The student is a shallower copy of the teacher (every other decoder layer, initialised from the
teacher's weights). It is trained twice with the same steps and learning rate: once with plain SFT
(cross-entropy on the references) and once with `rl: distill` (α·CE + (1−α)·T²·KL to the teacher). The
figure is the token-level cross-entropy on held-out references.

Two data settings: `--data teacher` (default) has the teacher answer the quickstart prompts
(`strop generate`), so the references are what the teacher itself would say, the setting distillation is
for; `--data quickstart` uses the quickstart's fixed-format labels, which the teacher does not produce.

    python tools/measure_distill.py [--steps 20] [--data teacher|quickstart]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import yaml

from strop.config import load_config
from strop.models import load_model, load_tokenizer, resolve_model_path
from strop.objectives.sft import SFTObjective
from strop.train.command import quickstart_config
from strop.train.loop import train

EXAMPLES = quickstart_config().parent


def shallow_student(teacher: str, out: Path) -> Path:
    model = load_model(teacher)
    model.model.layers = torch.nn.ModuleList(list(model.model.layers)[::2])
    model.config.num_hidden_layers = len(model.model.layers)
    for index, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = index
    model.save_pretrained(out)
    load_tokenizer(teacher).save_pretrained(out)
    return out


@torch.no_grad()
def held_out_loss(model_dir: Path, config: Path, held_out: dict) -> float:
    cfg, base = load_config(config, [f"base_model={model_dir}", "val_set_size=0", f"datasets={json.dumps([held_out])}"])
    tokenizer = load_tokenizer(str(model_dir))
    objective = SFTObjective()
    rows, _, _ = objective.build_data(cfg, tokenizer, base)
    model = load_model(str(model_dir)).eval()
    batch = objective.collate(rows, tokenizer.pad_token_id)
    loss, _ = objective.loss(model, batch, objective.count(batch))
    return float(loss)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--data", choices=["teacher", "quickstart"], default="teacher")
    args = parser.parse_args()
    teacher = resolve_model_path("smollm2-135m-instruct")
    work = Path(tempfile.mkdtemp(prefix="strop-distill-"))
    student = shallow_student(teacher, work / "student")
    if args.data == "teacher":
        from strop.generate_data import generate_dataset

        train_set = {"path": str(generate_dataset(teacher, str(EXAMPLES / "train.jsonl"), str(work / "train.jsonl"), 48)), "type": "chat"}
        held_out = {"path": str(generate_dataset(teacher, str(EXAMPLES / "held_out.jsonl"), str(work / "held.jsonl"), 48)), "type": "chat"}
    else:
        train_set = {"path": str(EXAMPLES / "train.jsonl"), "type": "alpaca"}
        held_out = {"path": str(EXAMPLES / "held_out.jsonl"), "type": "alpaca"}
    common = {"base_model": str(student), "adapter": "full", "datasets": [train_set],
              "sequence_len": 192, "micro_batch_size": 8, "max_steps": args.steps, "learning_rate": 5e-5,
              "warmup_steps": 2, "bf16": False, "seed": 0}
    results = {"student before training": held_out_loss(student, _write(work / "base.yml", common), held_out)}
    runs = {"plain SFT": {}, "distilled (forward KL, alpha 0.5, T 2)": {
        "rl": "distill", "distill_teacher": teacher, "distill_alpha": 0.5, "distill_temperature": 2.0}}
    for name, extra in runs.items():
        config = _write(work / f"{len(results)}.yml", {**common, **extra, "output_dir": str(work / f"run{len(results)}")})
        cfg, base = load_config(config)
        out = train(cfg, base)
        results[name] = held_out_loss(out, config, held_out)
    results["teacher (30 layers)"] = held_out_loss(Path(teacher), _write(work / "t.yml", common), held_out)
    print(f"\nheld-out cross-entropy, data={args.data} ({args.steps} steps each):")
    for name, value in results.items():
        print(f"  {name:40s} {value:.4f}")


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


if __name__ == "__main__":
    main()
