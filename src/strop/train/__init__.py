"""Training: the loop, checkpoints, optimizers, schedules, tracking.

The package is also the library's entry point `strop.train(config, **overrides)` (strop/api.py): a
module cannot be a function, so the package's module class is given a `__call__`. That keeps both
`strop.train(...)` and `import strop.train.loop` working, which a plain function named `train` in
strop/__init__.py would not (importing a submodule rebinds the name).
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, config, **kwargs):
        from strop.api import train

        return train(config, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
