"""TensorFlow's start-up noise is dropped from stderr while it loads; every other line passes,
and --verbose shows everything (catsdogs/stderr_filter.py)."""

import os
import subprocess
import sys

import pytest

from catsdogs import stderr_filter

from conftest import REPO

# the lines TensorFlow prints on an AVX-512 CPU (oneDNN, twice) and an AVX2 one (feature guard)
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1732000000.123456    4242 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors from "
    "different computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796361702.590216    5290 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow "
    "with the appropriate compiler flags.",
    # the TFLite converter's summary (int8 export) and interpreter's notice (export --check)
    "fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, "
    "output_inference_type: FLOAT32",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
]
OWN_LINE = "a line of the program's own"
WRITTEN = "".join(line + "\n" for line in NOISE + [OWN_LINE]).encode()

# Loads the real TensorFlow; while it loads (its first sub-module is being found), writes the
# noise and one other line straight to fd 2, as TensorFlow's C++ does.
LOAD_TENSORFLOW = f"""
import os, sys
import catsdogs
from catsdogs import console
if sys.argv[1] == "--verbose":
    console.setup(verbose=True)
before = os.fstat(2)

class Chatter:
    def find_spec(self, name, path=None, target=None):
        if name.startswith("tensorflow."):
            sys.meta_path.remove(self)
            os.write(2, {WRITTEN!r})
        return None

sys.meta_path.insert(0, Chatter())
import tensorflow
after = os.fstat(2)
print("fd 2 restored" if (before.st_dev, before.st_ino) == (after.st_dev, after.st_ino) else "fd 2 changed")
"""


def run_python(code, *args):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True,
                          env={**env, "PYTHONPATH": str(REPO)}, timeout=120)


def test_tensorflow_loading_drops_the_noise_and_passes_every_other_line():
    result = run_python(LOAD_TENSORFLOW, "--plain")
    assert result.returncode == 0, result.stderr
    assert result.stderr.decode().splitlines() == [OWN_LINE]
    assert result.stdout.decode().strip() == "fd 2 restored"


def test_verbose_shows_the_noise_too():
    result = run_python(LOAD_TENSORFLOW, "--verbose")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.decode().splitlines()
    written = lines.index(NOISE[0])  # TensorFlow's own copies of these lines may come first
    assert lines[written:written + len(NOISE) + 1] == NOISE + [OWN_LINE]


def test_other_bytes_pass_untouched():
    """Not UTF-8, a carriage return, a noise-like line with more on it, no final newline."""
    own = b"caf\xe9\r\n" + NOISE[0].encode() + b" and more\n\nlast, unfinished"
    written = NOISE[1].encode() + b"\n" + own
    code = ("import os\nfrom catsdogs.stderr_filter import filtered_stderr\n"
            f"with filtered_stderr():\n    os.write(2, {written!r})\n"
            "os.write(2, b'|after')")
    result = run_python(code)
    assert result.returncode == 0 and result.stderr == own + b"|after"


@pytest.mark.parametrize("level, on", [("0", False), (" 0 ", False), ("1", True), ("2", True),
                                       (None, False)])
def test_only_tf_cpp_min_log_level_0_turns_the_filter_off(monkeypatch, level, on):
    if level is None:
        monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", level)
    assert stderr_filter.filter_on() is on


def test_every_noise_line_matches_and_a_changed_one_does_not():
    assert all(stderr_filter.NOISE.fullmatch(line.encode()) for line in NOISE)
    assert not stderr_filter.NOISE.fullmatch(b"E0000 00:00:1.0 1 port.cc:153] oneDNN failed")
