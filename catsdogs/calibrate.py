"""`python -m catsdogs.calibrate`: the same as `catsdogs calibrate` (catsdogs/commands/calibrate.py)."""

from catsdogs.cli import shim

shim(__name__, "calibrate")
