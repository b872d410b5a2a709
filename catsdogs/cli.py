"""The `catsdogs` command: one entry point, a sub-command per stage function.

    catsdogs train --data my_photos
    catsdogs predict RUN_DIR photos/
    catsdogs --help | --version

Each sub-command lives in `catsdogs.commands.<name>` (its flags, its `main`); this module only
finds it, so `catsdogs --help` loads neither Keras nor TensorFlow. `python -m catsdogs.<name>`
and `python -m catsdogs <name>` reach the same `main`.
"""

import difflib
import importlib
import sys

from catsdogs.errors import CatsDogsError, report

# name -> module under catsdogs.commands; the module docstring's first line is the help line
COMMANDS = ("train", "predict", "evaluate", "calibrate", "export", "serve", "doctor",
            "download", "weights", "distill", "prune", "ensemble", "cache", "tune")


def _summary(name):
    return (importlib.import_module(f"catsdogs.commands.{name}").__doc__ or "").splitlines()[0]


def usage():
    """The text of `catsdogs --help`: every command with its one line."""
    width = max(map(len, COMMANDS)) + 2
    lines = ["usage: catsdogs COMMAND [flags]   (catsdogs COMMAND --help: its flags)", "",
             "Train, evaluate, export and use CNN image classifiers.", "", "commands:"]
    lines += [f"  {name:<{width}}{_summary(name)}" for name in COMMANDS]
    lines += ["", "  --version", "  --help"]
    return "\n".join(lines)


def run(name, argv):
    """Run command `name` with its own arguments; returns the exit code."""
    return importlib.import_module(f"catsdogs.commands.{name}").main(argv)


def main(argv=None):
    """`catsdogs [--help | --version | COMMAND ...]`; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # a script's empty variable, say: the list, and a failure it can see
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        from catsdogs import __version__

        print(f"catsdogs {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        match = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        return report(CatsDogsError(f"unknown command {argv[0]!r}", where="catsdogs",
                                    fix=f"did you mean {match[0]!r}?" if match
                                    else f"one of {', '.join(COMMANDS)}"))
    return run(argv[0], argv[1:])


def shim(module_name, name):
    """The body of `catsdogs/<name>.py`, which exists so that `python -m catsdogs.<name>` keeps
    working: run as a script, it runs the command and exits. Imported, it would hide the
    package's API function of the same name (`catsdogs.train`, `catsdogs.export`) behind the
    module, so the import is refused, saying where to look instead."""
    if module_name != "__main__":
        raise ImportError(f"catsdogs.{name} only serves 'python -m catsdogs.{name}'; import "
                          f"catsdogs.commands.{name} for the command's main(), or call the "
                          f"API (catsdogs.train, catsdogs.load, ...)")
    raise SystemExit(run(name, sys.argv[1:]))
