"""`python -m catsdogs.serve`: the same as `catsdogs serve` (catsdogs/commands/serve.py).

serve/ is a package, so its `python -m` entry is this file rather than a shim module."""

import sys

from catsdogs.cli import run

raise SystemExit(run("serve", sys.argv[1:]))
