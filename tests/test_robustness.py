"""Nothing lost: kill at any moment and resume, full disks, and hostile bytes into the decoder."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import catsdogs
from catsdogs import runs
from catsdogs.models import presets as models
from catsdogs.training import callbacks
from catsdogs.errors import CatsDogsError
from catsdogs.data.images import UnreadableImage, decode_image
from catsdogs.commands.train import main

from conftest import REPO, TWO_CLASSES, write_class_images


def disk_full(self, path, *args, **kwargs):
    Path(path).write_bytes(b"PK\x03\x04 partial")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_keeps_the_previous_checkpoint_byte_identical(tmp_path, monkeypatch):
    model = models.get_preset("seed-cifar10").build(2)
    checkpoint = callbacks.BestModelCheckpoint(tmp_path / "model.keras")
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"loss": 0.6, "val_accuracy": 0.6})
    before = (tmp_path / "model.keras").read_bytes()
    monkeypatch.setattr(keras.Model, "save", disk_full)
    with pytest.raises(CatsDogsError, match=r"disk full .*model\.keras.*free at least \d+ MB"):
        checkpoint.on_epoch_end(1, {"loss": 0.5, "val_accuracy": 0.7})
    assert (tmp_path / "model.keras").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_full_disk_during_training_is_one_line_exit_1(binary_folders, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(keras.Model, "save", disk_full)
    code = main(["--data", str(binary_folders), "--preset", "seed-cifar10", "--epochs", "2",
                 "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    # found during the run: the one error line comes after the run's progress lines
    # the machine refused, not the user's input: exit 1, as for a failed run
    assert code == 1 and sum(line.startswith("error") for line in err) == 1
    assert err[-1].startswith("error: disk full") and "model.keras" in err[-1]


def history_epochs(run_dir):
    return [int(r["epoch"]) for r in runs.read_csv(run_dir / "history.csv")]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_loses_nothing(tmp_path):
    """Kill the training process at several moments (mid-epoch, mid-save), resume each time."""
    data = write_class_images(tmp_path / "data", TWO_CLASSES, 24, size=(32, 32))
    run_dir = tmp_path / "run"
    epochs = 16
    command = [sys.executable, "-m", "catsdogs.train", "--data", str(data), "--preset",
               "seed-cifar10", "--epochs", str(epochs), "--batch-size", "8"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    delays = [0.05, 0.4, 0.9, 0.2]  # seconds after this process finished an epoch of its own
    kills = 0
    for attempt, delay in enumerate(delays):
        args = command + ["--run-dir", str(run_dir)] if attempt == 0 else \
            [sys.executable, "-m", "catsdogs.train", "--resume", str(run_dir)]
        done_before = len(history_epochs(run_dir)) if run_dir.exists() else 0
        process = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while process.poll() is None and not (
                (run_dir / "history.csv").exists() and len(history_epochs(run_dir)) > done_before):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(delay)  # now mid-epoch, mid-checkpoint or mid-history write
        if process.poll() is not None:
            break  # finished before this kill
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        done = history_epochs(run_dir)
        assert done == list(range(1, len(done) + 1)), done  # no gaps, no repeats, ever
        if (run_dir / "model.keras").exists():
            keras.saving.load_model(run_dir / "model.keras")  # never torn
    assert kills >= 3, "the kills must land while the run is still going"
    if not (run_dir / "metrics.json").exists():  # the last resume needs no process of its own
        catsdogs.resume(run_dir)
    assert history_epochs(run_dir) == list(range(1, epochs + 1))
    keras.saving.load_model(run_dir / "model.keras")
    assert not list(run_dir.rglob(".*.tmp*"))  # no temp files left behind


@pytest.mark.slow
def test_sigkill_while_writing_the_saved_model_then_resume(tmp_path):
    """The last write of a run (the SavedModel export) killed half-way: resume finishes it."""
    import tensorflow as tf

    data = write_class_images(tmp_path / "data", TWO_CLASSES, 8, size=(32, 32))
    run_dir = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(
        [sys.executable, "-m", "catsdogs.train", "--data", str(data), "--preset", "seed-cifar10",
         "--epochs", "2", "--run-dir", str(run_dir)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    half_written = f".{runs.SAVED_MODEL_DIR}{runs.TEMP_TAG}*/{runs.SAVED_MODEL_DIR}"
    deadline = time.monotonic() + 180
    while not list(run_dir.glob(half_written)):
        assert process.poll() is None, "training ended before its SavedModel write was caught"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run_dir / runs.METRICS_FILE).exists()
    keras.saving.load_model(run_dir / "model.keras")
    catsdogs.resume(run_dir)  # in this process: only the kill needs one of its own
    assert history_epochs(run_dir) == [1, 2]
    tf.saved_model.load(str(run_dir / runs.SAVED_MODEL_DIR)).signatures["serving_default"]
    assert (run_dir / runs.METRICS_FILE).exists() and not list(run_dir.rglob(".*.tmp*"))


@settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=4096))
def test_random_bytes_give_an_image_or_a_reason(tmp_path, blob):
    path = tmp_path / "random.jpg"
    path.write_bytes(blob)
    try:
        image = decode_image(path, (16, 16))
    except UnreadableImage as error:
        assert str(error)
    else:
        assert image.shape == (16, 16, 3)


@settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(0, 1), kind=st.sampled_from(["jpg", "png", "gif", "bmp"]))
def test_truncated_images_give_an_image_or_a_reason(tmp_path, fraction, kind):
    from PIL import Image
    import numpy as np

    source = tmp_path / f"source.{kind}"
    pixels = np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(source)
    data = source.read_bytes()
    path = tmp_path / f"cut.{kind}"
    path.write_bytes(data[: int(len(data) * fraction)])
    started = time.perf_counter()
    try:
        assert decode_image(path, (16, 16)).shape == (16, 16, 3)
    except UnreadableImage as error:
        assert str(error)
    assert time.perf_counter() - started < 2


def test_resume_clears_what_a_killed_save_left_behind(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"good")
    (tmp_path / ".model.keras.tmp-4242.keras").write_bytes(b"half")
    (tmp_path / "checkpoints" / ".backup.tmp").mkdir(parents=True)
    runs.remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["checkpoints", "model.keras"]
    assert (tmp_path / "model.keras").read_bytes() == b"good"


def test_a_kill_while_a_finished_runs_backup_is_deleted_leaves_none_for_resume_to_trust(
        tmp_path, monkeypatch):
    backup = tmp_path / "run" / runs.CHECKPOINTS_DIR
    (backup / "backup").mkdir(parents=True)
    (backup / "backup" / "training_metadata.json").write_text("{}")
    (backup / "backup" / "latest.weights.h5").write_bytes(b"w")

    def killed_midway(path, ignore_errors=False):
        next(Path(path).rglob("*.json")).unlink()  # one file gone, then the kill
        raise KeyboardInterrupt

    monkeypatch.setattr(callbacks.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        callbacks.remove_backup(backup)
    monkeypatch.undo()
    assert not backup.exists()  # resume sees a finished run, not half a backup
    callbacks.remove_backup(backup)  # the next call (finish_run's, for a finished run)
    assert list((tmp_path / "run").iterdir()) == []
