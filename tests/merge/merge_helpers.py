"""Helpers for the merge tests: tiny random Llama checkpoints, state loading, config writing.

A uniquely named module (not conftest) so `import` cannot pick up another directory's conftest.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=256,
)


def make_model(folder: Path, seed: int, *, base: Path | None = None, noise: float = 0.02, **overrides) -> Path:
    """Save a tiny Llama: random from `seed`, or `base`'s weights plus seeded noise (a 'fine-tune')."""
    import transformers

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(**{**TINY, **overrides})
    model = transformers.AutoModelForCausalLM.from_config(config)
    if base is not None:
        state = load_state(base)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in state:
                    param.copy_(state[name] + noise * torch.randn(param.shape, generator=generator))
    model.save_pretrained(folder)
    return folder


def load_state(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a (possibly sharded) safetensors folder."""
    state: dict[str, torch.Tensor] = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        state.update(load_file(file))
    return state


def write_config(folder: Path, config: dict, name: str = "merge.yml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(json.loads(json.dumps(config, default=str))))
    return path
