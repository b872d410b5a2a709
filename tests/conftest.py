"""Shared fixtures: small generated image folders, so no test needs the network or the full data sets."""

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from catsdogs import console  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DATA = REPO / "data"


def write_class_images(folder, colours, count, size=(40, 48), seed=0):
    """Write `count` noisy images per class, each class a different mean colour (learnable)."""
    rng = np.random.default_rng(seed)
    for name, colour in colours.items():
        class_dir = Path(folder) / name
        class_dir.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            noise = rng.normal(0, 25, (*size, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            extension = ("png", "jpg", "bmp")[i % 3]
            Image.fromarray(pixels).save(class_dir / f"{name}_{i}.{extension}")
    return Path(folder)


def offline_like_keras(origin):
    """A keras.utils.get_file stand-in that fails as Keras does without the network: urllib's
    URLError replaced by a bare Exception that repeats the URL (keras/src/utils/file_utils.py)."""
    import urllib.error

    def get_file(*args, **kwargs):
        error = urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))
        try:
            raise error
        except urllib.error.URLError as e:
            raise Exception(f"URL fetch failure on {origin}: {e.errno} -- {e.reason}")

    return get_file


def one_error_line(capsys, main, argv, alone=True, exit_code=2):
    """Run a command's main(argv); assert it failed as user errors must (exit code 2, or
    `exit_code`: 1 where the input was fine and the work failed; exactly one `error:` line on
    stderr, no traceback) and return that line.

    `alone`: the error is the only line on stderr, as for every problem found before the work
    starts; errors found during the work (a class whose every file is unreadable, found by
    decoding) come after the progress lines that work logged, so for them it is the last line.
    """
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == exit_code, captured
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in captured.err, lines
    assert sum(line.startswith("error:") for line in lines) == 1, lines
    if alone:
        assert len(lines) == 1, lines
    return lines[-1]


class Interrupt(Exception):
    """A simulated crash, raised from inside training."""


def crash_when_epoch_starts(monkeypatch, crash_epoch):
    """Make training raise Interrupt the first time 0-based `crash_epoch` starts (a resumed run
    passes it); return the list of epochs started, resumed ones included."""
    from catsdogs.training import callbacks

    started = []
    original = callbacks.HistoryCSV.on_epoch_begin

    def begin(self, epoch, logs=None):
        started.append(epoch)
        if epoch == crash_epoch and started.count(epoch) == 1:
            raise Interrupt(f"simulated crash at the start of epoch {epoch + 1}")
        original(self, epoch, logs)

    monkeypatch.setattr(callbacks.HistoryCSV, "on_epoch_begin", begin)
    return started


def killed_then_resumed(config, monkeypatch, crash_epoch=1):
    """Train `config`, killed as 0-based `crash_epoch` starts, then `catsdogs.resume` its run
    folder: (the finished Run, the epochs started, resumed ones included)."""
    import catsdogs

    started = crash_when_epoch_starts(monkeypatch, crash_epoch)
    with pytest.raises(Interrupt):
        catsdogs.train(config)
    return catsdogs.resume(config.run_dir), started


def bomb_png_bytes(side=100_000):
    """A tiny PNG whose header claims side x side RGB pixels: a decompression bomb."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def gray16_png_bytes(side):
    """A real, all-black 16-bit grayscale PNG of side x side (valid pixel data: decoding it
    whole would hold side*side*2 bytes), written row by row so the test never holds them."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer, row = zlib.compressobj(9), bytes(1 + 2 * side)  # filter byte + 2 bytes a pixel
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) +
            chunk(b"IEND", b""))


def free_port():
    """A free TCP port on 127.0.0.1 (asked of the OS, then released for a server)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving_in_a_thread(classifier, config, start_within=60):
    """The draining uvicorn server `catsdogs serve` runs (serve.drain.draining_server),
    serving create_app(classifier, config) on `config.port` from a daemon thread: yields
    (server, thread) once it has started; told to exit and joined when the block ends."""
    from catsdogs.serve.app import create_app
    from catsdogs.serve.drain import draining_server

    server = draining_server(create_app(classifier, config), config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_within
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        yield server, thread
    finally:
        server.should_exit = True
        thread.join(timeout=30)


TWO_CLASSES = {"cats": (200, 80, 60), "dogs": (60, 90, 200)}
THREE_CLASSES = {"apples": (200, 40, 40), "grapes": (90, 40, 160), "limes": (60, 200, 60)}


def write_binary_folders(root):
    """train/ (12 per class) and validation/ (6 per class) of two generated classes in `root`."""
    write_class_images(root / "train", TWO_CLASSES, 12, seed=1)
    write_class_images(root / "validation", TWO_CLASSES, 6, seed=2)
    return root


@pytest.fixture
def binary_folders(tmp_path):
    """train/ and validation/ folders of two generated classes."""
    return write_binary_folders(tmp_path / "images")


@pytest.fixture
def protocol_folders(tmp_path):
    """train/ (20 per class) and validation/ (6 per class) of 32x32 images: enough to carve a
    selection split and set calibration photos aside from it."""
    root = tmp_path / "images"
    write_class_images(root / "train", TWO_CLASSES, 20, size=(32, 32), seed=1)
    write_class_images(root / "validation", TWO_CLASSES, 6, size=(32, 32), seed=2)
    return root


@pytest.fixture
def calibration_at_test_scale(monkeypatch):
    """The held-out protocol on a few generated photos: a share of 2 photos is set aside for a
    temperature (real runs need datasets.MIN_CALIBRATION_IMAGES, 100, and set none aside below
    it), so the set-aside is tested without thousands of images. The temperature's own minimum
    (calibrate.checked_temperature) is untouched: it still refuses to fit on so few."""
    from catsdogs.data import datasets

    monkeypatch.setattr(datasets, "MIN_CALIBRATION_IMAGES", 2)


@pytest.fixture
def three_class_folder(tmp_path):
    """One folder of three generated classes, with no train/validation split."""
    return write_class_images(tmp_path / "fruit", THREE_CLASSES, 10, size=(32, 32), seed=3)


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path, monkeypatch):
    """Run every test from its own temporary folder, so default `runs/` never lands in the repo."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _fresh_log_level():
    """Start every test at the logger's default INFO level: a `--quiet` command run by an
    earlier test in the same worker process would otherwise silence this test's log lines."""
    console.setup()
    yield


def pytest_collection_modifyitems(items):
    """Test files with the most tests marked slow run first, the rest in their usual order:
    with `--dist loadfile` a file runs whole on one worker, so the longest start first and the
    two workers finish together instead of one finishing a long file alone."""
    slow = {}
    for item in items:
        slow[item.path] = slow.get(item.path, 0) + bool(item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])  # stable: each file keeps its own order
