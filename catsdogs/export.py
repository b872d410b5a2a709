"""`python -m catsdogs.export`: the same as `catsdogs export` (catsdogs/commands/export.py)."""

from catsdogs.cli import shim

shim(__name__, "export")
