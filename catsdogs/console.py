"""What a person sees: results on stdout, progress and logs on stderr, lists kept short.

One place decides how chatty a command is, so every command follows the same rules (the
design's output discipline): `--quiet` (or CATSDOGS_QUIET=1) keeps only results and errors,
a stderr that is not a terminal gets plain lines (one per epoch, no colour or carriage
returns), NO_COLOR (https://no-color.org) turns colour off.
"""

import os
import sys

NAMED = 5  # files named per finding before "and N more"


def name_some(items, limit=NAMED, indent="      "):
    """Lines naming the first `limit` items, then "and N more": a summary that points at the
    files without burying the terminal (the full list goes to a file)."""
    lines = [f"{indent}{item}" for item in items[:limit]]
    if len(items) > limit:
        lines.append(f"{indent}and {len(items) - limit} more")
    return lines


def display(path):
    """A printable form of a path whose name may not be valid UTF-8."""
    return os.fsencode(path).decode("utf-8", "replace")


def is_terminal(stream=None):
    stream = stream or sys.stderr
    return hasattr(stream, "isatty") and stream.isatty()


def colour_allowed(stream=None):
    return is_terminal(stream) and not os.environ.get("NO_COLOR")
