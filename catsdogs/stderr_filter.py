"""Keep TensorFlow's start-up noise off stderr while it loads, and pass every other line through.

Loading TensorFlow prints lines nobody acted on (abseil's "before absl::InitializeLog()" warning,
oneDNN's and the CPU-feature guard's notices) before every command's own output.
TF_CPP_MIN_LOG_LEVEL cannot hide them: abseil writes before it is initialised, whatever the
threshold (abseil/abseil-cpp#1957). They come from C++ straight to file descriptor 2, so they are
filtered there: while the first `import tensorflow` runs (from catsdogs, Keras or a bench script,
wherever it happens first), fd 2 points at a pipe whose reader drops the known lines and copies
every other byte to the real stderr; after the import fd 2 is the real stderr again (a terminal
stays a terminal for progress bars). With TF_CPP_MIN_LOG_LEVEL=0 (`--verbose` sets it) nothing
is filtered.
"""

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import threading

# the lines dropped, each matched whole; everything else passes untouched
NOISE = re.compile(rb"""
    WARNING:\ All\ log\ messages\ before\ absl::InitializeLog\(\)\ is\ called\ are\ written\ to\ STDERR
  | [IW]\d{4}\ [\d:.]+\s+\d+\ port\.cc:\d+\]\ oneDNN\ custom\ operations\ are\ on\b.*
  | [IW]\d{4}\ [\d:.]+\s+\d+\ cpu_feature_guard\.cc:\d+\]\ This\ TensorFlow\ binary\ is\ optimized\b.*
  | To\ enable\ the\ following\ instructions:\ .*\ rebuild\ TensorFlow\ with\ the\ appropriate\ compiler\ flags\.
  | fully_quantize:\ \d+,\ inference_type:\ \d+,\ input_inference_type:\ \w+,\ output_inference_type:\ \w+
  | INFO:\ Created\ TensorFlow\ Lite\ XNNPACK\ delegate\ for\ CPU\.
""", re.VERBOSE)


def filter_on():
    """True unless TF_CPP_MIN_LOG_LEVEL is 0: then the user (or --verbose) asked for
    TensorFlow's informational lines, these included."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip() != "0"


def _relay(source, target):
    """Copy lines from fd `source` to fd `target` until end of file, dropping NOISE lines."""
    pending = b""
    with open(source, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not NOISE.fullmatch(line.rstrip(b"\r")))
            if kept:
                os.write(target, kept)
    if pending and not NOISE.fullmatch(pending.rstrip(b"\r")):
        os.write(target, pending)


@contextlib.contextmanager
def filtered_stderr():
    """While the body runs, lines written to fd 2 (by C++ or Python) reach the real stderr
    without the NOISE lines; afterwards fd 2 is what it was."""
    with contextlib.suppress(AttributeError, ValueError, OSError):
        sys.stderr.flush()  # what Python buffered so far goes out before the swap
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all (a daemon): nothing to filter
        yield
        return
    read_end, write_end = os.pipe()
    reader = threading.Thread(target=_relay, args=(read_end, saved), daemon=True,
                              name="catsdogs-stderr-filter")
    reader.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        yield
    finally:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the reader sees end of file
        reader.join(timeout=5)  # longer only if a child process kept the pipe open
        if not reader.is_alive():  # else it still writes to `saved`: leave that open
            os.close(saved)


def quiet_tensorflow():
    """filtered_stderr around a TensorFlow call that prints NOISE of its own every time (the
    TFLite converter's quantisation summary, the interpreter's XNNPACK notice); nothing
    filtered with TF_CPP_MIN_LOG_LEVEL=0."""
    return filtered_stderr() if filter_on() else contextlib.nullcontext()


class _FilteredLoader(importlib.abc.Loader):
    """TensorFlow's own loader, with its module's execution (where the C++ libraries load)
    inside filtered_stderr; like importlib.util.LazyLoader, a wrapper around a loader."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        with filtered_stderr():
            self.loader.exec_module(module)

    def __getattr__(self, name):  # get_resource_reader, is_package, ...: the real loader's
        return getattr(self.loader, name)


class _FirstTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds the `tensorflow` package once, handing it a _FilteredLoader, then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        uninstall()
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None and filter_on():
            spec.loader = _FilteredLoader(spec.loader)
        return spec


_FINDER = _FirstTensorFlowImport()


def install():
    """Filter the first `import tensorflow` of this process (once; nothing if it was imported
    already). Whether to filter is decided at that import: --verbose may come later."""
    if "tensorflow" not in sys.modules and _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def uninstall():
    with contextlib.suppress(ValueError):
        sys.meta_path.remove(_FINDER)
