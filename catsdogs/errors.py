"""The exceptions a user sees, and the one place that turns them into a line and an exit code.

Every command raises `CatsDogsError` where it finds the problem; `run_command` (which every
command's `main()` ends in) prints a single line `error: <what> (<where>): <how to fix>` and
returns the exit code. Exit codes (docs/errors.md):

    0    success
    1    the run failed (a NaN loss, no image could be classified), or an internal error
    2    a usage or settings error: a bad flag, a missing folder, a run folder in use
    130  interrupted (Ctrl-C)

Anything else that escapes a command is a bug or an environment failure: one line
`error: internal: ...` and exit 1; CATSDOGS_DEBUG=1 shows the traceback instead.
"""

import os
import sys

USER_ERROR_EXIT_CODE = 2
RUN_FAILED_EXIT_CODE = 1
INTERRUPTED_EXIT_CODE = 130
DEBUG_VARIABLE = "CATSDOGS_DEBUG"


class CatsDogsError(Exception):
    """A problem in the user's input: a flag, a folder, a file. Carries a one-line message."""

    exit_code = USER_ERROR_EXIT_CODE

    def __init__(self, what, where=None, fix=None):
        self.what, self.where, self.fix = what, where, fix
        parts = [what]
        if where is not None:
            parts.append(f" ({where})")
        if fix:
            parts.append(f": {fix}")
        super().__init__("".join(parts))


class RunFailed(CatsDogsError):
    """The input was fine but the work did not succeed (a loss that became NaN, nothing that
    could be classified): exit code 1, so scripts can tell it from a mistyped flag."""

    exit_code = RUN_FAILED_EXIT_CODE


def debugging():
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def one_line(text):
    return " ".join(str(text).split())


def report(error, stream=None):
    """Print `error` as one `error: ...` line and return its exit code."""
    print(f"error: {one_line(error)}", file=stream or sys.stderr)
    return getattr(error, "exit_code", USER_ERROR_EXIT_CODE)


def run_command(parser, argv, body, interrupted_hint=None):
    """Parse `argv` with `parser`, set up the console (--quiet, --verbose), run `body(args)`
    and return the exit code: 0, or one line and the code above.

    Every command's `main()` is this call, so the rules are written once.
    """
    from catsdogs import console

    try:
        args = parser.parse_args(argv)
        console.setup(quiet=args.quiet, verbose=args.verbose)
        return body(args) or 0
    except CatsDogsError as error:
        return report(error)
    except KeyboardInterrupt:
        print(f"\ninterrupted{': ' + interrupted_hint if interrupted_hint else ''}",
              file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except Exception as error:
        if debugging():
            raise
        print(f"error: internal: {type(error).__name__}: {one_line(error)} (a bug, or a "
              f"problem of this machine; {DEBUG_VARIABLE}=1 shows the traceback)",
              file=sys.stderr)
        return RUN_FAILED_EXIT_CODE


def command_main(build_parser, body, interrupted_hint=None):
    """The `main(argv=None) -> exit code` of a command module: its parser, its body, and the
    rules of `run_command`."""
    def main(argv=None):
        return run_command(build_parser(), argv, body, interrupted_hint)

    main.__doc__ = "Run the command with `argv` (default: sys.argv[1:]); returns its exit code."
    return main
