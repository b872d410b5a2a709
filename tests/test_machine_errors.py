"""The machine refusing (a read-only or full disk, no permission, over quota) is one line that
names the path and the fix, exit 1, nothing half-written, and found before the heavy work; and
a run folder in use always names the process holding it."""

import argparse
import builtins
import errno
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catsdogs import errors, runs
from catsdogs.errors import MachineError

from conftest import REPO, TWO_CLASSES, write_class_images


def refuse_writes_below(monkeypatch, folder, code=errno.EROFS):
    """Make the machine refuse to create or write anything below `folder`, as a read-only mount
    does (the tests run as root, whom chmod does not stop)."""
    folder = os.path.abspath(folder)
    real_os_open, real_mkdir, real_open = os.open, os.mkdir, builtins.open

    def below(path):
        if not isinstance(path, (str, bytes, os.PathLike)):
            return False
        path = os.path.abspath(os.fsdecode(path))
        return path == folder or path.startswith(folder + os.sep)

    def refuse(path):
        raise OSError(code, os.strerror(code), os.fsdecode(path))

    def os_open(path, flags, *args, **kwargs):
        if below(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if below(path):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        if below(file) and set(mode) & set("wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(io, "open", open_)


def counting(monkeypatch, module, name):
    """Wrap `module.name` so its calls are counted; returns the list of calls."""
    calls, real = [], getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def one_machine_line(capsys, code, path):
    """The command exited 1 with one stderr line, an error naming `path` and a fix."""
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("error: read-only file system (") and str(path) in err[0], err
    assert "choose a folder on a writable disk" in err[0] and "internal" not in err[0]
    return err[0]


def files_below(folder):
    return sorted(p.relative_to(folder) for p in Path(folder).rglob("*"))


@pytest.fixture
def model_run(tmp_path):
    """A run folder holding an untrained seed-cifar10 model and its class names."""
    from catsdogs.models import presets

    run = tmp_path / "run"
    run.mkdir()
    presets.get_preset("seed-cifar10").build(2).save(run / runs.MODEL_FILE)
    (run / runs.CLASS_NAMES_FILE).write_text(json.dumps(list(TWO_CLASSES)))
    return run


# ---------------------------------------------------------------- found before the work


def test_train_into_a_read_only_folder_decodes_nothing(binary_folders, tmp_path, monkeypatch,
                                                      capsys):
    from catsdogs.commands.train import main
    from catsdogs.data import datasets

    read_only = tmp_path / "read-only"
    read_only.mkdir()
    refuse_writes_below(monkeypatch, read_only)
    decoded = counting(monkeypatch, datasets, "decode_many")
    code = main(["--data", str(binary_folders), "--preset", "seed-cifar10", "--epochs", "1",
                 "--run-dir", str(read_only / "run")])
    one_machine_line(capsys, code, read_only / "run")
    assert decoded == [] and files_below(read_only) == []


def test_export_into_a_read_only_folder_loads_nothing(model_run, tmp_path, monkeypatch, capsys):
    from catsdogs.commands.export import main
    from catsdogs.inference import classifier

    read_only = tmp_path / "read-only"
    read_only.mkdir()
    refuse_writes_below(monkeypatch, read_only)
    loaded = counting(monkeypatch, classifier, "load")
    code = main([str(model_run), "--format", "keras", "--out", str(read_only / "x")])
    one_machine_line(capsys, code, read_only / "x")
    assert loaded == [] and files_below(read_only) == []


def test_export_beside_a_read_only_run_is_found_before_loading(model_run, monkeypatch, capsys):
    """No --out: exports/ beside the model, whose folder is checked."""
    from catsdogs.commands.export import main
    from catsdogs.inference import classifier

    before = files_below(model_run)
    refuse_writes_below(monkeypatch, model_run)
    loaded = counting(monkeypatch, classifier, "load")
    code = main([str(model_run), "--format", "keras"])
    one_machine_line(capsys, code, model_run / "exports")
    assert loaded == [] and files_below(model_run) == before


def test_predict_sort_into_a_read_only_folder_predicts_nothing(model_run, binary_folders,
                                                              tmp_path, monkeypatch, capsys):
    from catsdogs.commands import predict

    read_only = tmp_path / "read-only"
    read_only.mkdir()
    refuse_writes_below(monkeypatch, read_only)
    predicted = counting(monkeypatch, predict, "predict_paths")
    code = predict.main([str(model_run), str(binary_folders / "validation"),
                         "--sort-into", str(read_only / "sorted")])
    one_machine_line(capsys, code, read_only / "sorted")
    assert predicted == [] and files_below(read_only) == []


def test_evaluate_out_into_a_read_only_folder_loads_nothing(model_run, binary_folders, tmp_path,
                                                            monkeypatch, capsys):
    from catsdogs.commands.evaluate import main
    from catsdogs.inference import classifier

    read_only = tmp_path / "read-only"
    read_only.mkdir()
    refuse_writes_below(monkeypatch, read_only)
    loaded = counting(monkeypatch, classifier, "load")
    code = main([str(model_run), str(binary_folders / "validation"), "--out",
                 str(read_only / "report")])
    one_machine_line(capsys, code, read_only / "report")
    assert loaded == []


def test_a_writable_folder_passes_the_check_and_keeps_nothing_of_it(tmp_path):
    runs.check_writable(tmp_path / "not" / "yet" / "made")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code, what", [(errno.EROFS, "read-only file system"),
                                        (errno.EACCES, "permission denied"),
                                        (errno.ENOSPC, "no space left on the disk"),
                                        (errors.EDQUOT, "disk quota exceeded")])
def test_the_check_names_the_folder_and_the_cause(tmp_path, monkeypatch, code, what):
    refuse_writes_below(monkeypatch, tmp_path, code)
    with pytest.raises(MachineError, match=re.escape(f"{what} ({tmp_path / 'out'})")) as caught:
        runs.check_writable(tmp_path / "out")
    assert caught.value.exit_code == 1


# ---------------------------------------------------------------- found during the work


def test_a_full_disk_during_the_savedmodel_export_is_one_line_and_leaves_no_part(
        model_run, tmp_path, monkeypatch, capsys):
    import tensorflow as tf

    from catsdogs.commands.export import main

    def disk_fills(module, folder, signatures=None):  # as TensorFlow's SaveV2 op reports it
        Path(folder, "variables").mkdir(parents=True)
        Path(folder, "variables", "variables.data-00000-of-00001").write_bytes(b"\0" * 1000)
        raise tf.errors.ResourceExhaustedError(None, None, (
            "{{function_node __wrapped__SaveV2_dtypes_6_device_/job:localhost/replica:0/task:0/"
            "device:CPU:0}} variables.data-00000-of-00001.tempstate123; No space left on device "
            "[Op:SaveV2]"))

    monkeypatch.setattr(tf.saved_model, "save", disk_fills)
    out = tmp_path / "exports"
    code = main([str(model_run), "--format", "saved_model", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"error: disk full while writing; the previous file is unchanged "
                             f"({out / 'saved_model'}): free at least "), err
    assert files_below(out) == [Path(runs.CLASS_NAMES_FILE)]  # no part of the SavedModel


def test_a_machine_error_anywhere_is_one_line_exit_1_naming_the_file(capsys):
    def body(args):
        raise PermissionError(errno.EACCES, "Permission denied", "/srv/photos/cats")

    parser = argparse.ArgumentParser()
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    assert errors.run_command(parser, [], body) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: permission denied (/srv/photos/cats): choose a path this user may write, or "
        "change the folder's permissions"]


def test_tensorflow_errors_count_by_their_message_only():
    import tensorflow as tf

    full = tf.errors.ResourceExhaustedError(None, None, "x; No space left on device [Op:SaveV2]")
    out_of_memory = tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
    assert errors.machine_errno(full) == errno.ENOSPC
    assert errors.machine_errno(out_of_memory) is None
    assert errors.machine_errno(OSError(errno.ENOENT, "No such file or directory")) is None


# ---------------------------------------------------------------- a run folder in use

HAMMER = """
import sys, time
from catsdogs import runs
from catsdogs.errors import CatsDogsError
messages, held, end = [], 0, time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        with runs.run_folder_lock(sys.argv[1]):
            held += 1
    except CatsDogsError as error:
        messages.append(str(error))
print(held, len(messages))
for message in sorted(set(messages)):
    print(message)
"""


def test_a_folder_in_use_always_names_the_process(tmp_path):
    """Two processes take and release one run folder's lock thousands of times at once: every
    refusal names the other one's process id (never "unknown", never an empty one)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    processes = [subprocess.Popen([sys.executable, "-c", HAMMER, str(tmp_path), "3"], env=env,
                                  stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0].splitlines() for p in processes]
    for me, (output, other) in enumerate(zip(outputs, reversed(processes))):
        held, refused = map(int, output[0].split())
        assert held > 0 and refused > 0, output[0]  # they did collide
        assert output[1:] == [f"run folder is in use by process {other.pid} ({tmp_path}): wait "
                              "for that run to finish, or stop it; one process trains in a run "
                              "folder at a time"], output[1:5]
    assert {p.name for p in tmp_path.iterdir()} == {runs.LOCK_FILE}  # no temporary left


SLOW_HOLDER = """
import os, sys, time
from pathlib import Path
from catsdogs import runs
real_write = os.write

def write(fd, data):  # the holder is slow to write its id, after taking the lock
    if data == f"{os.getpid()}\\n".encode():
        Path(sys.argv[2]).touch()
        time.sleep(1.5)
    return real_write(fd, data)

os.write = write
with runs.run_folder_lock(sys.argv[1]):
    time.sleep(1.5)
"""


def test_a_folder_in_use_names_its_holder_even_before_the_holder_wrote_its_id(tmp_path):
    from catsdogs.errors import CatsDogsError

    run_dir, writing = tmp_path / "run", tmp_path / "writing"
    holder = subprocess.Popen([sys.executable, "-c", SLOW_HOLDER, str(run_dir), str(writing)],
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        while not writing.exists():
            assert holder.poll() is None
            time.sleep(0.01)
        with pytest.raises(CatsDogsError, match=f"in use by process {holder.pid} "):
            with runs.run_folder_lock(run_dir):
                pass
    finally:
        holder.wait(timeout=30)
