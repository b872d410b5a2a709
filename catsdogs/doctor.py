"""`python -m catsdogs.doctor`: the same as `catsdogs doctor` (catsdogs/commands/doctor.py)."""

from catsdogs.cli import shim

shim(__name__, "doctor")
