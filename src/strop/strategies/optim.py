"""The default optimizer of every strategy without its own update rule: AdamW, with 8-bit (or 4-bit)
states when Axolotl's optimizer names ask for them, or on bf16 weights with stochastically rounded bf16
states under `master_weights: bf16` (strop.kernels.adamw_bf16)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from strop.errors import StropError
from strop.kernels.adamw_bf16 import StepScalars, adamw_bf16_step
from strop.run_types import RunConfig

#: Axolotl's optimizer names with 8-bit (or 4-bit) states → (package, class). Block-wise quantized
#: Adam states (Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization") take 2 bytes per
#: parameter instead of AdamW's 8; "paged" keeps them in CUDA unified memory (plain on the CPU).
LOW_BIT_ADAMW = {
    "adamw_bnb_8bit": ("bitsandbytes", "AdamW8bit"),
    "adamw_8bit": ("bitsandbytes", "AdamW8bit"),
    "paged_adamw_8bit": ("bitsandbytes", "PagedAdamW8bit"),
    "paged_adamw_32bit": ("bitsandbytes", "PagedAdamW32bit"),
    "adamw_torch_8bit": ("torchao", "AdamW8bit"),
    "adamw_torch_4bit": ("torchao", "AdamW4bit"),
}


def _low_bit_class(name: str) -> Callable[..., torch.optim.Optimizer]:
    package, cls = LOW_BIT_ADAMW[name]
    try:
        module = importlib.import_module(f"{package}.optim")
    except ImportError as err:
        raise StropError(f"optimizer: {name} needs {package}: pip install {package} (or use adamw_torch)") from err
    return getattr(module, cls)


def _seed(base: int, step: int, index: int) -> int:
    """A seed below 2^31 for tensor `index` at `step` (splitmix64 of the three): different in every step
    and tensor, and the same again when a resumed run repeats the step."""
    z = (base * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) % 2**64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    return (z ^ (z >> 31)) % 2**31


class BF16AdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay) for bf16 parameters with bf16 moments: computes in float32 and
    stores weights and both moments with stochastic rounding, so updates below bf16's resolution still
    move them in expectation. 8 bytes per parameter with its bf16 gradient (fp32 masters + AdamW: 16).
    State per parameter: `step` (a float32 scalar on the CPU, as torch's AdamW keeps it), `exp_avg`,
    `exp_avg_sq`; the checkpoint saves and restores it as it does any optimizer's."""

    def __init__(
        self, params, lr: float, betas: tuple[float, float], eps: float, weight_decay: float = 0.0, seed: int = 0
    ):
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self.seed = seed
        for group in self.param_groups:
            for p in group["params"]:
                if p.dtype != torch.bfloat16 or not p.is_contiguous():
                    raise StropError(f"master_weights: bf16 needs contiguous bf16 parameters; one is {p.dtype}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        index = 0
        for group in self.param_groups:
            by_step: dict[int, tuple[list, ...]] = {}
            for p in group["params"]:
                index += 1
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
                state["step"] += 1
                step = int(state["step"].item())
                lists = by_step.setdefault(step, ([], [], [], [], []))
                for target, value in zip(
                    lists,
                    (p, p.grad.contiguous(), state["exp_avg"], state["exp_avg_sq"], _seed(self.seed, step, index)),
                    strict=True,
                ):
                    target.append(value)
            beta1, beta2 = group["betas"]
            for step, (params, grads, exp_avgs, exp_avg_sqs, seeds) in by_step.items():
                scalars = StepScalars.of(group["lr"], beta1, beta2, group["eps"], group["weight_decay"], step)
                adamw_bf16_step(params, grads, exp_avgs, exp_avg_sqs, scalars, seeds)
        return loss


def build_optimizer(params: list[torch.nn.Parameter], cfg: RunConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; the fused CUDA kernel where the device has it (one launch for all parameters); 8-bit /
    4-bit states through bitsandbytes or torchao when the optimizer name asks for them; bf16 weights and
    states with stochastic rounding under `master_weights: bf16` (the config refuses other optimizers)."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    betas, eps = (cfg.adam_beta1, cfg.adam_beta2), cfg.adam_epsilon
    if getattr(cfg, "master_weights", "fp32") == "bf16":
        return BF16AdamW(groups, lr=cfg.learning_rate, betas=betas, eps=eps, seed=cfg.seed)
    if cfg.optimizer in LOW_BIT_ADAMW:
        return _low_bit_class(cfg.optimizer)(groups, lr=cfg.learning_rate, betas=betas, eps=eps)
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=betas, eps=eps, fused=fused)
