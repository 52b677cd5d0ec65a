"""strop: one tool for the whole LLM post-training stack.

Library use (strop/api.py): `strop.train(config_or_dict, **overrides)` → TrainResult(output_dir, metrics),
`strop.load_config(config_or_dict, **overrides)` → (config, base folder).

`strop.train` is also the training package (`import strop.train.loop`), and importing a submodule rebinds
a package's attribute of that name, so a plain function named `train` here would be replaced by the
package on the first such import. The package's module class is given a `__call__` instead, which keeps
both working.
"""

import types

from strop import train as _train_package

__version__ = "0.1.0"


class _CallablePackage(types.ModuleType):
    def __call__(self, config, **kwargs):
        from strop.api import train

        return train(config, **kwargs)


_train_package.__class__ = _CallablePackage


def load_config(config, **overrides):
    """Validate a YAML path or a dict of config keys; returns (config, the folder paths resolve against)."""
    from strop.api import load_config as load

    return load(config, **overrides)
