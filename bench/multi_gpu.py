"""Multi-GPU scaling of strop's own training step: 1 GPU (plain single process) vs N GPUs (FSDP2 under
torchrun), the same per-GPU batch, random weights of real architectures (throughput does not depend on
the values), bf16, sequence 2048.

    python bench/multi_gpu.py --nproc 2                      # every case, 1 GPU then 2 GPUs; prints the table
    python bench/multi_gpu.py --case llama8b-lora            # one case on one GPU
    torchrun --nproc-per-node 2 bench/multi_gpu.py --case llama8b-lora

Cases: llama8b-lora (Llama-3.1-8B architecture, LoRA r16 on all linear layers, frozen bf16 base) and
llama1b-full (Llama-3.2-1B architecture, full fine-tuning, fp32 master weights). Each worker builds the
model on its GPU, lets strop's strategy, `distributed.wrap` and optimizer prepare it, then times
`strop.train.loop.train_step` (the loop's own step: data sharding, all-reduced denominator, clipping,
AdamW). Peak memory is torch's max_memory_allocated over the timed steps, the largest over the GPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

ARCH = {
    "llama8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        rope_theta=500000.0,
        max_position_embeddings=8192,
        tie_word_embeddings=False,
    ),
    "llama1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        vocab_size=128256,
        rope_theta=500000.0,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=300,
    ),  # smoke test of this script on the CPU
}
CASES = {
    "llama8b-lora": dict(arch="llama8b", adapter="lora", base_dtype="bfloat16"),
    "llama1b-full": dict(arch="llama1b", adapter="full", base_dtype="float32"),
}
SMOKE = {"tiny-lora": dict(arch="tiny", adapter="lora", base_dtype="bfloat16")}


def _config(case: dict, args):
    from strop.config import config_class

    raw = {
        "base_model": "random",
        "datasets": [{"path": "unused.jsonl", "type": "text"}],
        "adapter": case["adapter"],
        "sequence_len": args.seq,
        "micro_batch_size": args.micro_batch,
        "max_steps": args.warmup + args.steps,
        "bf16": True,
        "gradient_checkpointing": True,
        "learning_rate": 1e-5,
        "fsdp": {"sharding": args.sharding},
        "kernels": False,
    }  # FSDP2 runs keep the library path, so the 1-GPU case does too: same work scaled
    if case["adapter"] == "lora":
        raw |= {"lora_r": 16, "lora_alpha": 32, "lora_target_modules": "all-linear"}
    return config_class().model_validate(raw)


def _rows(n: int, seq: int, vocab: int, seed: int) -> list[dict]:
    import torch

    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        ids = torch.randint(0, vocab, (seq,), generator=gen).tolist()
        rows.append({"input_ids": ids, "labels": ids})
    return rows


def worker(args) -> dict:
    """One process of one case: build, wrap, time train_step; rank 0 returns the figures."""
    import torch
    import torch.distributed as dist
    from transformers import LlamaConfig, LlamaForCausalLM

    from strop.objectives import objective_for
    from strop.runtime import distributed
    from strop.runtime.precision import autocast_dtype
    from strop.strategies import get_strategy
    from strop.train.loop import Run, train_step

    case = {**CASES, **SMOKE}[args.case]
    device = distributed.init()
    cfg = _config(case, args)
    strategy, objective = get_strategy(cfg.strategy), objective_for(cfg)
    torch.manual_seed(0)
    arch = LlamaConfig(**ARCH[case["arch"]])
    with torch.device(device):
        model = LlamaForCausalLM._from_config(arch, dtype=getattr(torch, case["base_dtype"]))
    model.config.use_cache = False
    model = strategy.apply(model, cfg)
    strategy.upcast(model, cfg)
    strategy.base_model(model).gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    amp = autocast_dtype(cfg, device)
    if distributed.active():
        model = distributed.wrap(model, cfg, device, amp)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
    optimizer = strategy.build_optimizer(model, cfg, device)
    n_rows = (args.warmup + args.steps) * cfg.micro_batch_size * distributed.world_size()
    run = Run(
        cfg,
        model,
        SimpleNamespace(pad_token_id=0),
        strategy,
        objective,
        _rows(n_rows, args.seq, arch.vocab_size, 1),
        [],
        [],
        device,
        "random",
    )
    model.train()
    for step in range(args.warmup):
        train_step(run, step, optimizer, None, amp)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    distributed.barrier()
    started, tokens = time.perf_counter(), 0
    for step in range(args.warmup, args.warmup + args.steps):
        tokens += train_step(run, step, optimizer, None, amp)["tokens"]
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    peak = torch.tensor([torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0], device=device)
    if distributed.active():
        dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    trainable, total = strategy.count_parameters(model)
    return {
        "case": args.case,
        "gpus": distributed.world_size(),
        "tokens_per_s": tokens / elapsed,
        "peak_gib_per_gpu": float(peak),
        "step_s": elapsed / args.steps,
        "tokens_per_step": tokens / args.steps,
        "sharding": args.sharding if distributed.active() else "-",
        "trainable_params": trainable,
    }


def _run_case(case: str, nproc: int, args) -> dict | None:
    out = Path(args.out) / f"{case}-{nproc}.json"
    common = [
        "--case",
        case,
        "--seq",
        str(args.seq),
        "--micro-batch",
        str(args.micro_batch),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--sharding",
        args.sharding,
        "--result",
        str(out),
    ]
    if nproc == 1:
        command = [sys.executable, __file__, *common]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            __file__,
            *common,
        ]
    print("$ " + " ".join(command[1:]), flush=True)
    code = subprocess.call(command)
    if code != 0 or not out.is_file():
        print(f"{case} on {nproc} GPU(s) failed (exit {code})", flush=True)
        return None
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--case", choices=sorted({**CASES, **SMOKE}), help="run one case in this process (or under torchrun)"
    )
    parser.add_argument("--cases", default=",".join(CASES), help="cases for the full comparison")
    parser.add_argument("--nproc", type=int, default=2, help="GPUs to compare against one")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=2, help="rows per GPU per step (2 × 2048 = 4096 tokens)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sharding", default="full_shard", choices=["full_shard", "shard_grad_op", "no_shard"])
    parser.add_argument("--result", help="(worker) where rank 0 writes its figures")
    parser.add_argument("--out", default=os.environ.get("OUT", "bench-out"), help="folder for per-case results")
    args = parser.parse_args()
    if args.case:
        result = worker(args)
        from strop.runtime import distributed

        if distributed.is_main():
            print(json.dumps(result), flush=True)
            if args.result:
                Path(args.result).write_text(json.dumps(result))
        distributed.teardown()
        return
    Path(args.out).mkdir(parents=True, exist_ok=True)
    rows = []
    for case in args.cases.split(","):
        one, many = _run_case(case, 1, args), _run_case(case, args.nproc, args)
        rows.append((case, one, many))
    print("\n| case | GPUs | tokens/s (all GPUs) | peak GiB per GPU | speed-up vs 1 GPU |")
    print("|---|---|---|---|---|")
    for case, one, many in rows:
        for result in (one, many):
            if result is None:
                continue
            speedup = f"{result['tokens_per_s'] / one['tokens_per_s']:.2f}x" if one else "-"
            print(
                f"| {case} | {result['gpus']} | {result['tokens_per_s']:,.0f} | {result['peak_gib_per_gpu']:.1f} | {speedup} |"
            )
    Path(args.out, "summary.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
