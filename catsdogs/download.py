"""`python -m catsdogs.download`: the same as `catsdogs download` (catsdogs/commands/download.py)."""

from catsdogs.cli import shim

shim(__name__, "download")
