"""Does logit distillation beat plain SFT for a smaller student? Measured on SmolLM2-135M-Instruct.

The student is a shallower copy of the teacher: 22 of its 30 decoder layers, initialised from the
teacher's weights, leaving out layers 4, 6, 9, 12, 17, 22, 25 and 26 (the ones whose removal costs the
least held-out loss; contiguous late blocks break the model). It is trained twice with identical init,
data, data order (seed), 45 steps (3 epochs of 120 rows, micro-batch 8), lr 2e-4 with cosine decay and
full fine-tuning: once with plain SFT (cross-entropy on the references) and once with `rl: distill`
(0.5·CE + 0.5·T²·forward KL to the teacher, T = 1). The only difference is the objective. The figure is
the token-level cross-entropy on held-out references, computed the same way for every model.

`--data teacher` (default) has the teacher answer the quickstart prompts greedily (`strop generate`, 48
new tokens): the training references are the teacher's answers to the 120 training prompts, the held-out
set its answers to the 24 held-out prompts; the setting distillation is for. `--data quickstart` uses the
quickstart's fixed-format labels instead, which the teacher does not produce. The teacher's answers and
the student are cached under `--work`.

Measured (1 CPU thread, about 9 min for SFT and 13 min for distillation):

    student before training            3.090
    plain SFT, seed 0                  1.596      seed 1  1.599
    distilled, seed 0                  1.390      seed 1  1.392
    teacher (30 layers)                1.172

    OMP_NUM_THREADS=1 python tools/measure_distill.py [--seed 0 1] [--steps 45] [--lr 2e-4]
        [--drop 4,6,9,12,17,22,25,26] [--alpha 0.5] [--temperature 1] [--data teacher|quickstart]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from strop.commands.train import quickstart_config
from strop.config import load_config
from strop.models import load_model, load_tokenizer, resolve_model_path
from strop.objectives.sft import SFTObjective
from strop.train.loop import train

EXAMPLES = quickstart_config().parent


def parse_layers(spec: str) -> list[int]:
    """ "18-25" or "9,11,13" or "18-21,24" -> sorted layer indices."""
    out: set[int] = set()
    for part in filter(None, spec.split(",")):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return sorted(out)


def shallow_student(teacher: str, drop: list[int], out: Path) -> Path:
    if (out / "config.json").exists():
        return out
    model = load_model(teacher)
    model.model.layers = torch.nn.ModuleList([layer for i, layer in enumerate(model.model.layers) if i not in drop])
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
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=45)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument(
        "--drop", default="4,6,9,12,17,22,25,26", help="teacher layers the student leaves out, e.g. 4,6,20-23"
    )
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, nargs="+", default=[0])
    parser.add_argument("--data", choices=["teacher", "quickstart"], default="teacher")
    parser.add_argument("--arms", default="base,sft,distill,teacher", help="which of these to measure")
    parser.add_argument("--work", default="/tmp/strop-distill", help="cache for the teacher's answers and the student")
    args = parser.parse_args()
    arms = args.arms.split(",")
    teacher = resolve_model_path("smollm2-135m-instruct")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    drop = parse_layers(args.drop)
    student = shallow_student(teacher, drop, work / f"student-drop{args.drop}")
    if args.data == "teacher":
        from strop.datagen.distill import generate_dataset

        def answers(name: str) -> str:
            path = work / f"{name}.teacher.jsonl"
            return str(
                path if path.exists() else generate_dataset(teacher, str(EXAMPLES / f"{name}.jsonl"), str(path), 48)
            )

        train_set, held_out = ({"path": answers(n), "type": "chat"} for n in ("train", "held_out"))
    else:
        train_set = {"path": str(EXAMPLES / "train.jsonl"), "type": "alpaca"}
        held_out = {"path": str(EXAMPLES / "held_out.jsonl"), "type": "alpaca"}
    common = {
        "base_model": str(student),
        "adapter": "full",
        "datasets": [train_set],
        "sequence_len": 192,
        "micro_batch_size": 8,
        "max_steps": args.steps,
        "learning_rate": args.lr,
        "warmup_steps": max(2, args.steps // 20),
        "lr_scheduler": "cosine",
        "bf16": False,
    }
    results: dict[str, float] = {}
    times: dict[str, float] = {}
    if "base" in arms:
        results["student before training"] = held_out_loss(
            student, _write(work / "base.yml", {**common, "seed": 0}), held_out
        )
    objectives = {
        "sft": ("plain SFT", {}),
        "distill": (
            f"distilled (fwd KL, a {args.alpha}, T {args.temperature})",
            {
                "rl": "distill",
                "distill_teacher": teacher,
                "distill_alpha": args.alpha,
                "distill_temperature": args.temperature,
            },
        ),
    }
    for seed in args.seed:
        for key, (name, extra) in objectives.items():
            if key not in arms:
                continue
            tag = f"{key}-s{seed}"
            config = _write(
                work / f"{tag}.yml", {**common, **extra, "seed": seed, "output_dir": str(work / f"run-{tag}")}
            )
            cfg, base = load_config(config)
            started = time.perf_counter()
            out = train(cfg, base, overwrite=True)
            times[f"{name} seed {seed}"] = time.perf_counter() - started
            results[f"{name} seed {seed}"] = held_out_loss(out, config, held_out)
    if "teacher" in arms:
        results["teacher (30 layers)"] = held_out_loss(
            Path(teacher), _write(work / "t.yml", {**common, "seed": 0}), held_out
        )
    print(
        f"\nheld-out cross-entropy, data={args.data}, student drops layers {args.drop} "
        f"({30 - len(drop)} of 30), {args.steps} steps at lr {args.lr} each:"
    )
    for name, value in results.items():
        extra = f"   ({times[name]:.0f} s)" if name in times else ""
        print(f"  {name:48s} {value:.4f}{extra}")


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


if __name__ == "__main__":
    main()
