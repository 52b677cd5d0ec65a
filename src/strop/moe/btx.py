"""Branch-Train-MiX (Sukhbaatar et al. 2024): E dense fine-tunes of one seed model become one MoE.

    expert e of layer l   = the feed-forward block (gate/up/down projections) of fine-tune e at layer l
    everything else       = the mean over the E fine-tunes (attention, norms, embeddings, LM head)
    router of layer l     = gate_mode "hidden": row e is the unit-norm mean hidden state entering layer l
                            over expert e's positive prompts (minus that of its negative prompts), read from
                            the seed model, so tokens that look like an expert's domain score it highest
                            (mergekit-moe's "hidden" mode); "random": N(0, 0.02²), left to router training

The output is a Mixtral checkpoint in its published per-expert layout (`block_sparse_moe.experts.{e}.w1/w2/w3`,
`block_sparse_moe.gate`), which transformers 4.x loads as is and 5.x fuses on load, as vLLM and llama.cpp's
converter read it. Seeds: Llama/Mistral-family dense models (Mixtral has their attention, without biases).
The config follows mergekit-moe's shape: base_model, gate_mode, experts_per_token, experts[].source_model,
positive_prompts, negative_prompts. Weights are held in memory, one fine-tune at a time plus the output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from strop.errors import StropError

SEED_TYPES = ("llama", "mistral")
FFN = {"gate_proj": "w1", "down_proj": "w2", "up_proj": "w3"}


class ExpertSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_model: str = Field(description="A dense fine-tune of base_model (local folder).")
    positive_prompts: list[str] = Field([], description="Prompts of this expert's domain (gate_mode hidden).")
    negative_prompts: list[str] = Field([], description="Prompts this expert should not take (gate_mode hidden).")


class BuildConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_model: str = Field(
        description="The seed model the experts were fine-tuned from (tokenizer, config, router prototypes)."
    )
    experts: list[ExpertSpec] = Field(min_length=2, description="The dense fine-tunes, one expert each.")
    gate_mode: Literal["hidden", "random"] = Field("hidden", description="Router initialisation.")
    experts_per_token: int = Field(2, ge=1, description="Top-k routing.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Output weight dtype.")
    router_aux_loss_coef: float = Field(
        0.02, ge=0, description="Written to the config: strop's default moe_aux_loss_coef."
    )


def load_build_config(path: Path) -> BuildConfig:
    if not path.is_file():
        raise StropError(f"moe build config not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        config = BuildConfig.model_validate(raw)
    except yaml.YAMLError as err:
        raise StropError(f"{path}: not valid YAML: {err}") from err
    except ValidationError as err:
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        raise StropError(f"{path}: invalid moe build config\n" + "\n".join(lines)) from err
    if config.experts_per_token > len(config.experts):
        raise StropError(f"{path}: experts_per_token {config.experts_per_token} > {len(config.experts)} experts")
    if config.gate_mode == "hidden":
        for index, expert in enumerate(config.experts):
            if not expert.positive_prompts:
                raise StropError(
                    f"{path}: experts[{index}].positive_prompts: needed for gate_mode hidden (or use random)"
                )
    base = path.resolve().parent
    for spec in [config, *config.experts]:
        for key in ("base_model", "source_model"):
            value = getattr(spec, key, None)
            if value and not Path(value).is_absolute() and (base / value).exists():
                setattr(spec, key, str(base / value))
    return config


def mixtral_config(seed_config, num_experts: int, top_k: int, aux_coef: float):
    """The seed's dimensions as a MixtralConfig (attention, RoPE, vocabulary, special tokens)."""
    from transformers import MixtralConfig

    if seed_config.model_type not in SEED_TYPES:
        raise StropError(
            f"moe build: base_model is {seed_config.model_type}; Branch-Train-MiX writes Mixtral, whose "
            f"layers match {', '.join(SEED_TYPES)} seeds"
        )
    if getattr(seed_config, "attention_bias", False) or getattr(seed_config, "mlp_bias", False):
        raise StropError("moe build: the seed has attention or MLP biases, which Mixtral lacks")
    allowed = set(MixtralConfig().to_dict())
    values = {
        k: v for k, v in seed_config.to_dict().items() if k in allowed and k not in ("model_type", "architectures")
    }
    values.update(
        num_local_experts=num_experts,
        num_experts_per_tok=top_k,
        router_aux_loss_coef=aux_coef,
        sliding_window=None,
        output_router_logits=False,
    )
    config = MixtralConfig(**values)
    config.architectures = ["MixtralForCausalLM"]
    return config


def _ffn_key(name: str) -> tuple[int, str] | None:
    """(layer, projection) for `model.layers.{l}.mlp.{gate,up,down}_proj.weight`, else None."""
    parts = name.split(".")
    if (
        len(parts) == 6
        and parts[:2] == ["model", "layers"]
        and parts[3] == "mlp"
        and parts[4] in FFN
        and parts[5] == "weight"
    ):
        return int(parts[2]), parts[4]
    return None


def combine(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Mixtral tensors (without routers) from E dense state dicts: FFNs as experts, the rest averaged."""
    out: dict[str, torch.Tensor] = {}
    reference = states[0]
    for name in reference:
        if any(name not in s or s[name].shape != reference[name].shape for s in states):
            raise StropError(f"moe build: the fine-tunes differ at {name}: they must share one seed architecture")
        key = _ffn_key(name)
        if key is None:
            out[name] = torch.stack([s[name].float() for s in states]).mean(dim=0)
            continue
        layer, projection = key
        for expert, state in enumerate(states):
            out[f"model.layers.{layer}.block_sparse_moe.experts.{expert}.{FFN[projection]}.weight"] = state[
                name
            ].clone()
    return out


@torch.no_grad()
def hidden_prototypes(model, tokenizer, prompts: list[str]) -> torch.Tensor:
    """(layers, h) mean over the prompts' tokens of the hidden state entering each decoder layer."""
    sums: torch.Tensor | None = None
    count = 0
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        states = model(input_ids=ids, output_hidden_states=True).hidden_states[:-1]  # inputs of layers 0..L-1
        layer_sums = torch.stack([s[0].float().sum(dim=0) for s in states])
        sums = layer_sums if sums is None else sums + layer_sums
        count += ids.shape[1]
    if sums is None:
        raise StropError("moe build: no prompts to take the hidden-state prototypes from")
    return sums / max(1, count)


def routers(config: BuildConfig, seed_model, tokenizer, layers: int, hidden: int) -> torch.Tensor:
    """(layers, E, h) router weights per gate_mode."""
    num_experts = len(config.experts)
    if config.gate_mode == "random":
        return torch.randn(layers, num_experts, hidden, generator=torch.Generator().manual_seed(0)) * 0.02
    rows = []
    for expert in config.experts:
        prototype = hidden_prototypes(seed_model, tokenizer, expert.positive_prompts)
        if expert.negative_prompts:
            prototype = prototype - hidden_prototypes(seed_model, tokenizer, expert.negative_prompts)
        rows.append(prototype / prototype.norm(dim=-1, keepdim=True).clamp(min=1e-6))
    return torch.stack(rows, dim=1)


def _load_dense(path: str):
    from transformers import AutoModelForCausalLM

    if not Path(path).is_dir():
        raise StropError(f"moe build: no such model folder: {path}")
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def build_moe(config: BuildConfig, out: Path, overwrite: bool = False) -> Path:
    """Write the Mixtral checkpoint of `config` to `out` (atomically: a private folder renamed into place)."""
    import shutil

    from rich.progress import Progress
    from safetensors.torch import save_file

    from strop.models import load_tokenizer
    from strop.safe_io import disk_errors, publish_folder, temp_folder

    if out.exists() and not overwrite:
        raise StropError(f"moe build: {out} exists; pass --overwrite to replace it")
    seed = _load_dense(config.base_model)
    tokenizer = load_tokenizer(config.base_model)
    moe_config = mixtral_config(seed.config, len(config.experts), config.experts_per_token, config.router_aux_loss_coef)
    states = []
    with Progress(transient=True) as progress:
        task = progress.add_task("reading fine-tunes", total=len(config.experts))
        for expert in config.experts:
            states.append({k: v.detach().clone() for k, v in _load_dense(expert.source_model).state_dict().items()})
            progress.advance(task)
    tensors = combine(states)
    del states
    gates = routers(config, seed, tokenizer, moe_config.num_hidden_layers, moe_config.hidden_size)
    for layer in range(moe_config.num_hidden_layers):
        tensors[f"model.layers.{layer}.block_sparse_moe.gate.weight"] = gates[layer]
    dtype = getattr(torch, config.dtype)
    tensors = {k: v.to(dtype).contiguous() for k, v in tensors.items()}
    moe_config.dtype = config.dtype
    with disk_errors(out), temp_folder(out) as tmp:
        moe_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        publish_folder(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.replace(out)
    return out
