"""Rollout speed on the GPU: strop's engine (rl/rollout.py) against transformers' `generate`, same model,
same batch, same sampling, one process. Prints a table; not a test. On the GPU machine:

    PYTHONPATH=src python bench/rollout_speed.py            # 1B and 8B Llama shapes
    PYTHONPATH=src python bench/rollout_speed.py 1b         # chosen sizes
    PYTHONPATH=src python bench/rollout_speed.py --no-eager # without the CPU decoder's row (slow on a GPU)
    PYTHONPATH=src python bench/rollout_speed.py --profile 1b  # then one `strop` run per batch under the profiler

The policy is what GRPO samples from during LoRA training: random bf16 weights in the Llama-3.2-1B or
Llama-3.1-8B shape (no download; speed does not depend on the values) wrapped by PEFT LoRA r=16 on all
linear projections. Work: P prompts of 256 random tokens, G = 8 completions each, exactly 256 new tokens
per completion (no end token, so both engines do the same work), temperature 1. Rows:
- `generate`: transformers' generate with num_return_sequences=G (what TRL uses without vLLM);
- `strop eager`: strop's CPU decoder (growing cache, prefill once per prompt, finished rows pruned);
- `strop`: strop's engine as it runs on CUDA (static cache, the decode step replayed as a CUDA graph);
- `strop + kernels`: strop's engine on the policy as `strop train` prepares it on CUDA (kernels on).
tokens/s counts generated tokens; the median of 3 timed runs (`--runs N`) after a warm-up. The greedy check compares
strop's greedy tokens with generate's on the same policy (share of identical tokens, 64 each).
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

SHAPES = {
    "1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),
    "8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
    ),
}
PROMPTS = {"1b": [8, 32], "8b": [8, 32]}
PROMPT_LEN, NEW, GROUP = 256, 256, 8


class NoEndTokenizer:
    """What the engine asks of a tokenizer, with no end token: every row runs to max_new_tokens."""

    eos_token_id = None
    pad_token_id = 0

    def decode(self, ids, skip_special_tokens=True):
        return ""


def policy(size: str):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        **SHAPES[size],
        max_position_embeddings=4096,
        rope_theta=500000.0,
        eos_token_id=None,
        pad_token_id=0,
        bos_token_id=None,
    )
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.generation_config.eos_token_id = None
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora).eval()


RUNS = 3  # timed runs per row after the warm-up (--runs N)


def timed(fn) -> float:
    fn()
    times = []
    for _ in range(RUNS):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def hf_generate(model, prompts: torch.Tensor, new: int, sample: bool = True) -> torch.Tensor:
    settings = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0} if sample else {"do_sample": False}
    return model.generate(
        input_ids=prompts,
        attention_mask=torch.ones_like(prompts),
        max_new_tokens=new,
        min_new_tokens=new,
        num_return_sequences=GROUP if sample else 1,
        pad_token_id=0,
        **settings,
    )


def profile_sampling(model, tok, lists: list[list[int]], params) -> None:
    """One run of strop's engine under PyTorch's profiler: kernels by device time, host ops by CPU time,
    and how busy the GPU was (train_speed.profile_summary)."""
    from torch.profiler import ProfilerActivity, profile
    from train_speed import profile_summary

    from strop.rl.rollout import sample

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        torch.cuda.synchronize()
        started = time.perf_counter()
        sample(model, tok, lists, params, GROUP, torch.Generator("cuda").manual_seed(0))
        torch.cuda.synchronize()
        wall = time.perf_counter() - started
    print(f"profile: {len(lists)} prompts x {GROUP} completions, {NEW} steps", flush=True)
    profile_summary(prof, NEW, wall)


@torch.no_grad()
def main(sizes: list[str], eager: bool = True, profiled: bool = False) -> None:
    from strop.rl.rollout import SamplingParams, _sample_with_cache, sample

    tok = NoEndTokenizer()
    rows = []
    for size in sizes:
        model = policy(size)
        for n_prompts in PROMPTS[size]:
            prompts = torch.randint(10, 128000, (n_prompts, PROMPT_LEN), device="cuda")
            lists = prompts.tolist()
            params = SamplingParams(max_new_tokens=NEW, temperature=1.0)
            generated = n_prompts * GROUP * NEW
            seconds = timed(lambda: hf_generate(model, prompts, NEW))
            rows.append((size, n_prompts, "generate", generated / seconds))
            if eager:
                seconds = timed(
                    lambda: _sample_with_cache(model, tok, lists, params, GROUP, torch.Generator("cuda").manual_seed(0))
                )
                rows.append((size, n_prompts, "strop eager", generated / seconds))
            seconds = timed(lambda: sample(model, tok, lists, params, GROUP, torch.Generator("cuda").manual_seed(0)))
            rows.append((size, n_prompts, "strop", generated / seconds))
            print(rows[-3:], flush=True)
            if profiled:
                profile_sampling(model, tok, lists, params)
        check = prompts[:4]
        reference = hf_generate(model, check, 64, sample=False)[:, PROMPT_LEN:].tolist()
        ours = [c.ids for c in sample(model, tok, check.tolist(), SamplingParams(64, temperature=0.0))]
        agree = sum(a == b for r, o in zip(reference, ours) for a, b in zip(r, o)) / (4 * 64)
        print(f"{size}: greedy tokens identical to generate's: {agree:.3f}", flush=True)
        from types import SimpleNamespace

        from strop.strategies import get_strategy
        from strop.strategies.kernels import install_kernels

        cfg = SimpleNamespace(
            kernels=True,
            kernel_checkpoint="auto",
            gradient_checkpointing=True,
            bf16=True,
            fp16=False,
            peft_use_dora=False,
            load_in_4bit=False,
        )
        install_kernels(model, get_strategy("lora"), cfg)
        for n_prompts in PROMPTS[size]:
            lists = torch.randint(10, 128000, (n_prompts, PROMPT_LEN)).tolist()
            with torch.autocast("cuda", torch.bfloat16):
                seconds = timed(
                    lambda: sample(model, tok, lists, params, GROUP, torch.Generator("cuda").manual_seed(0))
                )
            rows.append((size, n_prompts, "strop + kernels", n_prompts * GROUP * NEW / seconds))
            print(rows[-1], flush=True)
        model = None  # frees the weights before the next size (the lambdas above hold the name)
        torch.cuda.empty_cache()
    print(
        f"\nrollout tokens/s: {PROMPT_LEN}-token prompts, {GROUP} completions each, {NEW} new tokens, LoRA r=16 policy"
    )
    print(f"{'model':6} {'rows':>5} {'engine':18} {'tokens/s':>10} {'x generate':>11}")
    for size, n_prompts, engine, speed in rows:
        base = next(s for z, p, e, s in rows if z == size and p == n_prompts and e == "generate")
        print(f"{size:6} {n_prompts * GROUP:5d} {engine:18} {speed:10,.0f} {speed / base:11.2f}")


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--runs" in args:
        at = args.index("--runs")
        RUNS = int(args[at + 1])
        del args[at : at + 2]
    sizes = [a for a in args if a not in ("--no-eager", "--profile")]
    main(sizes or list(SHAPES), eager="--no-eager" not in args, profiled="--profile" in args)
