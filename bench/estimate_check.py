"""`strop estimate` next to measured peak GPU memory, per strategy, on a random-weight Llama-3.2-1B
architecture (hidden 2048, 16 layers, MLP 8192, 32 heads, 8 KV heads, vocab 128256, tied embeddings).
Not a test (needs a GPU): run

    python bench/estimate_check.py [strategy ...]        # default: full lora qlora dora

The model is saved once (bf16 safetensors, with a tiny local byte-level BPE tokenizer, so no hub access)
under $ESTIMATE_CHECK_DIR (default /tmp/estimate_check). Each strategy runs in its own process: it
builds a strop config (micro_batch_size 4, sequence_len 512, bf16, no gradient checkpointing, LoRA r=16
all-linear, a synthetic alpaca JSONL whose rows are all truncated to 512 tokens, so every micro-batch is
the estimate's worst case of 4 × 512 tokens), takes the estimate from `strop.train.estimate.estimates_for`,
then trains 3 steps through `strop.train.loop.train` and reads torch.cuda.max_memory_allocated. The final
artifact save is skipped (patched to a no-op): it costs time, not GPU memory.

ESTIMATE_CHECK_TINY=1 swaps in a tiny model (hidden 64, 2 layers) to check this script's logic on the CPU;
there the measured column is peak RSS (ru_maxrss), which includes the process's own overhead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

TINY = os.environ.get("ESTIMATE_CHECK_TINY") == "1"
WORK = Path(os.environ.get("ESTIMATE_CHECK_DIR", "/tmp/estimate_check"))
STEPS, BATCH, SEQ = 3, 4, 512
GIB = 1024**3
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
ARCH = (
    dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=320,
    )
    if TINY
    else dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
    )
)
MARK = "ESTIMATE_CHECK_RESULT "


def build(folder: Path) -> None:
    """Tokenizer + random-weight model in bf16 safetensors (built on the GPU when there is one)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["The quick brown fox jumps over the lazy dog.", "Summarise the passage below."], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    fast.chat_template = CHATML
    fast.save_pretrained(folder)
    config = LlamaConfig(
        **ARCH,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        head_dim=None,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
    )
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder, safe_serialization=True)
    print(f"built {sum(p.numel() for p in model.parameters()):,} parameters in {folder}", flush=True)


def write_data(path: Path) -> None:
    """64 alpaca rows, each well over 512 tokens under the byte-level tokenizer (truncated to 512)."""
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november".split()
    rows = []
    for i in range(64):
        body = " ".join(words[(i + j) % len(words)] + str(j % 10) for j in range(180))
        rows.append({"instruction": f"Summarise passage {i}.", "input": "", "output": body})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def config_dict(strategy: str, model: Path, data: Path, out: Path) -> dict:
    cfg = {
        "base_model": str(model),
        "adapter": strategy,
        "datasets": [{"path": str(data), "type": "alpaca"}],
        "sequence_len": SEQ,
        "excess_length_strategy": "truncate",
        "micro_batch_size": BATCH,
        "gradient_accumulation_steps": 1,
        "max_steps": STEPS,
        "gradient_checkpointing": False,
        "bf16": True,
        "val_set_size": 0,
        "output_dir": str(out),
        "logging_steps": 1,
    }
    if strategy != "full":
        cfg.update({"lora_r": 16, "lora_alpha": 32, "lora_target_modules": "all-linear"})
    return cfg


def child(strategy: str) -> dict:
    import resource

    import torch
    import yaml

    import strop.train.estimate as est
    import strop.train.loop as loop
    from strop.config import load_config

    cuda = torch.cuda.is_available()
    out = WORK / f"out-{strategy}"
    cfg_path = WORK / f"{strategy}.yml"
    cfg_path.write_text(yaml.safe_dump(config_dict(strategy, WORK / "model", WORK / "alpaca.jsonl", out)))
    cfg, base = load_config(cfg_path)
    rows, shapes, bf16 = est.estimates_for(cfg)
    e = rows[0]
    assert e.strategy == strategy, (e.strategy, strategy)

    phases: dict[str, float] = {}
    real_step = loop.train_step

    def step(run, i, optimizer, scaler, amp_dtype):
        if i == 0:
            if cuda:
                phases["before_step1"] = torch.cuda.memory_allocated()  # weights (+ adapters), no optimizer state yet
            phases["rows_total"] = len(run.train_rows)
            phases["row_tokens"] = [len(r["input_ids"]) for r in run.train_rows[:BATCH]]
        metrics = real_step(run, i, optimizer, scaler, amp_dtype)
        if cuda:
            torch.cuda.synchronize()
            phases[f"after_step{i + 1}"] = torch.cuda.memory_allocated()  # weights + optimizer states
            phases[f"peak_to_step{i + 1}"] = torch.cuda.max_memory_allocated()
        phases[f"loss{i + 1}"] = float(metrics.get("loss", float("nan")))
        return metrics

    loop.train_step = step
    loop._save_final = lambda run, output_dir: None  # saving costs time, not GPU memory
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    loop.train(cfg, base, overwrite=True)
    seconds = time.perf_counter() - started
    if cuda:
        measured = torch.cuda.max_memory_allocated()
        reserved = torch.cuda.max_memory_reserved()
        free, total = torch.cuda.mem_get_info()
        used_by_process = total - free  # includes the CUDA context and the allocator's cache
    else:
        measured = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        reserved = used_by_process = float("nan")
    return {
        "strategy": strategy,
        "trainable_est": e.trainable,
        "total_params": e.total,
        "est": {
            "weights": e.weights,
            "gradients": e.gradients,
            "optimizer": e.optimizer,
            "activations": e.activations,
            "peak": e.peak,
        },
        "measured_peak": measured,
        "max_reserved": reserved,
        "device_used_end": used_by_process,
        "phases": phases,
        "seconds": seconds,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }


def g(x: float) -> str:
    return f"{x / GIB:6.2f}" if x == x else "   nan"


def main(names: list[str]) -> None:
    names = names or ["full", "lora", "qlora", "dora"]
    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not (WORK / "model" / "config.json").is_file():
        subprocess.run([sys.executable, __file__, "--build"], check=True)
    write_data(WORK / "alpaca.jsonl")
    print(
        f"model ready in {time.perf_counter() - t0:.0f} s; arch {ARCH}, {BATCH} x {SEQ} tokens, bf16 autocast, "
        f"no gradient checkpointing, {STEPS} steps",
        flush=True,
    )
    results = []
    for name in names:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith(MARK)]
        if proc.returncode or not line:
            print(f"{name}: FAILED (rc {proc.returncode})\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}", flush=True)
            continue
        r = json.loads(line[-1][len(MARK) :])
        results.append(r)
        print(
            f"{name}: done in {time.perf_counter() - t:.0f} s; phases "
            + ", ".join(
                f"{k}={v / GIB:.2f}" if k.startswith(("before", "after", "peak")) else f"{k}={v}"
                for k, v in r["phases"].items()
            ),
            flush=True,
        )
    if not results:
        return
    r0 = results[0]
    print(f"\ndevice {r0['device']}, torch {r0['torch']} (CUDA {r0['cuda']}); {r0['total_params']:,} parameters")
    print(
        "GiB. est = strop estimate (weights + optimizer + max(activations, gradients)); meas peak = "
        "torch.cuda.max_memory_allocated over load + 3 steps; w0 = allocated before step 1 (weights); "
        "w+opt = allocated after step 3; gap = (est - meas) / meas"
    )
    head = (
        f"{'strategy':9s} {'trainable':>12s} | {'weights':>7s} {'grads':>6s} {'optim':>6s} {'activ':>6s} "
        f"{'EST':>6s} | {'w0':>6s} {'w+opt':>6s} {'MEAS':>6s} {'reservd':>7s} | {'gap':>7s}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        e, p = r["est"], r["phases"]
        gap = 100 * (e["peak"] - r["measured_peak"]) / r["measured_peak"]
        print(
            f"{r['strategy']:9s} {r['trainable_est']:>12,} | {g(e['weights']):>7s} {g(e['gradients'])} "
            f"{g(e['optimizer'])} {g(e['activations'])} {g(e['peak'])} | {g(p.get('before_step1', float('nan')))} "
            f"{g(p.get(f'after_step{STEPS}', float('nan')))} {g(r['measured_peak'])} {g(r['max_reserved']):>7s} | "
            f"{gap:+6.1f}%"
        )
    print(f"total wall {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--build":
        build(WORK / "model")
    elif len(sys.argv) > 2 and sys.argv[1] == "--child":
        result = child(sys.argv[2])
        print(MARK + json.dumps(result), flush=True)
    else:
        main(sys.argv[1:])
