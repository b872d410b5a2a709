"""Never hang, never a traceback: special files in image folders, one process per
run folder, and one line for anything unexpected."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TWO_CLASSES, write_class_images

BOUND = 60  # seconds: each command must finish well within this, whatever the folder holds
SPECIAL = {"pipe.jpg": "not a regular file (fifo)", "null.jpg": "not a regular file (device)",
           "gone.jpg": "dangling symbolic link", "loop.jpg": "symbolic link loop"}

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")


def plant_special_files(folder):
    """A FIFO, /dev/null linked in (a character device), a dangling link and a link loop,
    plus a link to a real image (which must still work)."""
    folder = Path(folder)
    os.mkfifo(folder / "pipe.jpg")
    os.symlink("/dev/null", folder / "null.jpg")
    os.symlink(folder / "no-such-file.jpg", folder / "gone.jpg")
    os.symlink(folder / "loop.jpg", folder / "loop.jpg")
    real = next(p for p in sorted(folder.iterdir()) if p.suffix == ".png" and not p.is_symlink())
    os.symlink(real, folder / "linked.png")
    return folder


def run_command(argv, cwd):
    """A real process, so a hang is a timeout here rather than a stuck test run."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "catsdogs", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=BOUND)


def assert_each_special_file_named(text):
    for name, reason in SPECIAL.items():
        line = next((line for line in text.splitlines() if name in line), None)
        assert line is not None and reason in line, (name, text[-2000:])


@pytest.fixture
def folders(tmp_path):
    root = write_class_images(tmp_path / "images" / "train", TWO_CLASSES, 6, size=(32, 32), seed=1)
    write_class_images(tmp_path / "images" / "validation", TWO_CLASSES, 3, size=(32, 32), seed=2)
    plant_special_files(root / "cats")
    return tmp_path / "images"


def test_predict_skips_special_files_with_their_reason(folders, tmp_path):
    from catsdogs.models.presets import get_preset

    model = get_preset("seed-cifar10").build(2)
    model.save(tmp_path / "model.keras")
    (tmp_path / "class_names.json").write_text(json.dumps(["cats", "dogs"]))
    result = run_command(["predict", str(tmp_path / "model.keras"), str(folders / "train" / "cats")],
                         tmp_path)
    assert result.returncode == 0, result.stderr
    assert_each_special_file_named(result.stdout + result.stderr)
    assert "linked.png" in result.stdout  # a link to a real image is still classified


def test_doctor_skips_special_files_with_their_reason(folders, tmp_path):
    result = run_command(["doctor", str(folders), "--out", str(tmp_path / "doctor.json")], tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "doctor.json").read_text())
    listed = {Path(item["path"]).name: item["reason"] for item in report["special_files"]}
    assert listed == SPECIAL
    assert "special files" in result.stdout and "pipe.jpg" in result.stdout


def test_train_skips_special_files_with_their_reason(folders, tmp_path):
    result = run_command(["train", "--data", str(folders), "--preset", "seed-cifar10",
                          "--epochs", "1", "--batch-size", "8", "--run-dir", str(tmp_path / "run")],
                         tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    skipped = (tmp_path / "run" / "skipped.csv").read_text()
    assert_each_special_file_named(skipped)
    assert "linked.png" not in skipped
    assert_each_special_file_named(result.stderr)  # the log names them too (up to 5)


def test_reading_a_fifo_directly_never_blocks(tmp_path):
    from catsdogs.data.images import UnreadableImage, read_bytes

    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(UnreadableImage, match=r"not a regular file \(fifo\)"):
        read_bytes(tmp_path / "pipe.jpg")


def test_a_fifo_as_model_or_archive_is_one_line_not_a_hang(tmp_path, capsys):
    from catsdogs.commands.download import main as download_main
    from catsdogs.commands.predict import main as predict_main

    from conftest import one_error_line

    os.mkfifo(tmp_path / "model.keras")
    (tmp_path / "class_names.json").write_text('["cats", "dogs"]')
    line = one_error_line(capsys, predict_main, [str(tmp_path / "model.keras"), str(tmp_path)])
    assert "not a regular file (fifo)" in line
    os.mkfifo(tmp_path / "pets.zip")
    line = one_error_line(capsys, download_main, ["--archive", str(tmp_path / "pets.zip"),
                                                  "--sha256", "0" * 64, "--into", str(tmp_path / "u")])
    assert "not a regular file (fifo)" in line


# ---------------------------------------------------------------- one process per run folder


def start_training(run_dir, data, *extra, resume=False):
    argv = (["train", "--resume", str(run_dir)] if resume else
            ["train", "--data", str(data), "--preset", "seed-cifar10", "--epochs", "3",
             "--batch-size", "4", "--run-dir", str(run_dir), *extra])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "catsdogs", *argv], cwd=run_dir.parent,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def interrupted_run(tmp_path, monkeypatch):
    """A run folder whose training stopped after its first epoch."""
    import catsdogs
    from catsdogs.config import TrainConfig

    from conftest import Interrupt, crash_when_epoch_starts

    data = write_class_images(tmp_path / "d", TWO_CLASSES, 12, size=(32, 32))
    crash_when_epoch_starts(monkeypatch, 1)
    with pytest.raises(Interrupt):
        catsdogs.train(TrainConfig(data=str(data), preset="seed-cifar10", epochs=3, batch_size=4,
                                   run_dir=str(tmp_path / "run")))
    monkeypatch.undo()
    return tmp_path / "run", data


@pytest.mark.slow
def test_two_resumes_at_once_one_trains_the_other_stops_with_one_line(tmp_path, monkeypatch):
    run_dir, data = interrupted_run(tmp_path, monkeypatch)
    first, second = (start_training(run_dir, data, resume=True) for _ in range(2))
    results = [(p.wait(timeout=300), *p.communicate()) for p in (first, second)]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    _, _, loser_err = next(r for r in results if r[0] == 2)
    lines = loser_err.strip().splitlines()
    assert len(lines) == 1 and "in use by process" in lines[0] and str(run_dir) in lines[0], lines
    from catsdogs import runs

    assert [int(r["epoch"]) for r in runs.read_csv(run_dir / "history.csv")] == [1, 2, 3]


def test_a_lock_left_by_a_killed_run_does_not_block_the_next_resume(tmp_path, monkeypatch):
    import catsdogs
    from catsdogs import runs

    run_dir, data = interrupted_run(tmp_path, monkeypatch)
    process = start_training(run_dir, data, resume=True)
    deadline = time.monotonic() + 120
    lock = run_dir / runs.LOCK_FILE
    while time.monotonic() < deadline:  # wait until it holds the lock
        if lock.exists() and lock.read_text().strip() == str(process.pid):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the resumed run never took the lock")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    run = catsdogs.resume(run_dir)
    assert [int(r["epoch"]) for r in run.history] == [1, 2, 3]


def test_train_into_a_folder_another_process_holds_is_refused(tmp_path, capsys):
    from catsdogs import runs
    from catsdogs.commands.train import main

    data = write_class_images(tmp_path / "d", TWO_CLASSES, 4, size=(32, 32))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom catsdogs import runs\n"
        f"with runs.run_folder_lock({str(tmp_path / 'run')!r}):\n"
        "    print('locked', flush=True)\n    time.sleep(60)\n")],
        env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = main(["--data", str(data), "--preset", "seed-cifar10", "--epochs", "1",
                     "--run-dir", str(tmp_path / "run")])
        err = capsys.readouterr().err.strip().splitlines()
        # two new runs racing for one --run-dir: the loser has decoded its data (logged), then
        # stops at the lock with the one error line
        assert code == 2 and f"process {holder.pid}" in err[-1], err
        assert sum(line.startswith("error:") for line in err) == 1
        assert not (tmp_path / "run" / runs.CONFIG_FILE).exists()
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------- anything else: one line


def test_an_unexpected_exception_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    from catsdogs import cli
    from catsdogs.commands import doctor

    def broken(*args, **kwargs):
        raise RuntimeError("something nobody planned for")

    monkeypatch.setattr(doctor, "diagnose", broken)
    monkeypatch.delenv("CATSDOGS_DEBUG", raising=False)
    write_class_images(tmp_path / "d", TWO_CLASSES, 2)
    assert cli.main(["doctor", str(tmp_path / "d")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: internal: RuntimeError: something nobody")
    assert "CATSDOGS_DEBUG=1" in err[0]

    monkeypatch.setenv("CATSDOGS_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli.main(["doctor", str(tmp_path / "d")])
