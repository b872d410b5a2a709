"""One exception type for problems the user can fix, and the one place that prints it.

Every command raises `CatsDogsError` where it finds the problem and catches it once in its
`main()`, which prints a single line `error: <what> (<where>): <how to fix>` and exits 2.
"""

import sys

USER_ERROR_EXIT_CODE = 2


class CatsDogsError(Exception):
    """A problem in the user's input: a flag, a folder, a file. Carries a one-line message."""

    def __init__(self, what, where=None, fix=None):
        self.what, self.where, self.fix = what, where, fix
        parts = [what]
        if where is not None:
            parts.append(f" ({where})")
        if fix:
            parts.append(f": {fix}")
        super().__init__("".join(parts))


def report(error, stream=None):
    """Print `error` as one `error: ...` line and return the exit code for user errors."""
    message = " ".join(str(error).split())  # one line, whatever the message held
    print(f"error: {message}", file=stream or sys.stderr)
    return USER_ERROR_EXIT_CODE


def run_command(body):
    """Run a command's body; a CatsDogsError becomes one `error:` line and exit code 2.

    Every `main()` ends here, so the rule is written once.
    """
    try:
        return body() or 0
    except CatsDogsError as error:
        return report(error)
