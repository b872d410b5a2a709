"""The run folder: its name, its files, and writes that never leave a torn file behind.

Layout (design.md): config.json, class_names.json, dataset.json, history.csv, skipped.csv,
logs/ (TensorBoard), checkpoints/ (resume state), model.keras, saved_model/, plots/, metrics.json.
"""

import contextlib
import csv
import errno
import io
import json
import os
import shutil
import time
from pathlib import Path

from catsdogs.errors import CatsDogsError

CONFIG_FILE = "config.json"
CLASS_NAMES_FILE = "class_names.json"
DATASET_FILE = "dataset.json"
HISTORY_FILE = "history.csv"
SKIPPED_FILE = "skipped.csv"
METRICS_FILE = "metrics.json"
MODEL_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
LOGS_DIR = "logs"
CHECKPOINTS_DIR = "checkpoints"
PLOTS_DIR = "plots"
LOCK_FILE = ".lock"  # holds the id of the process training in the folder (run_folder_lock)


def default_run_dir(label, root="runs"):
    """`root/<label>-<YYYYmmdd-HHMMSS>`: the name of a run folder nobody named (not created)."""
    return Path(root) / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"


def new_run_dir(preset_name, run_dir=None, root="runs"):
    """Create a fresh run folder: `run_dir`, or `root/<preset>-<YYYYmmdd-HHMMSS>`.

    Raises:
        CatsDogsError: `run_dir` already holds a run (it is never written over).
    """
    if run_dir is not None:
        path = refuse_used_run_dir(run_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path
    first = default_run_dir(preset_name, root)
    for attempt in range(1, 1000):
        path = first.with_name(first.name + (f"-{attempt}" if attempt > 1 else ""))
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise CatsDogsError("could not create a run folder", where=root, fix="pass --run-dir")


def refuse_used_run_dir(run_dir):
    """`run_dir` as a Path, if it does not hold a run already (runs are never written over)."""
    path = Path(run_dir)
    if (path / CONFIG_FILE).exists():
        raise CatsDogsError("run folder already holds a run", where=path,
                            fix="continue it with --resume, or choose another --run-dir")
    return path


def existing_run_dir(run_dir):
    """A run folder to resume; it must hold the config.json of a started run."""
    path = Path(run_dir)
    if not (path / CONFIG_FILE).is_file():
        raise CatsDogsError("not a run folder: no config.json", where=path,
                            fix="pass the folder that `python -m catsdogs.train` created")
    return path


@contextlib.contextmanager
def run_folder_lock(run_dir):
    """Hold `run_dir` for this process while the body runs: one process per run folder.

    An OS file lock (flock) on `run_dir/.lock`: it goes with the process, so a run killed in
    any way (SIGKILL included) never leaves a stale lock, and nothing needs cleaning. A second
    process (a double click, a re-submitted job) stops at once, naming the holder.

    Raises:
        CatsDogsError: another process holds the folder.
    """
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            raise CatsDogsError(f"run folder is in use by process {holder}", where=path,
                                fix="wait for that run to finish, or stop it; one process "
                                    "trains in a run folder at a time")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)  # releases the lock


def _try_lock(fd):
    """Take an exclusive lock on open file `fd` without waiting; False if another process
    holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: msvcrt locks a byte range instead
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


# ---------------------------------------------------------------- atomic writes


def _fsync_dir(folder):
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; on success it replaces `path` in one step.

    The temporary name keeps `path`'s suffix (Keras checks `.keras`, `.weights.h5`). If the
    body raises or the process dies, `path` still holds its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}{''.join(path.suffixes)}")
    try:
        yield temp
        if temp.is_file():
            with open(temp, "rb") as written:
                os.fsync(written.fileno())
        os.replace(temp, path)
        _fsync_dir(path.parent)
    except OSError as error:
        _raise_if_disk_full(error, path, temp)
        raise
    finally:
        if temp.is_dir():
            shutil.rmtree(temp, ignore_errors=True)
        elif temp.exists():
            temp.unlink()


def size_of(path):
    """Bytes in a file, or in all files below a folder; 0 if absent."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def _raise_if_disk_full(error, path, temp):
    """A full disk becomes a one-line user error naming the file and the space needed."""
    if getattr(error, "errno", None) != errno.ENOSPC:
        return
    needed = max(size_of(path), size_of(temp), 1 << 20)
    raise CatsDogsError("disk full while writing; the previous file is unchanged", where=path,
                         fix=f"free at least {needed / 1e6:.0f} MB on that disk, then resume "
                             "with --resume") from error


def write_text(path, text):
    with atomic_path(path) as temp:
        temp.write_text(text)


def write_json(path, value):
    write_text(path, json.dumps(value, indent=2, default=str) + "\n")


def write_csv(path, header, rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def read_csv(path):
    """Rows of a CSV file as dicts; an absent file has none."""
    if not Path(path).is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def replace_dir(path, write):
    """Build a folder with `write(temp_folder)` beside `path`, then swap it in.

    A crash while writing leaves the old folder; a crash between the two renames leaves it as
    `<name>.old`, which `recover_dir` puts back.
    """
    path = Path(path)
    temp, old = path.with_name(f".{path.name}.tmp"), path.with_name(f".{path.name}.old")
    shutil.rmtree(temp, ignore_errors=True)
    try:
        write(temp)
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(temp, path)
        _fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as error:
        _raise_if_disk_full(error, path, temp)
        raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def remove_stale_temporaries(run_dir):
    """Delete the temporary files and folders of atomic writes that a killed process left in
    `run_dir` (the previous process is gone when a run is resumed)."""
    for leftover in Path(run_dir).rglob(".*.tmp*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def recover_dir(path):
    """Undo a swap that `replace_dir` could not finish (killed between its two renames)."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if not path.exists() and old.exists():
        os.replace(old, path)
