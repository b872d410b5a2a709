"""The exceptions a user sees, and the one place that turns them into a line and an exit code.

Every command raises `CatsDogsError` where it finds the problem; `run_command` (which every
command's `main()` ends in) prints a single line `error: <what> (<where>): <how to fix>` and
returns the exit code. Exit codes (docs/errors.md):

    0    success
    1    the run failed (a NaN loss, no image could be classified, a download that failed or
         did not match its checksum), the machine refused
         (a read-only or full disk, no permission, over quota), or an internal error
    2    a usage or settings error: a bad flag, a missing folder, a run folder in use
    130  interrupted (Ctrl-C)

Anything else that escapes a command is a bug or an environment failure: one line
`error: internal: ...` and exit 1; CATSDOGS_DEBUG=1 shows the traceback instead.
"""

import contextlib
import errno
import os
import sys

USER_ERROR_EXIT_CODE = 2
RUN_FAILED_EXIT_CODE = 1
INTERRUPTED_EXIT_CODE = 130
DEBUG_VARIABLE = "CATSDOGS_DEBUG"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with the command that continues the work: raised where that is known (the run
    folder a training writes), so the line names the folder, not a placeholder."""

    def __init__(self, hint):
        super().__init__(hint)
        self.hint = hint


@contextlib.contextmanager
def continue_hint(hint):
    """Turn a Ctrl-C inside the block into `Interrupted(hint)`; an inner hint is kept."""
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt as stop:
        raise Interrupted(hint) from stop


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


class MachineError(RunFailed):
    """The machine refused (a read-only or full disk, no permission, over quota): the command
    and its input were fine, so exit 1; the line names the path and what to do."""


EDQUOT = getattr(errno, "EDQUOT", errno.ENOSPC)  # over quota (a platform without quotas: full)
DISK_FULL = {errno.ENOSPC, EDQUOT}  # no space; over quota
# errno -> (what happened, how to fix it)
MACHINE_ERRNOS = {
    errno.EROFS: ("read-only file system", "choose a folder on a writable disk"),
    errno.EACCES: ("permission denied", "choose a path this user may write, or change the "
                                        "folder's permissions"),
    errno.EPERM: ("operation not permitted", "choose a path this user may write, or change the "
                                             "folder's permissions"),
    EDQUOT: ("disk quota exceeded", "free space within your quota, or choose a folder "
                                    "elsewhere"),
    errno.ENOSPC: ("no space left on the disk", "free space on that disk, or choose a folder on "
                                                "another one"),  # after EDQUOT: wins where equal
}
# TensorFlow's own file writes (SaveV2, summaries) raise tf.errors.OpError, not OSError: its
# message says which of the above it was
TENSORFLOW_MESSAGES = {"No space left on device": errno.ENOSPC,
                       "Read-only file system": errno.EROFS, "Permission denied": errno.EACCES,
                       "Disk quota exceeded": EDQUOT}


def machine_errno(error):
    """The MACHINE_ERRNOS code behind `error` (an OSError, or TensorFlow's OpError saying one),
    else None."""
    if isinstance(error, OSError):
        return error.errno if error.errno in MACHINE_ERRNOS else None
    tensorflow = sys.modules.get("tensorflow")  # loaded, if it raised this
    if tensorflow is not None and isinstance(error, tensorflow.errors.OpError):
        return next((code for text, code in TENSORFLOW_MESSAGES.items()
                     if text in str(error)), None)
    return None


def machine_error(error, path=None, what=None, fix=None):
    """`error` as a MachineError naming `path` (default: the file the OSError names), or None
    if the machine did not refuse: the caller re-raises. `what`, `fix`: said instead of the
    generic text (e.g. "disk full while writing; the previous file is unchanged")."""
    code = machine_errno(error)
    if code is None:
        return None
    generic_what, generic_fix = MACHINE_ERRNOS[code]
    where = path if path is not None else getattr(error, "filename", None)
    return MachineError(what or generic_what, where=where, fix=fix or generic_fix)


def debugging():
    return os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")


def one_line(text):
    return " ".join(str(text).split())


def report(error, stream=None):
    """Print `error` as one `error: ...` line and return its exit code."""
    print(f"error: {one_line(error)}", file=stream or sys.stderr)
    return getattr(error, "exit_code", USER_ERROR_EXIT_CODE)


def reportable(error):
    """`error` (any exception) as the CatsDogsError whose one line `run_command` prints: itself,
    the machine's refusal it stands for, or an internal error (a bug)."""
    if isinstance(error, CatsDogsError):
        return error
    refusal = machine_error(error)
    if refusal is not None:
        return refusal
    return RunFailed(f"internal: {type(error).__name__}: {one_line(error)} (a bug, or a "
                     f"problem of this machine; {DEBUG_VARIABLE}=1 shows the traceback)")


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
    except KeyboardInterrupt as stop:
        hint = getattr(stop, "hint", interrupted_hint)
        print(f"\ninterrupted{': ' + hint if hint else ''}", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except Exception as error:
        if debugging():
            raise
        return report(reportable(error))


def command_main(build_parser, body, interrupted_hint=None):
    """The `main(argv=None) -> exit code` of a command module: its parser, its body, and the
    rules of `run_command`."""
    def main(argv=None):
        return run_command(build_parser(), argv, body, interrupted_hint)

    main.__doc__ = "Run the command with `argv` (default: sys.argv[1:]); returns its exit code."
    return main
