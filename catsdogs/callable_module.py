"""Lets a command module double as the API function of the same name.

`catsdogs.train` is both `python -m catsdogs.train` and `catsdogs.train(config)`: importing the
submodule (as `python -m` and tests do) rebinds the package attribute to the module, so the
module itself must be callable as the function.
"""

import sys


def make_callable(module_name, function):
    """Make `sys.modules[module_name]` call `function` when called."""

    class CallableModule(type(sys)):
        def __call__(self, *args, **kwargs):
            return function(*args, **kwargs)

    sys.modules[module_name].__class__ = CallableModule
