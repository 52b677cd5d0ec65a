"""Architecture knowledge for GGUF export: which llama.cpp arch an HF model maps to, its hparams,
and how its tensors are renamed and reordered.

The one non-obvious transform is the q/k permutation for the llama arch. HF Llama applies rotary
embeddings "rotate-half" style: within each head, dimension i is rotated together with dimension
i + head_dim/2. llama.cpp's llama arch rotates *adjacent* pairs (2i, 2i+1), the layout of the
original Meta checkpoints. So the output rows of q_proj/k_proj must be reordered per head: view the
rows as (heads, 2, head_dim/2) = (head, half, i) and swap the last two axes, so that HF row
half*(head_dim/2) + i lands at 2*i + half. Qwen2 uses llama.cpp's NEOX rope (rotate-half too), so its
weights are written unchanged.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from strop.errors import StropError


@dataclass(frozen=True)
class ArchSpec:
    """How one HF architecture class maps onto a llama.cpp architecture."""

    arch: gguf.MODEL_ARCH
    permute_qk: bool
    # llama.cpp's MoE graph for the arch: whether it renormalises the top-k routing weights (hard-coded
    # per arch there, so the HF config's `norm_topk_prob` must agree), and whether it can do without an
    # output matrix (falling back to token_embd) when the embeddings are tied
    norm_topk: bool | None = None
    output_optional: bool = True


ARCHITECTURES: dict[str, ArchSpec] = {
    "LlamaForCausalLM": ArchSpec(gguf.MODEL_ARCH.LLAMA, permute_qk=True),
    "MistralForCausalLM": ArchSpec(gguf.MODEL_ARCH.LLAMA, permute_qk=True),
    # llama.cpp runs Mixtral as the llama arch with expert_count set and stacked expert tensors
    "MixtralForCausalLM": ArchSpec(gguf.MODEL_ARCH.LLAMA, permute_qk=True),
    "Qwen2ForCausalLM": ArchSpec(gguf.MODEL_ARCH.QWEN2, permute_qk=False),
    # the MoE families below use llama.cpp's NEOX rope (rotate-half, as HF): weights unpermuted
    "Qwen2MoeForCausalLM": ArchSpec(gguf.MODEL_ARCH.QWEN2MOE, permute_qk=False, norm_topk=False, output_optional=False),
    "Qwen3MoeForCausalLM": ArchSpec(gguf.MODEL_ARCH.QWEN3MOE, permute_qk=False, norm_topk=True),
    "OlmoeForCausalLM": ArchSpec(gguf.MODEL_ARCH.OLMOE, permute_qk=False, norm_topk=False, output_optional=False),
}


def load_config(model_dir: Path) -> dict[str, Any]:
    """config.json as a dict: read directly so export does not depend on transformers' config classes."""
    path = model_dir / "config.json"
    if not path.is_file():
        if (model_dir / "adapter_config.json").is_file():
            raise StropError(
                f"{model_dir} is a LoRA adapter, not a model: merge it into its base first "
                f"(strop merge-lora --adapter {model_dir} --base BASE --out MERGED), then export MERGED"
            )
        raise StropError(f"{model_dir} is not a Hugging Face model folder (no config.json)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise StropError(f"{path}: not valid JSON ({err})") from err


def arch_spec(config: dict[str, Any]) -> ArchSpec:
    """The ArchSpec for a config, or a StropError naming the supported architectures."""
    names = config.get("architectures") or []
    for name in names:
        if name in ARCHITECTURES:
            check_moe_config(config, ARCHITECTURES[name])
            return ARCHITECTURES[name]
    supported = ", ".join(sorted(ARCHITECTURES))
    raise StropError(
        f"cannot export architecture {names or config.get('model_type')!r} to GGUF; supported: {supported}"
    )


def expert_count(config: dict[str, Any]) -> int:
    """Routed experts per MoE layer (Mixtral's `num_local_experts`, the others' `num_experts`); 0 if dense."""
    return int(config.get("num_local_experts") or config.get("num_experts") or 0)


def check_moe_config(config: dict[str, Any], spec: ArchSpec) -> None:
    """Refuse MoE configs whose forward llama.cpp's graph for the arch would compute differently."""
    if spec.norm_topk is None:
        return
    arch = gguf.MODEL_ARCH_NAMES[spec.arch]
    if bool(config.get("norm_topk_prob", False)) != spec.norm_topk:
        raise StropError(
            f"cannot export to GGUF arch {arch}: config.json has norm_topk_prob="
            f"{config.get('norm_topk_prob', False)}, but llama.cpp's {arch} "
            f"{'always' if spec.norm_topk else 'never'} renormalises the top-k routing weights"
        )
    if config.get("mlp_only_layers") or int(config.get("decoder_sparse_step", 1)) != 1:
        raise StropError(
            f"cannot export to GGUF arch {arch}: some layers are dense (mlp_only_layers / decoder_sparse_step "
            f"in config.json), and llama.cpp's {arch} expects experts in every layer"
        )
    n_kv = config.get("num_key_value_heads") or config["num_attention_heads"]
    if spec.arch == gguf.MODEL_ARCH.OLMOE and n_kv != config["num_attention_heads"]:
        raise StropError(
            f"cannot export to GGUF arch {arch}: num_key_value_heads={n_kv} differs from num_attention_heads="
            f"{config['num_attention_heads']}, and llama.cpp's olmoe sizes its k-norm for full multi-head attention"
        )


def rope_params(config: dict[str, Any]) -> dict[str, Any]:
    """Rope settings from either transformers 5 (`rope_parameters`) or 4.x (`rope_theta`, `rope_scaling`)."""
    params = dict(config.get("rope_scaling") or {})
    params.update(config.get("rope_parameters") or {})
    params.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    params.setdefault("rope_type", params.get("type", "default"))
    return params


def head_dim(config: dict[str, Any]) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def write_hparams(writer: gguf.GGUFWriter, config: dict[str, Any], vocab_size: int) -> None:
    """The `<arch>.*` keys llama.cpp needs to build the compute graph."""
    n_head = int(config["num_attention_heads"])
    dim = head_dim(config)
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or n_head))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    if expert_count(config):
        writer.add_expert_count(expert_count(config))
        writer.add_expert_used_count(int(config["num_experts_per_tok"]))
        if config.get("moe_intermediate_size"):  # Qwen-MoE; Mixtral and OLMoE size experts by intermediate_size
            writer.add_expert_feed_forward_length(int(config["moe_intermediate_size"]))
        if config.get("shared_expert_intermediate_size"):
            writer.add_expert_shared_feed_forward_length(int(config["shared_expert_intermediate_size"]))
    writer.add_vocab_size(vocab_size)
    writer.add_rope_dimension_count(dim)
    writer.add_key_length(dim)  # llama.cpp's default is hidden_size / n_head; explicit like its converter's output
    writer.add_value_length(dim)
    rope = rope_params(config)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    kind = rope["rope_type"]
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif kind == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(rope["factor"]))
        orig = rope.get("original_max_position_embeddings") or config.get("max_position_embeddings")
        writer.add_rope_scaling_orig_ctx_len(int(orig))  # type: ignore[arg-type]
    elif kind not in ("default", "llama3"):
        raise StropError(f"rope scaling type {kind!r} is not supported by strop's GGUF export")


def llama3_rope_freqs(config: dict[str, Any]) -> np.ndarray | None:
    """Per-frequency divisors for Llama-3.1-style rope scaling, which llama.cpp reads from a
    `rope_freqs` tensor: high frequencies are kept, low ones divided by `factor`, and the band in
    between interpolated smoothly (the same rule transformers applies when it builds inv_freq)."""
    rope = rope_params(config)
    if rope["rope_type"] != "llama3":
        return None
    dim = head_dim(config)
    factor = float(rope["factor"])
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old_ctx = float(rope.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    divisors = []
    for i in range(0, dim, 2):
        freq = 1.0 / (float(rope["rope_theta"]) ** (i / dim))
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            divisors.append(1.0)
        elif wavelen > low_wavelen:
            divisors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            divisors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(divisors, dtype=np.float32)


def permute_rope_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder q/k projection rows (or biases) from HF rotate-half layout to llama.cpp's
    adjacent-pair layout; see the module docstring for the derivation."""
    rows = weight.shape[0]
    if rows % (2 * n_heads):
        raise StropError(f"cannot permute a q/k tensor of {rows} rows for {n_heads} heads")
    rest = weight.shape[1:]
    grouped = weight.reshape(n_heads, 2, rows // n_heads // 2, *rest)
    return np.ascontiguousarray(grouped.swapaxes(1, 2).reshape(weight.shape))


def _safetensor_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return [model_dir / name for name in sorted(set(weight_map.values()))]
    files = sorted(model_dir.glob("*.safetensors"))
    files = [f for f in files if not f.name.startswith("adapter_")]
    if not files:
        raise StropError(f"{model_dir} has no *.safetensors weights; save the model with save_pretrained first")
    return files


def hf_tensor_names(model_dir: Path) -> list[str]:
    """All tensor names in the checkpoint, in file order, so progress can be sized up front."""
    from safetensors import safe_open

    names = []
    for path in _safetensor_files(model_dir):
        with safe_open(str(path), framework="pt") as f:
            names.extend(f.keys())
    return names


def iter_hf_tensors(model_dir: Path) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (name, float32 array) one tensor at a time; torch reads bf16, which numpy cannot."""
    import torch
    from safetensors import safe_open

    for path in _safetensor_files(model_dir):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                yield name, f.get_tensor(name).to(torch.float32).numpy()


# one expert's projection, per expert: Mixtral's w1/w2/w3, the others' gate/up/down_proj
_EXPERT = re.compile(r"^(.*\.(?:block_sparse_moe|mlp))\.experts\.(\d+)\.(w[123]|gate_proj|up_proj|down_proj)\.weight$")
# a layer's experts fused into 3-D parameters (transformers 5's in-memory layout, E × 2f × h and E × h × f)
_FUSED = re.compile(r"^(.*\.mlp\.experts)\.(gate_up_proj|down_proj)(?:\.weight)?$")


class TensorMapper:
    """Renames HF tensors to GGUF names and applies the arch's q/k reordering."""

    def __init__(self, config: dict[str, Any], spec: ArchSpec) -> None:
        self.config = config
        self.spec = spec
        self.names = gguf.get_tensor_name_map(spec.arch, int(config["num_hidden_layers"]))
        self.tied = bool(config.get("tie_word_embeddings", False))
        self.n_head = int(config["num_attention_heads"])
        self.n_kv_head = int(config.get("num_key_value_heads") or self.n_head)

        self.n_experts = expert_count(config)
        self.pending: dict[str, dict[int, np.ndarray]] = {}

    def _stack_expert(self, hf_name: str, data: np.ndarray) -> tuple[str, np.ndarray | None]:
        """Mixtral's per-expert `...experts.{e}.w{1,2,3}.weight` are gathered into llama.cpp's one
        E × out × in tensor per layer and projection: (merged HF name, stack once all E have arrived)."""
        head, expert, tail = _EXPERT.match(hf_name).groups()
        merged = f"{head}.experts.{tail}.weight"
        group = self.pending.setdefault(merged, {})
        group[int(expert)] = data
        if len(group) < self.n_experts:
            return merged, None
        del self.pending[merged]
        return merged, np.stack([group[e] for e in range(self.n_experts)])

    def map(self, hf_name: str, data: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """The (gguf name, data) pairs a tensor becomes: none for tensors llama.cpp does not use (and for
        expert weights held until their layer's set is complete), two for a fused gate_up_proj, and the
        embeddings once more as the output matrix for a tied model whose arch requires one."""
        if hf_name.endswith("rotary_emb.inv_freq"):
            return []
        if self.n_experts and _EXPERT.match(hf_name):
            hf_name, stacked = self._stack_expert(hf_name, data)
            if stacked is None:
                return []
            data = stacked
        fused = _FUSED.match(hf_name) if self.n_experts else None
        if fused and fused.group(2) == "gate_up_proj":
            half = data.shape[1] // 2  # rows [0, f) are the gate, [f, 2f) the up projection
            return [
                self._one(f"{fused.group(1)}.gate_proj.weight", np.ascontiguousarray(data[:, :half])),
                self._one(f"{fused.group(1)}.up_proj.weight", np.ascontiguousarray(data[:, half:])),
            ]
        if fused:
            hf_name = f"{fused.group(1)}.down_proj.weight"
        if self.tied and hf_name == "lm_head.weight":
            return []  # written from the embeddings below where the arch needs it; else llama.cpp falls back
        mapped = [self._one(hf_name, data)]
        if self.tied and not self.spec.output_optional and mapped[0][0] == "token_embd.weight":
            mapped.append(("output.weight", data))
        return mapped

    def _one(self, hf_name: str, data: np.ndarray) -> tuple[str, np.ndarray]:
        name = self.names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise StropError(
                f"tensor {hf_name!r} has no GGUF equivalent for arch {gguf.MODEL_ARCH_NAMES[self.spec.arch]}"
            )
        if self.spec.permute_qk:
            if ".attn_q." in name:
                data = permute_rope_rows(data, self.n_head)
            elif ".attn_k." in name:
                data = permute_rope_rows(data, self.n_kv_head)
        return name, data
