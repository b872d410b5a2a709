"""`python -m catsdogs.cache`: the same as `catsdogs cache` (catsdogs/commands/cache.py)."""

from catsdogs.cli import shim

shim(__name__, "cache")
