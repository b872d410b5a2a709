"""`python -m catsdogs COMMAND ...`: the same as the `catsdogs` command."""

from catsdogs.cli import main

raise SystemExit(main())
