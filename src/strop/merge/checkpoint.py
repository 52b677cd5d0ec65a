"""Streaming access to HF model folders: read one tensor at a time, write shards incrementally.

Merging several multi-gigabyte models must not load any of them whole. Reading opens the right
safetensors file for just one tensor (the file is memory-mapped and closed again, so its pages do not
pile up in the resident set). Writing plans the whole shard layout up front from the tensor shapes,
which every model shares, so each shard's safetensors header can be written first and each merged
tensor appended as soon as it is computed: peak memory is a few tensors, never a shard.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from safetensors import safe_open

from strop.errors import StropError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

ST_TO_TORCH: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
TORCH_TO_ST = {v: k for k, v in ST_TO_TORCH.items()}


@dataclass(frozen=True)
class TensorSpec:
    """Shape and on-disk dtype of one tensor: what must agree across the merged models."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def torch_dtype(self) -> torch.dtype:
        if self.dtype not in ST_TO_TORCH:
            raise StropError(f"unsupported safetensors dtype {self.dtype}")
        return ST_TO_TORCH[self.dtype]


class Checkpoint:
    """A local HF model folder: its config and where each tensor lives, without loading any."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_dir():
            raise StropError(f"model folder not found: {path} (strop merge needs local HF model folders)")
        config_file = path / "config.json"
        if not config_file.is_file():
            raise StropError(f"{path} has no config.json; is it a Hugging Face model folder?")
        try:
            self.config: dict = json.loads(config_file.read_text())
        except json.JSONDecodeError as err:
            raise StropError(f"{config_file} is not valid JSON: {err}") from None
        self.files = self._weight_files()
        self.specs: dict[str, TensorSpec] = {}
        self.location: dict[str, Path] = {}
        for file in self.files:
            self._read_header(file)

    def _read_header(self, file: Path) -> None:
        """Record every tensor's shape, dtype and file from the safetensors header alone."""
        try:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 - a safe_open handle, not a dict
                    piece = handle.get_slice(name)
                    self.specs[name] = TensorSpec(tuple(piece.get_shape()), piece.get_dtype())
                    self.location[name] = file
        except Exception as err:  # safetensors raises its own error types for corrupt files
            raise StropError(f"cannot read {file}: {err}") from None

    def _weight_files(self) -> list[Path]:
        """The safetensors files, from the index when the checkpoint is sharded."""
        index = self.path / INDEX_FILE
        if index.is_file():
            weight_map: dict[str, str] = json.loads(index.read_text()).get("weight_map", {})
            files = sorted({self.path / f for f in weight_map.values()})
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise StropError(f"{self.path}: shards listed in {INDEX_FILE} are missing: {', '.join(missing)}")
            return files
        if (self.path / SINGLE_FILE).is_file():
            return [self.path / SINGLE_FILE]
        if any(self.path.glob("*.bin")):
            raise StropError(f"{self.path} has only PyTorch .bin weights; re-save it with safe_serialization")
        raise StropError(f"{self.path} has no {SINGLE_FILE} or {INDEX_FILE}")

    def read(self, name: str) -> torch.Tensor:
        """Load one tensor; the file handle (and its mapping) is dropped straight after."""
        with safe_open(str(self.location[name]), framework="pt") as handle:
            return handle.get_tensor(name)


@dataclass
class PlannedTensor:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count * torch.empty((), dtype=self.dtype).element_size()


def plan_shards(tensors: list[PlannedTensor], max_shard_bytes: int) -> list[list[PlannedTensor]]:
    """Split tensors, in order, into shards of at most max_shard_bytes (a bigger tensor gets its own)."""
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards


class ShardWriter:
    """Write planned shards tensor by tensor, then the index: HF's sharded layout, streamed."""

    def __init__(self, folder: Path, tensors: list[PlannedTensor], max_shard_bytes: int) -> None:
        self.folder = folder
        self.shards = plan_shards(tensors, max_shard_bytes)
        count = len(self.shards)
        self.names = (
            [SINGLE_FILE] if count == 1 else [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
        )
        self.order = [(s, t) for s, shard in enumerate(self.shards) for t in shard]
        self.position = 0
        self.handle: BinaryIO | None = None

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append the next tensor; it must be the next one in the planned order, shape and dtype."""
        shard_index, planned = self.order[self.position]
        if planned.name != name or tuple(tensor.shape) != planned.shape or tensor.dtype != planned.dtype:
            raise RuntimeError(f"tensor {name} {tuple(tensor.shape)} {tensor.dtype} does not match plan {planned}")
        if self.position == 0 or self.order[self.position - 1][0] != shard_index:
            self._open_shard(shard_index)
        assert self.handle is not None
        data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
        self.handle.write(memoryview(data))  # type: ignore[arg-type]
        self.position += 1

    def _open_shard(self, index: int) -> None:
        """Close the previous shard and start the next with its complete header."""
        self.close()
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for tensor in self.shards[index]:
            header[tensor.name] = {
                "dtype": TORCH_TO_ST[tensor.dtype],
                "shape": list(tensor.shape),
                "data_offsets": [offset, offset + tensor.nbytes],
            }
            offset += tensor.nbytes
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)
        self.handle = open(self.folder / self.names[index], "wb")  # noqa: SIM115 - closed in close()
        self.handle.write(struct.pack("<Q", len(encoded)))
        self.handle.write(encoded)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def finish(self) -> list[Path]:
        """Close the last shard and write the index when sharded; returns the files written."""
        self.close()
        if self.position != len(self.order):
            raise RuntimeError(f"only {self.position} of {len(self.order)} planned tensors were written")
        if len(self.shards) > 1:
            weight_map = {t.name: self.names[s] for s, t in self.order}
            total = sum(t.nbytes for _, t in self.order)
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (self.folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        return [self.folder / n for n in self.names]
