"""`python -m catsdogs.ensemble`: the same as `catsdogs ensemble` (catsdogs/commands/ensemble.py)."""

from catsdogs.cli import shim

shim(__name__, "ensemble")
