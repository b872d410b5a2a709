"""`python -m catsdogs.distill`: the same as `catsdogs distill` (catsdogs/commands/distill.py)."""

from catsdogs.cli import shim

shim(__name__, "distill")
