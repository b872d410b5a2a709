"""`python -m catsdogs.predict`: the same as `catsdogs predict` (catsdogs/commands/predict.py)."""

from catsdogs.cli import shim

shim(__name__, "predict")
