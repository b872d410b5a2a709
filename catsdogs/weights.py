"""`python -m catsdogs.weights`: the same as `catsdogs weights` (catsdogs/commands/weights.py)."""

from catsdogs.cli import shim

shim(__name__, "weights")
