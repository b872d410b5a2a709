"""The run folder: its name, its files, and writes that never leave a torn file behind nor
land outside the folder they were meant for.

Layout (design.md): config.json, class_names.json, dataset.json, history.csv, skipped.csv,
logs/ (TensorBoard), checkpoints/ (resume state), model.keras, saved_model/, plots/, metrics.json.
"""

import contextlib
import csv
import errno
import glob
import io
import itertools
import json
import os
import secrets
import shutil
import tempfile
import time
import unicodedata
from pathlib import Path

from catsdogs.errors import DISK_FULL, CatsDogsError, machine_errno, machine_error

CONFIG_FILE = "config.json"
CLASS_NAMES_FILE = "class_names.json"
DATASET_FILE = "dataset.json"
HISTORY_FILE = "history.csv"
SKIPPED_FILE = "skipped.csv"
METRICS_FILE = "metrics.json"
PHOTOS_FILE = "photos.json"  # which photos trained, chose the model, fitted T, tested
CALIBRATION_FILE = "calibration.json"  # the temperature, and what it was fitted on
MODEL_FILE = "model.keras"
SAVED_MODEL_DIR = "saved_model"
LOGS_DIR = "logs"
CHECKPOINTS_DIR = "checkpoints"
PLOTS_DIR = "plots"
AUGMENTATION_PREVIEW = "augmentation.png"  # in plots/: train --preview-augmentation
LOCK_FILE = ".lock"  # holds the id of the process training in the folder (run_folder_lock)
MAX_CLASS_NAME = 100  # characters: a class name is a folder name (--sort-into), a table column
# and a label on plots; filesystems allow 255 bytes, and 100 leaves room for the names built on it


RUNS_ROOT = "runs"  # where every command writes what no flag placed


def default_run_dir(label, root=RUNS_ROOT):
    """`root/<label>-<YYYYmmdd-HHMMSS>`: the name of a run folder nobody named (not created)."""
    return Path(root) / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"


def new_run_dir(preset_name, run_dir=None, root=RUNS_ROOT, ours=()):
    """Create a fresh run folder: `run_dir`, or `root/<preset>-<YYYYmmdd-HHMMSS>`.

    Raises:
        CatsDogsError: `run_dir` already holds a run (it is never written over).
    """
    if run_dir is not None:
        path = refuse_used_run_dir(run_dir, ours)
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


def refuse_used_run_dir(run_dir, ours=()):
    """`run_dir` as a Path, if it is new or empty: a run is never written over, nor are the
    files of a folder named by mistake (an evaluate report's metrics.json, a user's photos).
    Hidden entries (the lock, temporaries), `ours` (entries the run's other processes may make
    first: multi-worker workers' folders) and an augmentation preview do not count."""
    path = Path(run_dir)
    if (path / CONFIG_FILE).exists():
        raise CatsDogsError("run folder already holds a run", where=path,
                            fix="continue it with --resume, or choose another --run-dir")
    others = [name for name in visible_entries(path)
              if name not in ours and not _is_preview(path / name)]
    if others:
        raise CatsDogsError(f"run folder is not empty (it holds {others[0]})", where=path,
                            fix="choose a new or empty --run-dir")
    return path


def _is_preview(entry):
    """Whether `entry` is plots/ holding only an augmentation preview (train's
    --preview-augmentation writes it into the folder the run may then train in)."""
    return entry.name == PLOTS_DIR and visible_entries(entry) == [AUGMENTATION_PREVIEW]


def visible_entries(folder):
    """The names in `folder` that are not hidden, sorted ([] where it is no folder)."""
    folder = Path(folder)
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) \
        if folder.is_dir() else []


def check_output_folder(folder, where, reads=None, ours=(), replaced_whole=False):
    """A folder a command writes into (a report, a cleaned copy), checked before the work: new,
    empty (hidden entries aside, unless the folder is `replaced_whole`, as runs.replace_dir
    does: then they would be lost), or one the command wrote before (it holds one of `ours`,
    files only that command writes); never a run folder (its metrics.json would be written
    over), never inside the folder the command `reads` (check_outside).

    Raises:
        CatsDogsError: any of those, naming `where` (the flag) in the fix.
        MachineError: the folder cannot be written (check_writable).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CatsDogsError("not a folder", where=folder, fix=f"give {where} a new folder")
    if (folder / CONFIG_FILE).exists():
        raise CatsDogsError("the folder holds a training run", where=folder,
                            fix=f"give {where} another folder")
    check_outside(folder, reads, where)
    entries = (sorted(os.listdir(folder)) if folder.is_dir() else []) if replaced_whole \
        else visible_entries(folder)
    if entries and not any((folder / name).is_file() for name in ours):
        earlier = " and holds no earlier report of this command" if ours else ""
        raise CatsDogsError(f"the folder is not empty (it holds {entries[0]}){earlier}",
                            where=folder, fix=f"give {where} a new or empty folder")
    check_writable(folder)


def check_new_folder(folder, where):
    """A folder a command creates whole (an unpacked archive, a written data set), checked
    before the work: nothing may hold its name (not even a dangling link: catsdogs never
    writes over files) and its parent must be writable. Returns it as a Path."""
    folder = Path(folder)
    if os.path.lexists(folder):
        raise CatsDogsError("folder already exists; catsdogs never writes over files",
                            where=folder, fix=f"pass another {where}, or remove that folder")
    check_writable(folder)
    return folder


MAX_EARLIER_OUTPUT = 64 * 2**20  # bytes: a larger file is not read to see whether it is ours


def earlier_json_output(path):
    """The JSON object in `path`, read to see whether a command wrote it before (its keys),
    or None: a large file, not JSON, unreadable. A command then writes over its own earlier
    output and never over another file."""
    try:
        if Path(path).stat().st_size > MAX_EARLIER_OUTPUT:
            return None
        kept = json.loads(Path(path).read_bytes())
    except (OSError, ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return kept if isinstance(kept, dict) else None


def check_outside(path, data_dir, where):
    """`path` (a report, a copy) must not lie inside `data_dir`, the data the command reads:
    the next command would read it as data (a report's plots/ or a copy's folders as a class,
    a JSON report as an unreadable photo). No check where `data_dir` is None."""
    if data_dir is not None and Path(path).resolve().is_relative_to(Path(data_dir).resolve()):
        raise CatsDogsError(f"{where} would go inside the data it reads ({data_dir})",
                            where=path, fix=f"give {where} a path outside {data_dir}")


def existing_run_dir(run_dir):
    """A run folder to resume; it must hold the config.json of a started run."""
    path = Path(run_dir)
    if not path.exists():
        raise CatsDogsError("run folder not found", where=path, fix="check the path")
    if not (path / CONFIG_FILE).is_file():
        raise CatsDogsError("not a run folder: no config.json", where=path,
                            fix="pass the folder that `python -m catsdogs.train` created")
    return path


@contextlib.contextmanager
def run_folder_lock(run_dir):
    """Hold `run_dir` for this process while the body runs: one process per run folder.

    An OS file lock (flock) on `run_dir/.lock`: it goes with the process, so a run killed in
    any way (SIGKILL included) never leaves a stale lock, and nothing needs cleaning. A second
    process (a double click, a re-submitted job) stops at once, naming the holder: the lock is
    taken and the holder's process id written in one step (_one_at_a_time), so the id a
    second process reads is always there and always the holder's.

    Raises:
        CatsDogsError: another process holds the folder.
    """
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        with _one_at_a_time(path):
            if not _try_lock(fd):
                holder = os.read(fd, 32).decode(errors="replace").strip()
                raise CatsDogsError(f"run folder is in use by process {holder}", where=path,
                                    fix="wait for that run to finish, or stop it; one process "
                                        "trains in a run folder at a time")
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def _one_at_a_time(folder):
    """Let one process at a time into the body, by an OS lock on `folder` itself, held for
    the microseconds of a lock taken and an id written, or of a lock tried and an id read;
    so nobody reads the lock file between the two writes of its holder."""
    try:
        import fcntl
    except ImportError:  # Windows locks no folders: a reader may miss the id for a moment
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while another process is in the body
        yield
    finally:
        os.close(fd)


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


# ---------------------------------------------------------------- class names from elsewhere


def check_class_names(names, where):
    """`names` as a list, if each is fit to be a folder name, a table cell and a label.

    Class names travel with models and run folders between people, and `predict --sort-into`
    and `--explain` make paths of them, so every place they enter calls this: each name is
    non-empty, unique, holds no path separator (/ or \\), is not `.` or `..`, holds no control
    or invisible formatting characters and is at most MAX_CLASS_NAME characters long.

    Args:
        names: the names as read (anything JSON can hold).
        where: the file or flag they came from, named in the error.

    Raises:
        CatsDogsError: naming `where` and the first name refused.

    Example:
        >>> check_class_names(["cats", "dogs"], "class_names.json")
        ['cats', 'dogs']
    """
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise CatsDogsError("class names must be a list of names", where=where,
                            fix='e.g. ["cats", "dogs"]')
    seen = set()
    for name in names:
        why = _class_name_fault(name) or ("given twice" if name in seen else None)
        if why:
            shown = name if len(name) <= 40 else name[:40] + "..."  # the line stays short
            raise CatsDogsError(f"refused class name {shown!r}: {why}", where=where,
                                fix="class names are plain names such as cats or dogs; use the "
                                    "class names of the run that made the model")
        seen.add(name)
    return list(names)


def _class_name_fault(name):
    """Why `name` cannot be a class name, or None."""
    if not name.strip():
        return "empty"
    if name in (".", ".."):
        return "a path step"
    if "/" in name or "\\" in name:
        return "it holds a path separator"
    # Cc: control characters (newline, NUL, escape); Cf: invisible formatting (a right-to-left
    # override shows a name reversed); Zl, Zp: line and paragraph separators
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in name):
        return "it holds a control or invisible character"
    if len(name) > MAX_CLASS_NAME:
        return f"longer than {MAX_CLASS_NAME} characters"
    return None


# ---------------------------------------------------------------- writing into a given folder


def inside(folder, *parts):
    """`folder / parts`, if it resolves (links followed) inside `folder`.

    A second guard behind `check_class_names`: a link placed in the folder beforehand that
    leads out of it, or a name a future caller forgets to check, is refused, not followed.

    Raises:
        CatsDogsError: the path leads outside `folder`.
    """
    folder = Path(folder)
    path = folder.joinpath(*parts)
    try:
        escapes = not path.resolve().is_relative_to(folder.resolve())
    except RuntimeError:  # a loop of links (Python < 3.13 raises instead of OSError)
        escapes = True
    if escapes:
        raise CatsDogsError("refused to write outside the folder given", where=path,
                            fix=f"{folder} holds a link that leads out of it; remove it, or "
                                "choose a new folder")
    return path


NAME_MAX = 255  # bytes in one file name on the common filesystems (ext4, XFS, APFS, NTFS)
NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP),
                 errno.EMLINK, errno.EXDEV}  # FAT, some network filesystems


def fitted_name(stem, tail):
    """`stem + tail`, the stem cut short where the whole would pass NAME_MAX bytes (a photo's
    long name plus `-cats.jpg` would end in "File name too long")."""
    while stem and len(os.fsencode(stem + tail)) > NAME_MAX:
        stem = stem[:-1]
    return stem + tail


def write_new(folder, stem, suffix, write):
    """Write a new file `<stem><suffix>` in `folder`, or `<stem>-1<suffix>`, ...: the first
    name nothing holds; `write(path)` writes it; returns its path.

    Whole or absent: the file is written and fsynced under a hidden temporary name, then
    hard-linked to its name (a link never replaces an entry, nor writes through a link placed
    there a moment ago) and the temporary name removed, so a kill leaves no part-written file
    under a name a user sees. Where the filesystem has no hard links, the name is taken empty
    with O_EXCL and the written file renamed onto it.
    """
    folder = Path(folder)
    # 0o666 less the umask, as any new file (mkstemp's would be 0600, and a link keeps it)
    temp = folder / f".catsdogs-new-{secrets.token_hex(8)}{suffix}"
    try:
        os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        write(temp)
        _fsync_file(temp)
        for counter in itertools.count():
            path = inside(folder, fitted_name(stem, suffix if counter == 0
                                              else f"-{counter}{suffix}"))
            try:
                _link_or_rename(temp, path)
            except FileExistsError:
                continue
            _fsync_path(folder)
            return path
    except Exception as error:
        _raise_if_refused(error, folder / f"{stem}{suffix}", temp)
        raise
    finally:
        temp.unlink(missing_ok=True)


def _link_or_rename(temp, path):
    """Give the written file `temp` the name `path`, never over an existing entry."""
    try:
        os.link(temp, path)
    except FileExistsError:
        raise
    except OSError as error:
        if error.errno not in NO_HARD_LINKS:
            raise
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        try:
            os.replace(temp, path)
        except BaseException:
            os.unlink(path)  # the empty name this call took
            raise


def copy_new(source, folder, name=None):
    """Copy file `source` (with its times) into `folder` as a new file named `name` (default:
    its own name), `-1`, `-2`, ... added when taken (write_new); returns the copy's path."""
    name = Path(name or Path(source).name)

    def copy(target):
        shutil.copyfile(source, target)
        shutil.copystat(source, target)

    return write_new(folder, name.stem, name.suffix, copy)


# ---------------------------------------------------------------- atomic writes


def check_writable(folder):
    """Make sure files can be created in `folder` (or, where it does not exist yet, in its
    nearest existing parent), by creating and removing one: a read-only disk or a folder
    without permission is found before the work, not after it.

    Raises:
        MachineError: the machine refuses (read-only, permission, no space), naming `folder`.
        CatsDogsError: another reason (a file where a folder should be).
    """
    folder = Path(folder)
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".catsdogs-write-check-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise machine_error(error, folder) or CatsDogsError(
            f"cannot write here: {error.strerror}", where=folder,
            fix="choose another folder") from None


def _fsync_file(path):
    """A written file's contents on the disk before a name points at it; a failure (a full
    disk) raises, unlike _fsync_path's."""
    with open(path, "rb") as written:
        os.fsync(written.fileno())


def _fsync_path(path):
    """A file's or a folder's entries on the disk, by name (no handle of ours is open)."""
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened
        fd = os.open(path, os.O_RDONLY)
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
            _fsync_file(temp)
        os.replace(temp, path)
        _fsync_path(path.parent)
    except Exception as error:  # TensorFlow's own writes raise its OpError
        _raise_if_refused(error, path, temp)
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


def _raise_if_refused(error, path, temp):
    """The machine refusing a write (a full disk, read-only, no permission) becomes one line
    naming the file; for a full disk, with the space needed."""
    if machine_errno(error) in DISK_FULL:
        needed = max(size_of(path), size_of(temp), 1 << 20)
        raise machine_error(error, path, "disk full while writing; the previous file is "
                                         "unchanged",
                            f"free at least {needed / 1e6:.0f} MB on that disk, then run the "
                            "command again (a stopped training run continues with --resume)"
                            ) from error
    refused = machine_error(error, path)
    if refused is not None:
        raise refused from error


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


def read_history(path):
    """history.csv's rows, every value a number (or empty, a metric an epoch did not log): a
    resumed run compares and sums them, so an edited or damaged file is one line naming it."""
    rows = read_csv(path)
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        for key, value in row.items():
            try:
                if key == "epoch":
                    int(value)
                elif value:
                    float(value)
            except (TypeError, ValueError):
                raise CatsDogsError(f"line {number} of the history has {key} = {value!r}, not "
                                    "a number", where=path,
                                    fix="restore the file, or train the run again") from None
    return rows


TEMP_TAG, OLD_TAG = ".tmp-catsdogs-", ".old-catsdogs-"  # in the names of replace_dir's folders


def _fsync_tree(folder):
    """Every file and folder under `folder` on the disk (what the rename will point at)."""
    for root, _, files in os.walk(folder):
        for name in files:
            _fsync_path(os.path.join(root, name))
        _fsync_path(root)


def replace_dir(path, write, over=True, sync_all=False):
    """Build a folder with `write(temp_folder)` beside `path`, then swap it in (`over=False`:
    only if nothing took the name meanwhile; else the new folder is removed, the other kept).

    The new folder is built, and the old one set aside, each inside a folder made for this call
    (tempfile.mkdtemp: `.<name>.tmp-catsdogs-*`, `.<name>.old-catsdogs-*`), so no folder of the
    user's is ever taken for one, and only what this call made is removed. A crash while
    writing leaves the old folder; a crash between the two renames leaves it set aside, where
    `recover_dir` finds it and puts it back. The new folder's files reach the disk before its
    name points at them (an fsync a file, as for single files; `sync_all`: one os.sync()
    instead, for a folder of thousands such as an unpacked dataset), so a power cut cannot
    leave the name on files with no contents. What a killed call left half written beside
    `path` (an unpacked archive's gigabytes) is removed by the next call for the same name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(path)
    with _claimed_temp_dir(path.parent, f".{path.name}{TEMP_TAG}") as holder:
        _write_and_swap(path, holder / path.name, write, over, sync_all)


def _write_and_swap(path, temp, write, over, sync_all):
    """replace_dir's body: `write(temp)`, to disk, then renamed over `path`."""
    try:
        write(temp)
        if sync_all and hasattr(os, "sync"):  # POSIX
            os.sync()
        else:
            _fsync_tree(temp)
        old = None
        if not over and os.path.lexists(path):
            raise CatsDogsError("something took the name while the folder was written; it was "
                                "left as it is", where=path, fix="choose another name")
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}{OLD_TAG}", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(temp, path)
        _fsync_path(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except Exception as error:  # TensorFlow's own writes raise its OpError
        _raise_if_refused(error, path, temp)
        raise


@contextlib.contextmanager
def _claimed_temp_dir(parent, prefix):
    """A new folder in `parent` (tempfile.mkdtemp), removed after the body, and held all along
    by an OS lock on its LOCK_FILE: the lock goes with the process, so a folder whose lock is
    free was left by a killed one (_remove_abandoned)."""
    holder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    fd = None
    try:
        with _one_at_a_time(parent):  # a sweeper never sees the lock file before it is held
            fd = os.open(holder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            _try_lock(fd)
        yield holder
    finally:
        shutil.rmtree(holder, ignore_errors=True)
        if fd is not None:
            os.close(fd)


def _remove_abandoned(path):
    """Delete the temporary folders that killed calls of replace_dir left beside `path`: those
    with a lock file no process holds (one without may be a user's, or an older version's,
    and is left alone)."""
    temp_prefix = glob.escape(f".{path.name}{TEMP_TAG}")
    with _one_at_a_time(path.parent):
        for lock in path.parent.glob(f"{temp_prefix}*/{LOCK_FILE}"):
            try:  # gone meanwhile (its writer finished), or another user's: not ours to judge
                fd = os.open(lock, os.O_RDONLY)
            except OSError:
                continue
            try:
                abandoned = _try_lock(fd)
            finally:
                os.close(fd)
            if abandoned:
                shutil.rmtree(lock.parent, ignore_errors=True)


def remove_stale_temporaries(run_dir):
    """Delete the temporary files and folders of atomic writes that a killed process left in
    `run_dir` (the previous process is gone when a run is resumed)."""
    for leftover in Path(run_dir).rglob(".*.tmp*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def recover_dir(path):
    """Undo a swap that `replace_dir` could not finish (killed between its two renames): the
    folder set aside last goes back in place (`.<name>.old` is where earlier versions left it)."""
    path = Path(path)
    if path.exists():
        return
    pattern = f".{glob.escape(path.name)}{OLD_TAG}*/{glob.escape(path.name)}"
    set_aside = sorted(path.parent.glob(pattern), key=lambda p: p.parent.stat().st_mtime)
    legacy = path.with_name(f".{path.name}.old")
    if set_aside:
        os.replace(set_aside[-1], path)
        set_aside[-1].parent.rmdir()  # the holder replace_dir made, now empty
    elif legacy.exists():
        os.replace(legacy, path)
