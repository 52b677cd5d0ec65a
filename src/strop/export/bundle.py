"""A GGUF file and, beside it, an Ollama Modelfile: what `strop export` and a pipeline's export stage write."""

from __future__ import annotations

from pathlib import Path


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"


def default_gguf_path(model_dir: Path, qtype: str) -> Path:
    """`<model_dir>/<name>-<qtype>.gguf`: next to the weights it came from."""
    return model_dir / f"{model_dir.resolve().name}-{qtype}.gguf"


def export_model(
    model_dir: Path, qtype: str, out: Path | None = None, modelfile: bool = True, params: dict | None = None
):
    """GGUF of `model_dir` and, optionally, an Ollama Modelfile beside it: (ExportResult, Modelfile path)."""
    from strop.export.gguf_export import export_gguf_timed
    from strop.export.modelfile import write_modelfile

    result = export_gguf_timed(model_dir, out or default_gguf_path(model_dir, qtype.lower()), qtype)
    if not modelfile:
        return result, None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    template = tok.chat_template if isinstance(tok.chat_template, str) else None
    stops = [tok.eos_token] if tok.eos_token else []
    return result, write_modelfile(result.path, template, result.path.parent / "Modelfile", stops, params or {})
