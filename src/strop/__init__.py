"""strop: one tool for the whole LLM post-training stack.

Library use (strop/api.py): `strop.train(config_or_dict, **overrides)` → TrainResult(output_dir, metrics),
`strop.load_config(config_or_dict, **overrides)` → (config, base folder).
"""

from strop import train  # noqa: F401 - the package is callable: strop.train(config) trains

__version__ = "0.1.0"


def load_config(config, **overrides):
    """Validate a YAML path or a dict of config keys; returns (config, the folder paths resolve against)."""
    from strop.api import load_config as load

    return load(config, **overrides)
