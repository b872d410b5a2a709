"""`python -m catsdogs.evaluate`: the same as `catsdogs evaluate` (catsdogs/commands/evaluate.py)."""

from catsdogs.cli import shim

shim(__name__, "evaluate")
