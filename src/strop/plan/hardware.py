"""The hardware `strop plan` plans for: `--gpu "1x RTX 4090"`, `"2x A100 80GB"`, `"H200"`, `"24GB"` or `cpu`.

Memory is per device: strop's single-GPU memory model (strop estimate) is what must fit; more GPUs make
it faster (data parallel), not bigger. bf16 marks the GPUs whose tensor cores run bfloat16 (Ampere and
later); older ones train under fp16 autocast with loss scaling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from strop.errors import StropError

#: name → (GiB of memory, bf16). Keys are matched after lower-casing and dropping spaces and dashes.
GPUS: dict[str, tuple[float, bool]] = {
    "rtx3060": (12, True),
    "rtx3080": (10, True),
    "rtx3090": (24, True),
    "rtx4060ti": (16, True),
    "rtx4070": (12, True),
    "rtx4080": (16, True),
    "rtx4090": (24, True),
    "rtx5090": (32, True),
    "t4": (16, False),
    "v100": (16, False),
    "v10032gb": (32, False),
    "a10": (24, True),
    "a10g": (24, True),
    "l4": (24, True),
    "l40s": (48, True),
    "a6000": (48, True),
    "a100": (80, True),
    "a10040gb": (40, True),
    "a10080gb": (80, True),
    "h100": (80, True),
    "h200": (141, True),
    "b200": (180, True),
}
#: Share of a GPU's memory a plan may fill, after the CUDA context (about 0.5 GiB, see strop estimate):
#: allocator fragmentation and the odd longer batch need the rest.
USABLE_SHARE = 0.9
CUDA_CONTEXT_GIB = 0.5


@dataclass(frozen=True)
class Hardware:
    name: str  # the table's key, or "cpu", or "custom"
    count: int
    memory_gib: float  # per device
    bf16: bool

    @property
    def cpu(self) -> bool:
        return self.name == "cpu"

    @property
    def budget_gib(self) -> float:
        """What a training process may use on one device."""
        if self.cpu:
            return self.memory_gib * USABLE_SHARE
        return self.memory_gib * USABLE_SHARE - CUDA_CONTEXT_GIB

    def describe(self) -> str:
        if self.cpu:
            return f"CPU ({self.memory_gib:.0f} GiB RAM)"
        return f"{self.count}× {self.name} ({self.memory_gib:g} GiB{', bf16' if self.bf16 else ', fp16'})"


def _ram_gib() -> float:
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3


def parse_gpu(text: str) -> Hardware:
    """`[Nx] NAME [MEMORY GB]`, `[Nx] MEMORY GB` or `cpu`; NAME from GPUS (RTX/GeForce/NVIDIA prefixes ok)."""
    spec = text.strip().lower()
    if spec == "cpu":
        return Hardware("cpu", 1, _ram_gib(), False)
    match = re.fullmatch(r"(?:(\d+)\s*[x×]\s*)?(.*)", spec)
    count, rest = int(match.group(1) or 1), match.group(2)
    key = re.sub(r"[\s\-_]|nvidia|geforce", "", rest)
    if key in GPUS:
        memory, bf16 = GPUS[key]
        return Hardware(key, count, memory, bf16)
    custom = re.fullmatch(r"(\d+(?:\.\d+)?)gi?b", key)
    if custom and count > 0:
        return Hardware("custom", count, float(custom.group(1)), True)
    raise StropError(
        f"--gpu: unknown GPU '{text}'; use cpu, a memory size such as '24GB', or one of: " + ", ".join(sorted(GPUS))
    )
