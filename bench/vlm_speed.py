"""VLM fine-tuning speed: a Qwen2-VL-shaped model with random weights, LoRA on the language model with the
vision tower frozen, (hf) transformers + PEFT against (strop) strop's LoRA strategy and vision SFT loss
(kernels on, and off), images of several sizes, in one run. Prints a table; not a test.

    PYTHONPATH=src python bench/vlm_speed.py                  # 2B shape, images 224/448/896 px, on the GPU
    PYTHONPATH=src python bench/vlm_speed.py --size 7b
    PYTHONPATH=src python bench/vlm_speed.py --smoke          # tiny shape on the CPU, one timed step

Work: micro-batches of 4 rows, each one image of S×S pixels (Qwen2-VL: (S/14)² patches merged 2×2 into
(S/28)² image tokens) and 256 text tokens of which the last 64 are the reply; LoRA r=16, alpha 32 on
q,k,v,o,gate,up,down of the language model only; vision tower frozen, projector (merger) frozen too so
the two stacks train the same weights; bf16 autocast, bf16 frozen weights, gradient checkpointing; AdamW
lr 1e-4. 2 warm-up steps, then the median of 5 timed steps. tokens/s counts every real token of a step,
image tokens included. Each row runs in its own process, so peak memory (torch.cuda.max_memory_allocated,
weights included) is its own. Random weights: throughput does not depend on the values.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import subprocess
import sys
import time

import torch

SHAPES = {  # Qwen2-VL-2B and -7B language models; both use the same 675M vision tower
    "2b": dict(hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960, vocab=151936),
    "7b": dict(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vocab=152064),
    "tiny": dict(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=400),
}
VISION = {
    "full": dict(vision_width=1280, vision_depth=32, vision_heads=16, mlp_ratio=4),
    "tiny": dict(vision_width=32, vision_depth=2, vision_heads=2, mlp_ratio=2),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TOKEN_IDS = {
    "eos": 2,
    "pad": 0,
    "bos": 1,
    "image_token_id": 3,
    "video_token_id": 4,
    "vision_start_token_id": 5,
    "vision_end_token_id": 6,
}
TEXT, REPLY, BATCH, WARM, STEPS = 256, 64, 4, 2, 5


def build_model(size: str, device: torch.device):
    from transformers import AutoModelForImageTextToText

    from strop.vlm.tiny import qwen2_vl_config

    config = qwen2_vl_config(TOKEN_IDS, **SHAPES[size], **VISION["tiny" if size == "tiny" else "full"])
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with device:
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model


def make_row(image_size: int, vocab: int, seed: int) -> dict:
    """One row as strop's vision data path lays it out (strop/vlm/data.py)."""
    gen = torch.Generator().manual_seed(seed)
    grid = image_size // 14
    image_tokens = grid * grid // 4
    text = torch.randint(10, vocab, (TEXT,), generator=gen).tolist()
    ids = [
        TOKEN_IDS["vision_start_token_id"],
        *[TOKEN_IDS["image_token_id"]] * image_tokens,
        TOKEN_IDS["vision_end_token_id"],
        *text,
    ]
    labels = [-100] * (len(ids) - REPLY) + ids[-REPLY:]
    return {
        "input_ids": ids,
        "labels": labels,
        "vision.pixel_values": torch.randn(grid * grid, 3 * 2 * 14 * 14, generator=gen),
        "vision.image_grid_thw": torch.tensor([[1, grid, grid]]),
        "vision_tokens.mm_token_type_ids": [int(t == TOKEN_IDS["image_token_id"]) for t in ids],
    }


def strop_config(kernels: bool):
    from strop.config import config_class

    return config_class().model_validate(
        {
            "base_model": "random-qwen2-vl",
            "adapter": "lora",
            "lora_r": 16,
            "lora_alpha": 32,
            "lora_target_modules": TARGETS,
            "datasets": [{"path": "bench.jsonl", "type": "vision_chat"}],
            "gradient_checkpointing": True,
            "bf16": True,
            "kernels": kernels,
            "learning_rate": 1e-4,
        }
    )


def prepare(stack: str, size: str, device: torch.device):
    """(model, loss function of a batch) for a stack: hf, strop or strop-nokernels."""
    from strop.vlm.models import set_trainable_parts

    model = build_model(size, device)
    if stack == "hf":
        from peft import LoraConfig, get_peft_model

        pattern = r".*language_model.*\.(" + "|".join(TARGETS) + ")"
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=pattern, task_type="CAUSAL_LM"))
        model.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

        def hf_loss(batch):
            inputs = {k.removeprefix("vision."): v for k, v in batch.items()}
            return model(**inputs).loss

        set_trainable_parts(model, freeze_vision=True, projector_only=False)
        return model, hf_loss
    from strop.objectives import get_objective
    from strop.strategies import get_strategy

    cfg = strop_config(stack == "strop")
    strategy, objective = get_strategy("lora"), get_objective("vision_sft")
    model = strategy.apply(model, cfg)
    strategy.upcast(model, cfg)
    strategy.base_model(model).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    set_trainable_parts(model, freeze_vision=True, projector_only=False)

    def strop_loss(batch):
        return objective.loss(model, batch, objective.count(batch))[0]

    return model, strop_loss


def strop_base(model):
    """The transformers model under a PEFT wrapper."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def run_one(stack: str, size: str, image_size: int, steps: int, warm: int) -> dict:
    from strop.data.packing import real_tokens
    from strop.objectives import get_objective

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, loss_of = prepare(stack, size, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    collate = get_objective("vision_sft").collate
    rows = [make_row(image_size, SHAPES[size]["vocab"], seed) for seed in range(BATCH)]
    batch = {k: v.to(device) for k, v in collate(rows, TOKEN_IDS["pad"]).items()}
    if "mm_token_type_ids" not in inspect.signature(type(strop_base(model)).forward).parameters:
        del batch["vision.mm_token_type_ids"]  # transformers before it existed computes M-RoPE without it
    tokens = real_tokens(batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, losses = [], []
    for step in range(warm + steps):
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_of(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss))  # waits for the device
        if step >= warm:
            times.append(time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    step_s = statistics.median(times)
    return {
        "stack": stack,
        "size": size,
        "image": image_size,
        "tokens": tokens,
        "step_s": step_s,
        "tokens_per_s": tokens / step_s,
        "peak_gib": peak,
        "loss": losses[0],
    }


def run_rows(stacks: list[str], size: str, images: list[int], steps: int, warm: int) -> list[dict]:
    """Every (image size, stack) in its own process; a row that fails says why in the table."""
    results = []
    for image in images:
        for stack in stacks:
            command = [
                sys.executable,
                __file__,
                "--one",
                stack,
                "--size",
                size,
                "--images",
                str(image),
                "--steps",
                str(steps),
                "--warm",
                str(warm),
            ]
            done = subprocess.run(command, capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            if done.returncode or not lines:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                results.append({"stack": stack, "size": size, "image": image, "error": tail})
            else:
                results.append(json.loads(lines[-1]))
    return results


def table(results: list[dict]) -> str:
    out = [
        "| image px | stack | tokens/step | step s | tokens/s | × hf | peak GiB | first loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = {r["image"]: r["tokens_per_s"] for r in results if r["stack"] == "hf" and "error" not in r}
    for r in results:
        if "error" in r:
            out.append(f"| {r['image']} | {r['stack']} | failed: {r['error'][:80]} | | | | | |")
            continue
        ratio = f"{r['tokens_per_s'] / base[r['image']]:.2f}" if r["image"] in base else "-"
        out.append(
            f"| {r['image']} | {r['stack']} | {r['tokens']} | {r['step_s']:.3f} | {r['tokens_per_s']:,.0f} | "
            f"{ratio} | {r['peak_gib']:.2f} | {r['loss']:.4f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="2b", choices=sorted(SHAPES))
    parser.add_argument("--images", default="224,448,896", help="comma-separated image sides in pixels")
    parser.add_argument("--stacks", default="hf,strop,strop-nokernels")
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--warm", type=int, default=WARM)
    parser.add_argument("--smoke", action="store_true", help="tiny shape, images 56/112, one timed step (CPU)")
    parser.add_argument("--one", help="run one stack in this process and print its JSON line")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.images, args.steps, args.warm = "tiny", "56,112", 1, 1
    images = [int(i) for i in args.images.split(",")]
    if args.one:
        print(json.dumps(run_one(args.one, args.size, images[0], args.steps, args.warm)))
        return 0
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(
        f"Qwen2-VL-shaped {args.size}, random weights, LoRA r16 on the language model, batch {BATCH}, "
        f"{TEXT} text tokens a row, on {device}"
    )
    print(table(run_rows(args.stacks.split(","), args.size, images, args.steps, args.warm)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
