"""`python -m catsdogs.prune`: the same as `catsdogs prune` (catsdogs/commands/prune.py)."""

from catsdogs.cli import shim

shim(__name__, "prune")
