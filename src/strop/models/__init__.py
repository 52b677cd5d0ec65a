"""Model resolution and loading: hub ids, local folders, GGUF files and the embedded default."""

from strop.models.loading import DEFAULT_MODEL, eval_mode, load_adapter, load_model, load_tokenizer, resolve_model_path

__all__ = ["DEFAULT_MODEL", "eval_mode", "load_adapter", "load_model", "load_tokenizer", "resolve_model_path"]
