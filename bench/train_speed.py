"""GPU training speed and memory, side by side on random-weight Llama-3.1-8B and Llama-3.2-1B architectures:
(a) HF transformers + PEFT, (b) the same with Liger-Kernel, (c) strop's kernels called directly, (u) Unsloth's
own path, and (s) the command users run, `strop train CONFIG.yml`, packed and unpacked. Prints a table whose
× columns are each row's ratio to (a), (b), (c) and (u) of the same work in this run; not a test.

    PYTHONPATH=src python bench/train_speed.py                 # every row, one process per row
    PYTHONPATH=src python bench/train_speed.py a8b c8b s8b     # chosen rows
    PYTHONPATH=src python bench/train_speed.py --one c8b       # one row in this process (JSON line)
    PYTHONPATH=src python bench/train_speed.py sq8b-prof q8b-prof  # a row under the profiler: kernels by time

Work: causal-LM SFT, sequence 2048; LoRA r=16, alpha 32 on q,k,v,o,gate,up,down (or full fine-tuning of
the 1B model, or QLoRA: the 8B base's decoder linears in bitsandbytes NF4 with double quantization, as
strop's qlora strategy loads them); 4096 tokens per optimizer step (8B) and 16384 (1B); AdamW, lr 1e-4;
3 warm-up steps, then 8 timed. Direct rows (a, b, c, u) train on random token ids and report the median
step; Unsloth loads the same seed-0 weights from a saved folder (its QLoRA quantizes them at load). The
(s) rows run `python -m strop train` in a subprocess on that folder with random-word text data (unpacked:
full 2048-token examples; packed: documents of 100-1,500 tokens packed into 2048-token rows, so a step
holds a little under 16384 real tokens) and read the rate between step 3 and step 11 from the
`elapsed_s` and `tokens_seen` that strop logs for every step: the whole product path (data, collation,
the loop, logging) is inside the figure. Peak memory is torch.cuda.max_memory_allocated over the steps
(direct rows) or the run (s rows), weights included. Model TFLOP/s counts 2N per token forward, 2N
backward (+2N weight grads for full fine-tuning) and causal attention, not the recompute; "ceiling" is an
8192³ bf16 matmul measured in the same run. Direct rows start from the same seed, so their losses agree.
"""

from __future__ import annotations

import cProfile
import json
import os
import statistics
import subprocess
import sys
import time

import torch

CFG = {
    "8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=8192,
        rope_theta=500000.0,
    ),
    "1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        tie_word_embeddings=True,
    ),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SEQ, WARM, STEPS, WORDS = 2048, 3, 8, 4000

# name: (size, mode, stack, batch, micro-batch, strop checkpoint mode)
ROWS = {
    "a8b": ("8b", "lora", "hf", 2, 2, None),
    "b8b": ("8b", "lora", "liger", 2, 2, None),
    "c8b": ("8b", "lora", "strop", 2, 2, "gpu"),
    "c8b-offload": ("8b", "lora", "strop", 2, 2, "offload"),
    "c8b-nockpt": ("8b", "lora", "strop", 2, 1, None),
    "c8b-nogroup": ("8b", "lora", "strop", 2, 2, "gpu"),
    "c8b-norope": ("8b", "lora", "strop", 2, 2, "gpu"),
    "q8b": ("8b", "qlora", "strop", 2, 2, "gpu"),
    "q8b-offload": ("8b", "qlora", "strop", 2, 2, "offload"),
    "q8b-nogroup": ("8b", "qlora", "strop", 2, 2, "gpu"),
    "a1b": ("1b", "lora", "hf", 8, 8, None),
    "b1b": ("1b", "lora", "liger", 8, 8, None),
    "c1b": ("1b", "lora", "strop", 8, 8, "gpu"),
    "c1b-nockpt": ("1b", "lora", "strop", 8, 2, None),
    "af1b": ("1b", "full", "hf", 8, 8, None),
    "bf1b": ("1b", "full", "liger", 8, 8, None),
    "cf1b": ("1b", "full", "strop", 8, 8, "gpu"),
    "u8b": ("8b", "lora", "unsloth", 2, 2, None),
    "uq8b": ("8b", "qlora", "unsloth", 2, 2, None),
    "u1b": ("1b", "lora", "unsloth", 8, 8, None),
    "uf1b": ("1b", "full", "unsloth", 8, 8, None),
}
# `strop train CONFIG.yml` as a user runs it: name: (size, mode, packed, micro-batch, accumulation). Same
# tokens per step as the direct rows (8B: 2 × 2048, 1B: 8 × 2048); packed rows hold random-length
# documents (100-1,500 tokens) packed into rows of 2048.
CLI_ROWS = {
    "s8b": ("8b", "lora", False, 2, 1),
    "s8b-packed": ("8b", "lora", True, 2, 1),
    "sq8b": ("8b", "qlora", False, 2, 1),
    "s1b": ("1b", "lora", False, 8, 1),
    "s1b-packed": ("1b", "lora", True, 8, 1),
    "sf1b": ("1b", "full", False, 8, 1),
    "sf1b-packed": ("1b", "full", True, 8, 1),
    "sf1b-bf16": ("1b", "full", False, 8, 1),
}
# Config keys a CLI row adds to its YAML: sf1b-bf16 is sf1b with bf16 weights, gradients and AdamW states
# (stochastically rounded updates), Liger's bf1b memory layout.
CLI_KEYS = {"sf1b-bf16": {"master_weights": "bf16"}}
DEFAULT = [
    "matmul",
    "a8b",
    "b8b",
    "c8b",
    "u8b",
    "s8b",
    "s8b-packed",
    "q8b",
    "uq8b",
    "sq8b",
    "a1b",
    "b1b",
    "c1b",
    "u1b",
    "s1b",
    "s1b-packed",
    "af1b",
    "bf1b",
    "cf1b",
    "uf1b",
    "sf1b",
    "sf1b-packed",
    "sf1b-bf16",
]


def matmul_ceiling() -> dict:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(20):
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return {"row": "matmul", "tflops": 2 * 8192**3 / statistics.median(times) / 1e12}


def quantize_nf4(model) -> None:
    """Swap every decoder linear for bitsandbytes' Linear4bit holding the same weight in NF4 (double
    quantization, uint8 storage, bf16 compute: strategies/qlora.py's BitsAndBytesConfig), one layer at a
    time, and mark the model 4-bit as transformers' loader does (PEFT then wraps the 4-bit layers)."""
    import bitsandbytes as bnb

    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, lin in list(parent.named_children()):
                if isinstance(lin, torch.nn.Linear):
                    q = bnb.nn.Linear4bit(
                        lin.in_features,
                        lin.out_features,
                        bias=False,
                        compute_dtype=torch.bfloat16,
                        compress_statistics=True,
                        quant_type="nf4",
                        quant_storage=torch.uint8,
                        device="meta",
                    )
                    q.weight = bnb.nn.Params4bit(
                        lin.weight.data,
                        requires_grad=False,
                        compress_statistics=True,
                        quant_type="nf4",
                        quant_storage=torch.uint8,
                        module=q,
                    ).to(lin.weight.device)
                    setattr(parent, name, q)
    model.is_loaded_in_4bit = True
    torch.cuda.empty_cache()


def random_llama(cfg):
    """The row's model with seed-0 random bf16 weights on the GPU (every stack starts from these)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    return model


def model_folder(size: str) -> str:
    """The random model of `size` saved once (bf16 safetensors and a word-level tokenizer) for the stacks
    that load from a folder: Unsloth and `strop train`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    folder = os.path.join(os.environ.get("BENCH_CACHE", "/tmp/strop-bench"), size)
    if os.path.exists(os.path.join(folder, "config.json")):
        return folder
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2} | {f"w{i}": i + 3 for i in range(WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<pad>"
    ).save_pretrained(folder)
    model = random_llama(LlamaConfig(**CFG[size], bos_token_id=1, eos_token_id=2, pad_token_id=0))
    model.save_pretrained(folder, safe_serialization=True)
    del model
    torch.cuda.empty_cache()
    return folder


def build_unsloth(size: str, mode: str):
    """Unsloth's own path on the same random weights: FastLanguageModel from the saved folder (4-bit NF4
    quantized at load for QLoRA), its LoRA with use_gradient_checkpointing="unsloth", or full_finetuning."""
    folder = model_folder(size)
    torch.cuda.reset_peak_memory_stats()
    from unsloth import FastLanguageModel

    model, _ = FastLanguageModel.from_pretrained(
        folder,
        max_seq_length=SEQ,
        dtype=torch.bfloat16,
        load_in_4bit=mode == "qlora",
        full_finetuning=mode == "full",
        local_files_only=True,
    )
    if mode != "full":
        model = FastLanguageModel.get_peft_model(
            model,
            r=16,
            lora_alpha=32,
            lora_dropout=0.0,
            target_modules=TARGETS,
            bias="none",
            use_gradient_checkpointing="unsloth",
            random_state=0,
        )
    return model, model.config


def build(size: str, mode: str, stack: str, ckpt_mode: str | None, group: bool = True, rope: bool = False):
    from transformers import LlamaConfig

    cfg = LlamaConfig(**CFG[size])
    cfg._attn_implementation = "sdpa"
    if stack == "liger":
        from liger_kernel.transformers import apply_liger_kernel_to_llama

        apply_liger_kernel_to_llama(
            rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=True
        )
    model = random_llama(cfg)
    model.config.use_cache = False
    if mode == "qlora":
        quantize_nf4(model)
    if stack == "strop":
        from strop.kernels import KernelOptions, patch_model
        from strop.strategies import get_strategy

        strategy = get_strategy(mode)
        lora = {"lora_r": 16, "lora_alpha": 32, "lora_target_modules": TARGETS} if mode != "full" else {}
        params = strategy.params(kernels=False, **lora)  # patched below, with this row's options
        model = strategy.apply(model, params)
        info = patch_model(model, KernelOptions(checkpoint=ckpt_mode, group=group, rope_compile=rope))
        print("strop patched:", info, flush=True)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if mode == "lora":
            from peft import LoraConfig, get_peft_model

            model.enable_input_require_grads()
            model = get_peft_model(
                model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
            )
    return model, cfg


def matmul_params(size: str) -> int:
    """Weights that take part in a matmul per token: every linear layer and the output head."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**CFG[size])
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    return (
        n_params
        - model.model.embed_tokens.weight.numel()
        + (model.lm_head.weight.numel() if cfg.tie_word_embeddings else 0)
    )


def write_cli_run(
    work: str, size: str, mode: str, packed: bool, micro_batch: int, accumulation: int, keys: dict | None = None
) -> str:
    """Random-word data and a config for `strop train` on the saved random model (plus `keys`); returns
    the config path."""
    import json
    import random

    import yaml

    rng = random.Random(0)
    words = lambda n: " ".join(f"w{rng.randrange(WORDS)}" for _ in range(n))  # noqa: E731
    # Unpacked: texts of 4 × 2048 tokens (words + EOS) that split into full 2048-token examples.
    lines = [words(rng.randint(100, 1500)) for _ in range(400)] if packed else [words(4 * SEQ - 1) for _ in range(40)]
    data = os.path.join(work, "data.jsonl")
    with open(data, "w") as f:
        f.writelines(json.dumps({"text": line}) + "\n" for line in lines)
    cfg = {
        "base_model": model_folder(size),
        "datasets": [{"path": data, "type": "text"}],
        "sequence_len": SEQ,
        "sample_packing": packed,
        "micro_batch_size": micro_batch,
        "gradient_accumulation_steps": accumulation,
        "max_steps": WARM + STEPS,
        "learning_rate": 1e-4,
        "lr_scheduler": "constant",
        "bf16": True,
        "gradient_checkpointing": True,
        "logging_steps": 1,
        "output_dir": os.path.join(work, "out"),
        "adapter": None if mode == "full" else mode,
    }
    if mode != "full":
        cfg |= {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "lora_target_modules": TARGETS}
    cfg |= keys or {}
    path = os.path.join(work, "config.yml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


def profile_summary(prof, steps: int, wall_s: float) -> None:
    """The kernels by device time, the host ops by their own CPU time (a blocking sync shows up here as
    cudaStreamSynchronize or a copy to the host), and the share of the steps' wall time the GPU was busy:
    a low share means the step waits on the host, not on kernels."""
    events = prof.key_averages()
    print(events.table(sort_by="self_device_time_total", row_limit=30, max_name_column_width=90), flush=True)
    print(events.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=90), flush=True)
    from torch.autograd import DeviceType

    busy = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA) / 1e6 / steps
    print(
        f"per step: wall {1e3 * wall_s / steps:.1f} ms, GPU kernels {1e3 * busy:.1f} ms "
        f"({100 * busy * steps / wall_s:.0f}% busy)",
        flush=True,
    )


def host_profile_summary(host, steps: int) -> None:
    """Python's own profile of the same steps: the functions by their own time, then by time inside them,
    per step. Where the GPU waits on the host, this names the Python that keeps it waiting."""
    import io
    import pstats

    for order in ("tottime", "cumulative"):
        text = io.StringIO()
        pstats.Stats(host, stream=text).strip_dirs().sort_stats(order).print_stats(25)
        print(f"host Python over {steps} steps, by {order}:", text.getvalue()[-6000:], sep="\n", flush=True)


def profile_cli(config: str) -> None:
    """`strop train CONFIG` in this process with PyTorch's profiler over two optimizer steps after the
    warm-up (a global optimizer-step hook advances its schedule and times the steps), then
    `profile_summary`; and, over two later steps without PyTorch's profiler, Python's
    (`host_profile_summary`)."""
    from torch.optim.optimizer import register_optimizer_step_post_hook
    from torch.profiler import ProfilerActivity, profile, schedule

    from strop.cli import main as strop_main

    active = 2
    wait = WARM + 2
    prof = profile(
        activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
        schedule=schedule(wait=wait, warmup=1, active=active),
    )
    host = cProfile.Profile()
    first = wait + 1  # the step that ends the warm-up phase opens the active window
    host_window = (first + active + 1, first + active + 1 + active)  # after the torch profiler's window
    stamps: list[float] = []

    def advance(*args) -> None:
        torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        prof.step()
        if len(stamps) == host_window[0]:
            host.enable()
        elif len(stamps) == host_window[1]:
            host.disable()

    register_optimizer_step_post_hook(advance)
    prof.start()
    status = strop_main(["train", config, "--set", f"max_steps={host_window[1] + 1}"])
    prof.stop()
    profile_summary(prof, active, stamps[first + active - 1] - stamps[first - 1])
    host_profile_summary(host, active)
    sys.exit(status)


def run_cli_row(name: str) -> dict:
    """Time `strop train CONFIG.yml` in its own process; tokens/s and peak come from the metrics.jsonl
    it writes (`elapsed_s`, `tokens_seen`, `gpu_peak_gib` of every step), after the warm-up steps. A row
    named NAME-prof runs it under the profiler (`profile_cli`; its figures are then not timings to use)."""
    import json
    import tempfile

    profiled = name.endswith("-prof")
    name = name.removesuffix("-prof")
    size, mode, packed, micro_batch, accumulation = CLI_ROWS[name]
    with tempfile.TemporaryDirectory() as work:
        config = write_cli_run(work, size, mode, packed, micro_batch, accumulation, CLI_KEYS.get(name))
        torch.cuda.empty_cache()
        started = time.perf_counter()
        command = [__file__, "--profile-cli", config] if profiled else ["-m", "strop", "train", config]
        proc = subprocess.run(
            [sys.executable, *command], capture_output=True, text=True, env=os.environ | {"COLUMNS": "160"}
        )
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"strop train exited {proc.returncode}: {proc.stderr[-600:]}")
        if profiled:
            print(proc.stdout[-12000:], flush=True)
        with open(os.path.join(work, "out", "metrics.jsonl")) as f:
            steps = [json.loads(line) for line in f if line.strip()]
    first, last = steps[WARM - 1], steps[-1]
    tok_s = (last["tokens_seen"] - first["tokens_seen"]) / (last["elapsed_s"] - first["elapsed_s"])
    tokens = (last["tokens_seen"] - first["tokens_seen"]) / (len(steps) - WARM)
    return {
        "row": name,
        "size": size,
        "mode": mode,
        "stack": "strop train",
        "packed": packed,
        "keys": CLI_KEYS.get(name, {}),
        "micro_batch": micro_batch,
        "tokens_per_step": tokens,
        "s_per_step": tokens / tok_s,
        "tok_s": tok_s,
        "peak_gib": last.get("gpu_peak_gib", 0.0),
        "loss": last["loss"],
        "command_wall_s": wall,
        "plan": [l for l in proc.stdout.splitlines() if "kernels" in l or "packed" in l],
    }


def model_flops_per_token(size: str, mode: str) -> float:
    """2N forward + 2N backward (+2N weight gradients for full fine-tuning) and causal attention."""
    cfg = CFG[size]
    attn = 2 * 2 * cfg["num_hidden_layers"] * SEQ * cfg["hidden_size"] * 0.5
    return (6 if mode == "full" else 4) * matmul_params(size) + 3 * attn


def run_row(name: str) -> dict:
    if name == "matmul":
        return matmul_ceiling()
    if name.removesuffix("-prof") in CLI_ROWS:
        result = run_cli_row(name)
        result["tflops"] = model_flops_per_token(result["size"], result["mode"]) * result["tok_s"] / 1e12
        return result
    profile = name.endswith("-prof")
    name = name.removesuffix("-prof")
    size, mode, stack, bs, mb, ckpt_mode = ROWS[name]
    if stack == "unsloth":
        model, cfg = build_unsloth(size, mode)
    else:
        model, cfg = build(size, mode, stack, ckpt_mode, group="nogroup" not in name, rope="norope" not in name)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    g = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (bs, SEQ), device="cuda", generator=g)
    model.train()
    torch.cuda.reset_peak_memory_stats()
    times, loss = [], None

    def step():
        if stack == "strop":
            from strop.kernels import causal_lm_loss, shift_labels

            count = (shift_labels(ids) != -100).sum()
            loss = 0.0
            for s in range(0, bs, mb):
                part = causal_lm_loss(model, ids[s : s + mb], ids[s : s + mb], reduction="sum") / count
                part.backward()
                loss = loss + part.detach()
        else:
            out = model(input_ids=ids, labels=ids)
            out.loss.backward()
            loss = out.loss.detach()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for i in range(WARM + STEPS):
        torch.cuda.synchronize()
        t = time.perf_counter()
        loss = step()
        torch.cuda.synchronize()
        if i >= WARM:
            times.append(time.perf_counter() - t)
    med = statistics.median(times)
    tok_s = bs * SEQ / med
    per_tok = model_flops_per_token(size, mode)
    result = {
        "row": name,
        "size": size,
        "mode": mode,
        "stack": stack,
        "ckpt": ckpt_mode,
        "micro_batch": mb,
        "tokens_per_step": bs * SEQ,
        "s_per_step": med,
        "tok_s": tok_s,
        "tflops": per_tok * tok_s / 1e12,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "loss": float(loss),
        "spread": (min(times), max(times)),
    }
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as prof

        with prof(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            torch.cuda.synchronize()
            started = time.perf_counter()
            step()
            torch.cuda.synchronize()
            wall = time.perf_counter() - started
        profile_summary(p, 1, wall)
        host = cProfile.Profile()
        host.runcall(lambda: [step() for _ in range(2)])
        host_profile_summary(host, 2)
    return result


STACKS = {
    "hf": "(a) HF+PEFT sdpa+ckpt",
    "liger": "(b) + Liger",
    "strop": "(c) strop kernels, direct",
    "strop train": "(s) strop train (CLI)",
    "unsloth": "(u) Unsloth",
}


def _stack_label(r: dict) -> str:
    label = STACKS[r["stack"]]
    if r["stack"] == "strop" and r.get("ckpt") != "gpu":
        label += f" ckpt={r['ckpt']}"
    if r.get("packed"):
        label += ", packed"
    if r.get("keys", {}).get("master_weights") == "bf16":
        label += ", bf16 weights"
    return label.replace("HF+PEFT", "HF") if r["mode"] == "full" else label


def table(results: list[dict]) -> str:
    """One line a row; × columns are ratios of tokens/s to the same work's (a) HF, (b) Liger, (c) strop's
    direct kernel row and (u) Unsloth in this run (QLoRA rows: (a) is the 8B LoRA baseline)."""
    ceiling = next((r["tflops"] for r in results if r["row"] == "matmul"), None)
    lines = [f"bf16 matmul ceiling (8192^3, measured): {ceiling:.0f} TFLOP/s"] if ceiling else []
    lines.append(
        f"{'row':<12} {'work':<9} {'stack':<31} {'tok/s':>8} {'x(a)':>5} {'x(b)':>5} {'x(c)':>5} {'x(u)':>5} "
        f"{'peak GiB':>8} {'mem x(a)':>8} {'TFLOP/s':>7} {'ceil%':>5} {'loss':>8}"
    )
    ok = [r for r in results if "tok_s" in r]
    refs = {
        stack: {(r["size"], r["mode"]): r for r in ok if r["stack"] == stack and "-" not in r["row"]}
        for stack in ("hf", "liger", "strop", "unsloth")
    }
    refs["hf"].update({(s, "qlora"): r for (s, m), r in list(refs["hf"].items()) if m == "lora"})
    for r in results:
        if r["row"] == "matmul":
            continue
        if "error" in r:
            lines.append(f"{r['row']:<12} ERROR {r['error'][:150]}")
            continue
        key = (r["size"], r["mode"])
        ratio = {s: f"{r['tok_s'] / refs[s][key]['tok_s']:.2f}" if key in refs[s] else "-" for s in refs}
        a = refs["hf"].get(key)
        mx = f"{r['peak_gib'] / a['peak_gib']:.2f}" if a else "-"
        share = f"{100 * r['tflops'] / ceiling:.0f}" if ceiling else "-"
        lines.append(
            f"{r['row']:<12} {r['size'] + ' ' + r['mode']:<9} {_stack_label(r):<31} {r['tok_s']:>8,.0f} "
            f"{ratio['hf']:>5} {ratio['liger']:>5} {ratio['strop']:>5} {ratio['unsloth']:>5} "
            f"{r['peak_gib']:>8.2f} {mx:>8} {r['tflops']:>7.0f} {share:>5} {r['loss']:>8.4f}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--profile-cli"]:
        profile_cli(argv[1])
    if argv[:1] == ["--one"]:
        try:
            result = run_row(argv[1])
        except Exception as e:  # report and let the next row run
            result = {"row": argv[1], "error": f"{type(e).__name__}: {str(e)[:400]}"}
        print("RESULT " + json.dumps(result), flush=True)
        return
    rows = argv or DEFAULT
    results = []
    out_dir = os.environ.get("OUT")
    for name in rows:
        t = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, __file__, "--one", name],
                capture_output=True,
                text=True,
                timeout=float(os.environ.get("ROW_TIMEOUT", 240)),
            )
        except subprocess.TimeoutExpired as e:
            proc = subprocess.CompletedProcess(e.cmd, -9, str(e.stdout or ""), f"timed out after {e.timeout}s")
        found = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        result = found[0] if found else {"row": name, "error": (proc.stderr or proc.stdout)[-400:]}
        if "error" in result and name in ROWS:
            result.update(size=ROWS[name][0], mode=ROWS[name][1], stack=ROWS[name][2])
        results.append(result)
        print(f"[{time.perf_counter() - t:.0f}s] {json.dumps(result)}", flush=True)
        if "error" in result:
            print(proc.stderr[-3000:], flush=True)
        if name.endswith("-prof"):
            print(proc.stdout[-12000:], flush=True)
        if out_dir:
            with open(os.path.join(out_dir, "train_speed.jsonl"), "a") as f:
                f.write(json.dumps(result) + "\n")
    print()
    print(table(results), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
