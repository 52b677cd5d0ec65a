"""Several processes, one run: PyTorch FSDP2 (`fully_shard`) under torchrun.

    torchrun --nproc-per-node N -m strop train CONFIG.yml      (or: strop train --nproc N CONFIG.yml)

Every rank loads the model, the strategy prepares it, then `wrap` shards it: one FSDP2 group per decoder
layer plus one for the rest (embeddings, final norm, head). A global micro-batch is micro_batch_size × N
rows of the same seeded permutation a single process reads; rank r takes its r-th slice. The step's loss
denominator (response tokens of the whole step) is all-reduced, so each rank's loss is its share of the
global loss and the sum of the ranks' gradients is the global gradient. FSDP2 averages gradients over
ranks; the loop multiplies each rank's loss by N (`loss_scale`) to turn that average back into the sum.
(`set_gradient_divide_factor(1.0)` would do the same, but needs PREMUL_SUM, which gloo lacks.)

`fsdp.sharding`:
- full_shard: parameters, gradients and optimizer state sharded; layers re-gathered in backward (ZeRO-3).
- shard_grad_op: layers stay gathered between forward and backward (ZeRO-2: more memory, fewer gathers).
- no_shard: plain data parallelism. Done as FSDP2 over a 2-D mesh (N replicas × 1 shard), i.e. HSDP with
  a shard group of one, rather than DistributedDataParallel, so that every mode shares one code path:
  DTensor parameters, the same mixed-precision policy, gradient clipping, DCP checkpoints and
  full-state-dict gathering. The traffic is DDP's: one all-reduce of the gradients per step.

Mixed precision follows the run's autocast dtype: parameters are gathered in bf16/fp16 and gradients
reduced in fp32, while the sharded master weights (and LoRA adapters) stay in fp32.

Only rank 0 prints, logs metrics and writes the final artifact; everything that runs the model (eval,
sample generation) runs on every rank in lockstep, because the sharded weights need all ranks.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from typing import Any, Literal

import torch
import torch.distributed as dist
from pydantic import BaseModel, ConfigDict, Field

from strop.errors import StropError
from strop.run_types import RunConfig
from strop.runtime.devices import default_device

#: Why a bitsandbytes 4-bit base (qlora, or load_in_4bit) cannot be sharded.
QUANTIZED_BASE = (
    "FSDP2 cannot shard bitsandbytes' 4-bit Params4bit weights (packed uint8 storage with a separate "
    "quantization state, which FSDP2's flat per-parameter sharding does not carry without a quant-storage "
    "dtype setup strop does not have)"
)


class FsdpParams(BaseModel):
    """`fsdp:` section: how a run under torchrun shards the model (ignored in a single process)."""

    model_config = ConfigDict(extra="forbid")

    sharding: Literal["full_shard", "shard_grad_op", "no_shard"] = Field(
        "full_shard", description="full_shard (ZeRO-3), shard_grad_op (ZeRO-2) or no_shard (data parallel)."
    )
    cpu_offload: bool = Field(
        False, description="Keep sharded parameters, gradients and optimizer state in CPU memory (CUDA only)."
    )
    activation_checkpointing: bool = Field(
        False, description="Recompute each decoder layer in backward (as gradient_checkpointing)."
    )


# --- ranks ---------------------------------------------------------------------------------------


def launched() -> bool:
    """Whether this process was started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def rank_before_init() -> int:
    """This process's rank as torchrun set it, before the process group exists (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def init() -> torch.device:
    """Join the process group when launched by torchrun; the device this rank computes on."""
    if not launched():
        return default_device()
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    return device


def teardown() -> None:
    """Leave the process group. No barrier: after an error on one rank the others never arrive
    (torchrun then stops them); after a run, the final save has already synchronised every rank."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def check_supported(cfg: RunConfig) -> None:
    """Refuse, on every rank and before any model is loaded, what sharded training cannot do."""
    if not launched():
        return
    reason = getattr(cfg, "fsdp_refusal", None)  # the strategy's own answer (Strategy.fsdp_unsupported)
    if reason:
        raise StropError(f"adapter: {cfg.strategy} does not run under torchrun yet: {reason}")
    if getattr(cfg, "master_weights", "fp32") == "bf16":
        raise StropError(
            "master_weights: bf16 is not combined with FSDP2 under torchrun yet; train on one process, or use fp32"
        )
    if getattr(cfg, "load_in_4bit", False):
        raise StropError(f"load_in_4bit: {QUANTIZED_BASE}; train on one process, or use lora with a bf16 base")


def activation_checkpointing(cfg: RunConfig) -> bool:
    return bool(launched() and cfg.fsdp and cfg.fsdp.activation_checkpointing)


# --- collectives over plain numbers ------------------------------------------------------------------


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def sum_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Every rank gets the sum of each value over ranks (keys must be the same on every rank)."""
    if not active() or not values:
        return dict(values)
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(tensor)
    return dict(zip(keys, tensor.tolist()))


def sum_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise sum over ranks of a tensor of the same shape on every rank, in float64 on the
    tensor's own device (no wait for the host)."""
    if not active():
        return tensor.double()
    summed = tensor.to(_comm_device(), torch.float64)
    dist.all_reduce(summed)
    return summed.to(tensor.device)


def sum_count(count: int) -> int:
    return int(sum_over_ranks({"n": count})["n"])


def max_count(count: int) -> int:
    """The largest of each rank's count (every rank gets it)."""
    if not active():
        return count
    tensor = torch.tensor([count], dtype=torch.int64, device=_comm_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def all_ranks(flag: bool) -> bool:
    """Whether `flag` holds on every rank (every rank must call)."""
    return sum_count(int(not flag)) == 0


def gather_json(value: Any) -> list[Any]:
    """Every rank's `value` (JSON-serialisable: numbers, strings, lists, dicts) in rank order, on every
    rank. Sent as JSON bytes rather than through all_gather_object, which pickles."""
    if not active():
        return [value]
    data = torch.frombuffer(bytearray(json.dumps(value).encode()), dtype=torch.uint8).to(_comm_device())
    sizes = [torch.zeros(1, dtype=torch.int64, device=data.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([data.numel()], dtype=torch.int64, device=data.device))
    longest = max(int(size) for size in sizes)
    padded = torch.zeros(longest, dtype=torch.uint8, device=data.device)
    padded[: data.numel()] = data
    pieces = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(pieces, padded)
    return [json.loads(bytes(p[: int(n)].tolist()).decode()) for p, n in zip(pieces, sizes)]


def unsharded(tensor: torch.Tensor) -> torch.Tensor:
    """The whole of a tensor that may be a sharded DTensor (a collective: every rank must call), left on
    its device: e.g. the gradient norm over sharded parameters."""
    full = getattr(tensor, "full_tensor", None)
    return full() if full is not None else tensor


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether `model` is wrapped by FSDP2: then each of its forwards gathers weights from every rank."""
    from torch.distributed.fsdp import FSDPModule

    return active() and isinstance(model, FSDPModule)


def loss_scale() -> float:
    """Factor on each rank's loss that turns FSDP's average of gradients over ranks into their sum."""
    return float(world_size())


def shard(rows: list, per_rank: int) -> list:
    """This rank's slice of a global micro-batch of per_rank × world_size rows (may be short or empty)."""
    start = rank() * per_rank
    return rows[start : start + per_rank]


# --- wrapping -------------------------------------------------------------------------------------------


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks: modules whose class the model lists in `_no_split_modules` (HF's own
    marker of a block that must stay whole), else the children of the longest ModuleList."""
    names: set[str] = set()
    for module in model.modules():
        names |= set(getattr(module, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if layers:
        return layers
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []  # type: ignore[arg-type]


def wrap(
    model: torch.nn.Module, cfg: RunConfig, device: torch.device, amp_dtype: torch.dtype | None
) -> torch.nn.Module:
    """Shard `model` in place with FSDP2: each decoder layer, then the outermost module for the rest
    (embeddings, final norm, head, a reward head or a prompt encoder). The outermost one, not the inner
    transformers model: PEFT calls the inner model's `forward` directly, which would skip its hooks."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    params = cfg.fsdp or FsdpParams()
    n = world_size()
    if params.sharding == "no_shard":
        mesh = init_device_mesh(device.type, (n, 1), mesh_dim_names=("replicate", "shard"))
    else:
        mesh = init_device_mesh(device.type, (n,), mesh_dim_names=("shard",))
    mp = (
        MixedPrecisionPolicy(param_dtype=amp_dtype, reduce_dtype=torch.float32) if amp_dtype else MixedPrecisionPolicy()
    )
    offload = CPUOffloadPolicy() if params.cpu_offload and device.type == "cuda" else OffloadPolicy()
    options: dict[str, Any] = dict(
        mesh=mesh, mp_policy=mp, offload_policy=offload, reshard_after_forward=params.sharding == "full_shard"
    )
    for layer in decoder_layers(model):
        fully_shard(layer, **options)
    fully_shard(model, **options)
    return model


@contextlib.contextmanager
def gathered_root(model: torch.nn.Module):
    """Hold the outermost group's parameters gathered (every rank must enter): for generation, which
    PEFT routes around the outer module's hooks, and for code that reads a weight directly."""
    if not active() or not hasattr(model, "unshard"):
        yield model
        return
    model.unshard()
    try:
        yield model
    finally:
        model.reshard()


def trainable_changed(modules: list[torch.nn.Module]) -> None:
    """Call (on every rank) after switching `requires_grad` of the parameters of these sharded modules
    (LISA's layers). FSDP2 reads `requires_grad` at every gather and reduces only the gradients that
    exist, but each group fixes its gradients' reduce and output dtypes from the parameters that train
    when it is first initialised: a layer frozen then would, under mixed precision, reduce its later
    gradients in the gathered bf16 and hand bf16 gradients to fp32 weights. `unshard` re-initialises
    the group from the current flags (one gather of these layers each time the set changes)."""
    if not active():
        return
    for module in modules:
        if hasattr(module, "unshard"):
            module.unshard()
            module.reshard()


def optimizer_device(cfg: RunConfig, device: torch.device) -> torch.device:
    """Where the optimizer steps: the CPU when FSDP offloads the sharded state there."""
    if launched() and cfg.fsdp and cfg.fsdp.cpu_offload and device.type == "cuda":
        return torch.device("cpu")
    return device


def describe(cfg: RunConfig, device: torch.device) -> str:
    if not active():
        return str(device)
    sharding = (cfg.fsdp or FsdpParams()).sharding
    return f"{device.type} × {world_size()} processes (FSDP2 {sharding})"


# --- launcher -------------------------------------------------------------------------------------------


def launch(nproc: int, strop_args: list[str]) -> int:
    """`strop train --nproc N ...`: run the same command under torchrun on N local processes.
    --standalone lets torchrun pick a free rendezvous port, so two runs on one machine do not collide."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "strop",
        *strop_args,
    ]
    print("strop: launching " + " ".join(command[1:]), flush=True)
    return subprocess.call(command)
