"""`python -m catsdogs.tune`: the same as `catsdogs tune` (catsdogs/commands/tune.py)."""

from catsdogs.cli import shim

shim(__name__, "tune")
