"""`python -m catsdogs.train`: the same as `catsdogs train` (catsdogs/commands/train.py)."""

from catsdogs.cli import shim

shim(__name__, "train")
