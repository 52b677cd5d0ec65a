"""MoE training speed: transformers' expert implementations, forward only and as strop's training step.

For a Mixtral-shaped and a Qwen3-MoE-shaped model (random weights, real widths and expert counts, depth
cut to fit one GPU), prints tokens/s of

    forward     the model's forward under each `experts_implementation` transformers offers
                (eager: a Python loop over the experts hit; grouped_mm: one grouped matmul, torch._grouped_mm,
                for all experts; batched_mm: gathered per-token expert weights)
    train step  strop's step: forward, router load-balancing + z-loss over real tokens (strop/moe/monitor.py),
                backward, AdamW; LoRA r16 on attention and every routed expert (strop/moe/adapters.py:
                PEFT target_parameters on the fused 3-D expert weights)

transformers 5.x already defaults to grouped_mm where the device supports it, so strop writes no expert
kernel of its own: this table is the evidence either way. On the H200:

    PYTHONPATH=src python bench/moe_speed.py

CPU smoke (tiny shapes, one timed step; what tests/moe/test_moe_bench.py runs):

    PYTHONPATH=src python bench/moe_speed.py --smoke
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch

SHAPES = {  # widths of the released models; depth reduced
    "mixtral-8x7b (2 layers)": (
        "mixtral",
        dict(
            hidden_size=4096,
            intermediate_size=14336,
            num_local_experts=8,
            num_experts_per_tok=2,
            num_attention_heads=32,
            num_key_value_heads=8,
            num_hidden_layers=2,
            vocab_size=32000,
        ),
    ),
    "qwen3-30b-a3b (4 layers)": (
        "qwen3_moe",
        dict(
            hidden_size=2048,
            intermediate_size=6144,
            moe_intermediate_size=768,
            num_experts=128,
            num_experts_per_tok=8,
            num_attention_heads=32,
            num_key_value_heads=4,
            head_dim=128,
            num_hidden_layers=4,
            vocab_size=151936,
        ),
    ),
}
SMOKE = {
    name: (
        family,
        {
            **dims,
            "hidden_size": 64,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": 256,
            "num_hidden_layers": 1,
            **({"head_dim": 16} if "head_dim" in dims else {}),
            **{k: 4 for k in ("num_local_experts", "num_experts") if k in dims},
            "num_experts_per_tok": 2,
            **{k: 32 for k in ("intermediate_size", "moe_intermediate_size") if k in dims},
        },
    )
    for name, (family, dims) in SHAPES.items()
}
IMPLEMENTATIONS = ("eager", "batched_mm", "grouped_mm")


def build(family: str, dims: dict, implementation: str, device: torch.device, dtype: torch.dtype):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(family, **dims)
    config._experts_implementation = implementation
    torch.manual_seed(0)
    with device:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model


def timed(fn, warm: int, steps: int, device: torch.device) -> float:
    for _ in range(warm):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def forward_fn(model, ids):
    model.eval()
    return torch.no_grad()(lambda: model(input_ids=ids))


def train_step_fn(model, ids):
    """strop's MoE step on `model`: LoRA on attention + every expert, router losses, AdamW."""
    from peft import LoraConfig, get_peft_model

    from strop.moe import monitor as moe_monitor
    from strop.moe.adapters import lora_selection

    modules, parameters, _ = lora_selection(model, ["attention", "experts"])
    peft_model = get_peft_model(
        model, LoraConfig(r=16, lora_alpha=32, target_modules=modules, target_parameters=parameters)
    )
    router = moe_monitor.attach(
        model, SimpleNamespace(moe_aux_loss_coef=None, moe_z_loss_coef=None, moe_entropy_warning=0.0)
    )
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-5)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def step():
        with router.recording(batch):
            logits = peft_model(**batch).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
        loss = loss + router.take(1.0)[0]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        router.finish_step(lambda *a: None)

    return step


def measure(shapes: dict, batch: int, seq: int, warm: int, steps: int, device: torch.device, dtype) -> list[tuple]:
    rows = []
    for name, (family, dims) in shapes.items():
        ids = torch.randint(0, dims["vocab_size"], (batch, seq), device=device)
        for implementation in IMPLEMENTATIONS:
            for mode in ("forward", "train step"):
                model = fn = None
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                try:
                    model = build(family, dims, implementation, device, dtype)
                    fn = forward_fn(model, ids) if mode == "forward" else train_step_fn(model, ids)
                    seconds = timed(fn, warm, steps, device)
                    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
                    rows.append((name, implementation, mode, batch * seq / seconds, peak))
                except (RuntimeError, NotImplementedError, ValueError, KeyError) as err:  # e.g. an older transformers
                    rows.append((name, implementation, mode, float("nan"), float("nan")))
                    print(f"{name} {implementation} {mode}: {type(err).__name__}: {str(err)[:120]}")
                model = fn = None
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> list[tuple]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, one step (a test runs this)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=2048)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        rows = measure(SMOKE, 2, 16, 0, 1, device, torch.float32)
    else:
        rows = measure(SHAPES, args.batch, args.seq, 2, 5, device, torch.bfloat16)
    print(f"\n{'model':28} {'experts':11} {'mode':11} {'tokens/s':>10} {'peak GiB':>9}")
    for name, implementation, mode, rate, peak in rows:
        print(f"{name:28} {implementation:11} {mode:11} {rate:10.0f} {peak:9.2f}")
    return rows


if __name__ == "__main__":
    main()
