"""Helpers shared by the export tests: run the same token ids through transformers and llama.cpp.

Token ids (not text) go into both runtimes, so a tokenizer difference cannot hide or fake a model
difference; tokenization is compared separately.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

#: llama.cpp's own HF → GGUF converter, fetched by `make test` (tools/fetch_llamacpp_converter.py).
CONVERTER_DIR = Path(os.environ.get("STROP_LLAMACPP_CONVERTER", Path(sys.prefix) / "llama.cpp"))
CONVERTER = CONVERTER_DIR / "convert_hf_to_gguf.py"


def field_value(field):
    """A GGUF metadata field as plain Python: strings decoded, arrays as lists."""
    import gguf

    kind = field.types[0]
    if kind == gguf.GGUFValueType.ARRAY:
        items = [field.parts[i] for i in field.data]
        if field.types[1] == gguf.GGUFValueType.STRING:
            return [bytes(item).decode() for item in items]
        return [item.tolist()[0] for item in items]
    if kind == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode()
    return field.parts[field.data[0]].tolist()[0]


def read_gguf(path: Path):
    """(metadata fields, {tensor name: (type, shape, data)}) of a GGUF file."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    fields = {name: field_value(field) for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    tensors = {t.name: (t.tensor_type.name, tuple(int(n) for n in t.shape), np.asarray(t.data)) for t in reader.tensors}
    return fields, tensors


def load_llama(path: Path, n_ctx: int = 512):
    from llama_cpp import Llama

    # f32 KV cache (llama.cpp defaults to f16), so that an f32 export can be compared tightly
    return Llama(
        model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False, n_threads=2, seed=0, type_k=0, type_v=0
    )


def llama_logits(llm, ids: list[int]) -> np.ndarray:
    """Logits at every position for `ids` (teacher forcing)."""
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def llama_greedy(llm, ids: list[int], n: int, stop: set[int] = frozenset()) -> list[int]:
    llm.reset()
    llm.eval(ids)
    out: list[int] = []
    for _ in range(n):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        if nxt in stop:
            break
        llm.eval([nxt])
    return out


def hf_logits(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def hf_greedy(model, ids: list[int], n: int, stop: set[int] = frozenset()) -> list[int]:
    import torch

    out: list[int] = []
    with torch.no_grad():
        res = model(torch.tensor([ids]), use_cache=True)
        for _ in range(n):
            nxt = int(res.logits[0, -1].argmax())
            out.append(nxt)
            if nxt in stop:
                break
            res = model(torch.tensor([[nxt]]), past_key_values=res.past_key_values, use_cache=True)
    return out


def argmax_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of positions where two logit matrices pick the same next token."""
    return float(np.mean(a.argmax(-1) == b.argmax(-1)))


HELD_OUT_TEXT = (
    "The river town woke slowly. Fishermen pulled their boats onto the gravel, and the baker opened "
    "the shutters while the smell of bread drifted across the square. Children ran to school past the "
    "old stone bridge, which had stood for three hundred years and survived two floods. In the library, "
    "the keeper sorted letters from travellers who had passed through long ago; some wrote about the "
    "weather, others about the prices at the market, and one described a comet seen over the hills in "
    "the winter of 1811. Water boils at 100 degrees Celsius at sea level, and the capital of France is "
    "Paris. To make a simple salad, wash the lettuce, slice two tomatoes, add olive oil and a pinch of salt. "
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n"
    "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to make "
    "glucose and oxygen. It takes place mainly in the leaves, inside small structures called chloroplasts, "
    "which contain the green pigment chlorophyll. Without it, most life on Earth could not exist, because "
    "animals depend on plants for food and for the oxygen they breathe.\n\n"
    "Question: What are three benefits of regular exercise?\nAnswer: Regular exercise strengthens the heart, "
    "improves sleep and mood, and helps to keep a healthy weight. Even a short walk every day makes a difference.\n\n"
    "The meeting has been moved to Thursday at 3 pm. Please bring the quarterly report, the budget for the "
    "new office, and your ideas for the summer event. If you cannot attend, send your notes to Maria by Wednesday "
    "evening so that she can present them on your behalf. Thank you, and see you there.\n"
)
