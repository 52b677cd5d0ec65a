"""strop: one tool for the whole LLM post-training stack."""

__version__ = "0.1.0"
