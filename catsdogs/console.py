"""What a person sees: results on stdout, progress and logs on stderr, lists kept short.

Results and tables go to stdout with `print`; everything else (what is being decoded, the
resolved settings, one line per epoch, progress bars) is logged through Python's `logging`
(logger "catsdogs") to stderr, so `catsdogs predict ... > rows.txt` gets rows only. Every
command takes `--quiet` (errors and results only) and `--verbose` (also TensorFlow's own
start-up messages). Live progress bars are drawn only on a terminal without NO_COLOR
(https://no-color.org); a stderr that is a file or a pipe gets one plain line per epoch, no
colour codes, no carriage returns.
"""

import contextlib
import logging
import os
import sys

NAMED = 5  # files named per finding before "and N more"
LOGGER = "catsdogs"


def log():
    """The catsdogs logger; with no setup by a command (the Python API, a notebook), it shows
    INFO lines on stderr, so a notebook sees what a run is doing."""
    logger = logging.getLogger(LOGGER)
    if not logger.handlers:
        setup()
    return logger


class _CurrentStderr(logging.StreamHandler):
    """A handler that writes to whatever `sys.stderr` is at the moment of writing (pytest and
    notebooks swap it), not to the stream that existed when the handler was made."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def setup(quiet=False, verbose=False):
    """Configure the catsdogs logger for one command: INFO lines on stderr, WARNING and up only
    with `quiet`, and TensorFlow's start-up messages back on with `verbose`."""
    logger = logging.getLogger(LOGGER)
    if not logger.handlers:
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"  # read when TensorFlow loads, later


def chatty():
    """True unless --quiet: progress lines are wanted."""
    return log().isEnabledFor(logging.INFO)


def live_progress():
    """Draw Keras' live progress bars (carriage returns, colour): only on a terminal, without
    NO_COLOR, and not --quiet."""
    return chatty() and sys.stderr.isatty() and not os.environ.get("NO_COLOR")


def progress_to_stderr():
    """Keras writes its progress bars to stdout; inside this, they go to stderr."""
    return contextlib.redirect_stdout(sys.stderr)


class ProgressBar:
    """Keras' own Progbar, drawn on stderr (Keras draws on stdout, where results go)."""

    def __init__(self, total, unit):
        import keras  # the caller is about to use Keras anyway; this module stays light

        self.bar = keras.utils.Progbar(total, unit_name=unit)

    def update(self, done):
        with progress_to_stderr():
            self.bar.update(done)

    def add(self, count):
        with progress_to_stderr():
            self.bar.add(count)


def progress_bar(total, unit="image"):
    """A ProgressBar for `total` items, or None where live progress is not wanted."""
    return ProgressBar(total, unit) if total and live_progress() else None


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


class _WithoutRetracing(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warnings, passes the rest."""

    def filter(self, record):
        return "tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def quiet_retracing():
    """Without TensorFlow's "triggered tf.function retracing" warnings (its other lines kept),
    for commands that train several models in one process (k folds, seeds, a search's trials):
    each new model compiles its own functions, which is what that warning counts, so it would
    blame a loop that is the point of the command."""
    logger, dropped = logging.getLogger("tensorflow"), _WithoutRetracing()
    logger.addFilter(dropped)
    try:
        yield
    finally:
        logger.removeFilter(dropped)
