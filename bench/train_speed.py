"""GPU training speed and memory: HF transformers + PEFT (a), the same with Liger-Kernel (b), and strop (c),
side by side on random-weight Llama-3.1-8B and Llama-3.2-1B architectures. Prints a table; not a test.

    PYTHONPATH=src python bench/train_speed.py                 # every row, one process per row
    PYTHONPATH=src python bench/train_speed.py a8b c8b         # chosen rows
    PYTHONPATH=src python bench/train_speed.py --one c8b       # one row in this process (JSON line)

Work: causal-LM SFT on random tokens, sequence 2048; LoRA r=16, alpha 32 on q,k,v,o,gate,up,down (or full
fine-tuning of the 1B model, or QLoRA: the 8B base's decoder linears in bitsandbytes NF4 with double
quantization, as strop's qlora strategy loads them, quantized here from the random bf16 weights); 4096 tokens per optimizer step (8B) and 16384 (1B); fused AdamW, lr 1e-4;
3 warm-up steps, then the median of 8 timed steps. Peak memory is torch.cuda.max_memory_allocated over
the steps (weights included). Model TFLOP/s counts 2N per token forward, 2N backward (+2N weight grads
for full fine-tuning) and causal attention, not the recompute; "ceiling" is an 8192³ bf16 matmul
measured in the same run. Every row starts from the same seed, so its final loss must agree.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import torch

CFG = {
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
               tie_word_embeddings=True),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SEQ, WARM, STEPS = 2048, 3, 8

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
}
DEFAULT = ["matmul", "a8b", "b8b", "c8b", "c8b-offload", "q8b", "q8b-offload", "a1b", "b1b", "c1b", "af1b", "bf1b", "cf1b"]


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
    return {"row": "matmul", "tflops": 2 * 8192 ** 3 / statistics.median(times) / 1e12}


def quantize_nf4(model) -> None:
    """Swap every decoder linear for bitsandbytes' Linear4bit holding the same weight in NF4 (double
    quantization, uint8 storage, bf16 compute: strategies/qlora.py's BitsAndBytesConfig), one layer at a
    time, and mark the model 4-bit as transformers' loader does (PEFT then wraps the 4-bit layers)."""
    import bitsandbytes as bnb

    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, lin in list(parent.named_children()):
                if isinstance(lin, torch.nn.Linear):
                    q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=False, compute_dtype=torch.bfloat16,
                                          compress_statistics=True, quant_type="nf4", quant_storage=torch.uint8,
                                          device="meta")
                    q.weight = bnb.nn.Params4bit(lin.weight.data, requires_grad=False, compress_statistics=True,
                                                 quant_type="nf4", quant_storage=torch.uint8, module=q).to(lin.weight.device)
                    setattr(parent, name, q)
    model.is_loaded_in_4bit = True
    torch.cuda.empty_cache()


def build(size: str, mode: str, stack: str, ckpt_mode: str | None, group: bool = True, rope: bool = False):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**CFG[size])
    cfg._attn_implementation = "sdpa"
    if stack == "liger":
        from liger_kernel.transformers import apply_liger_kernel_to_llama

        apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                    fused_linear_cross_entropy=True)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model.config.use_cache = False
    n_params = sum(p.numel() for p in model.parameters())  # before any 4-bit packing
    n_matmul = n_params - model.model.embed_tokens.weight.numel() + (model.lm_head.weight.numel() if cfg.tie_word_embeddings else 0)
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
            model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS,
                                                     task_type="CAUSAL_LM"))
    return model, cfg, n_matmul


def run_row(name: str) -> dict:
    if name == "matmul":
        return matmul_ceiling()
    profile = name.endswith("-prof")
    name = name.removesuffix("-prof")
    size, mode, stack, bs, mb, ckpt_mode = ROWS[name]
    model, cfg, n_matmul = build(size, mode, stack, ckpt_mode, group="nogroup" not in name, rope="norope" not in name)
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
                part = causal_lm_loss(model, ids[s:s + mb], ids[s:s + mb], reduction="sum") / count
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
    attn = 2 * 2 * cfg.num_hidden_layers * SEQ * cfg.hidden_size * 0.5
    per_tok = (6 if mode == "full" else 4) * n_matmul + 3 * attn
    result = {"row": name, "size": size, "mode": mode, "stack": stack, "ckpt": ckpt_mode, "micro_batch": mb,
            "tokens_per_step": bs * SEQ, "s_per_step": med, "tok_s": tok_s, "tflops": per_tok * tok_s / 1e12,
            "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30, "loss": float(loss),
            "spread": (min(times), max(times))}
    if profile:
        from torch.profiler import ProfilerActivity, profile as prof

        with prof(activities=[ProfilerActivity.CUDA]) as p:
            step()
            torch.cuda.synchronize()
        print(p.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=90), flush=True)
    return result


def table(results: list[dict]) -> str:
    ceiling = next((r["tflops"] for r in results if r["row"] == "matmul"), None)
    lines = []
    if ceiling:
        lines.append(f"bf16 matmul ceiling (8192^3, measured): {ceiling:.0f} TFLOP/s")
    lines.append(f"{'row':<12} {'work':<10} {'stack':<26} {'tok/s':>8} {'x(a)':>6} {'peak GiB':>9} {'x(a)':>6} "
                 f"{'TFLOP/s':>8} {'ceil%':>6} {'loss':>8}")
    baseline = {(r["size"], r["mode"]): r for r in results if r.get("stack") == "hf" and "tok_s" in r}
    baseline.update({(s, "qlora"): r for (s, m), r in list(baseline.items()) if m == "lora"})  # QLoRA against (a) LoRA
    for r in results:
        if r["row"] == "matmul":
            continue
        if "error" in r:
            lines.append(f"{r['row']:<12} ERROR {r['error'][:150]}")
            continue
        a = baseline.get((r["size"], r["mode"]))
        stack = {"hf": "(a) HF+PEFT sdpa+ckpt", "liger": "(b) + Liger"}.get(r["stack"], f"(c) strop ckpt={r['ckpt']} mb={r['micro_batch']}")
        if r["mode"] == "full":
            stack = stack.replace("HF+PEFT", "HF")
        sx = f"{r['tok_s'] / a['tok_s']:.2f}" if a else "-"
        mx = f"{r['peak_gib'] / a['peak_gib']:.2f}" if a else "-"
        share = f"{100 * r['tflops'] / ceiling:.0f}" if ceiling else "-"
        lines.append(f"{r['row']:<12} {r['size'] + ' ' + r['mode']:<10} {stack:<26} {r['tok_s']:>8,.0f} {sx:>6} "
                     f"{r['peak_gib']:>9.2f} {mx:>6} {r['tflops']:>8.0f} {share:>6} {r['loss']:>8.4f}")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
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
            proc = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True,
                                  timeout=float(os.environ.get("ROW_TIMEOUT", 240)))
        except subprocess.TimeoutExpired as e:
            proc = subprocess.CompletedProcess(e.cmd, -9, str(e.stdout or ""), f"timed out after {e.timeout}s")
        found = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        result = found[0] if found else {"row": name, "error": (proc.stderr or proc.stdout)[-400:]}
        if name in ROWS and "error" not in result:
            result.setdefault("size", ROWS[name][0])
        elif name in ROWS:
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
