"""Decoded pixels on disk: a folder is decoded once, trained from with bounded memory, and
reused by every later run, worker and command that reads it at the same image size.

One cache folder per source folder and decode settings (image size, images.DECODE_SETTINGS),
under cache_root(), holds:

    pixels-<token>.npy   uint8 (rows, height, width, 3), a NumPy array file, never changed
    manifest.json        written last: settings, the pixels file's name and shape, and per file
                         (real path, size, mtime) its row and SHA-256, or why it cannot be read
    .lock                flock'd while the cache is read or brought up to date

Paths are real (symbolic links resolved), so a tree of symbolic links to a folder's photos read
through that folder's cache (Storage.source: each fold of k-fold) decodes nothing the folder's
runs did; hard links and copies (k-fold's fallback where the file system makes no symbolic
links) are other paths, decoded once more.

Bringing a cache up to date decodes only the files it lacks or that changed (size or mtime).
The rows still true of their files are copied into a new pixels file, the new ones appended,
written under a temporary name and renamed; then the manifest; then the old file goes. A
process still reading the old file keeps it (an open file outlives its name). Entries of
files that are gone drop out at that update. The user's photos are only ever read.

Training reads rows by position (os.preadv) rather than through np.memmap: the pages of a
memory map count in the process's resident memory as it touches them, so after one epoch a
map of the whole file holds as much as the in-memory path does; a read costs one copy per
batch, and the kernel's page cache keeps the file hot for the next epoch all the same.
"""

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path

import numpy as np

from catsdogs import config as cfg
from catsdogs import runs
from catsdogs.console import display, log, progress_bar
from catsdogs.data.images import DECODE_SETTINGS, PROCESSES_FROM, decode_many
from catsdogs.data.streamed import open_files
from catsdogs.errors import DISK_FULL, RunFailed

# where decoded pixels live while training: TrainConfig.cache, one of cfg.CACHES (none:
# nowhere, decoded again in every epoch's batches, streamed.py)
CACHE_ENV = "CATSDOGS_CACHE"  # moves the default cache root, as --cache-dir does
MANIFEST = "manifest.json"
LOCK = ".lock"
FORMAT = 1  # the layout above; a manifest of another format is decoded again
BATCH_BYTES = 64 << 20  # decoded pixels held in memory at once while a cache is filled
# The in-memory path holds about 3x the decoded bytes at its peak (decode_many's array, the
# split, tf.constant's copy); `auto` takes it while that is under half the available memory.
RAM_FACTOR = 3


def cache_root(cache_dir=None):
    """Where caches live: `cache_dir`, else $CATSDOGS_CACHE, else $XDG_CACHE_HOME/catsdogs,
    else ~/.cache/catsdogs."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "catsdogs"


def available_memory():
    """Bytes that can be allocated without swapping (/proc/meminfo MemAvailable); None where
    the system does not say."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclasses.dataclass(frozen=True)
class CacheConfig:
    """Where a command that decodes a labelled folder (evaluate, calibrate) keeps the decoded
    pixels: train's --cache and --cache-dir."""

    cache: str = cfg.same_setting(cfg.TrainConfig, "cache")
    cache_dir: str | None = cfg.same_setting(cfg.TrainConfig, "cache_dir")

    def __post_init__(self):
        cfg.check_choices(self)


@dataclasses.dataclass
class Storage:
    """Where one load's decoded pixels go: `mode` auto, ram, disk or none (auto is settled
    once, on the first count of images: decide, and never to none), and the cache folders
    used, for dataset.json. `source`, when given, is the folder whose disk cache every decode
    goes through, whatever folder the files were listed in (a k-fold fold's tree of links to
    that folder's photos)."""

    mode: str = "ram"
    cache_dir: str | None = None
    source: str | None = None
    folders: list = dataclasses.field(default_factory=list)

    @classmethod
    def of(cls, settings):
        """The Storage a TrainConfig, CacheConfig or AuditConfig asks for."""
        return cls(settings.cache, settings.cache_dir, getattr(settings, "cache_source", None))

    def decide(self, images, image_size):
        """Settle `auto` for `images` images of `image_size`; says which and why in one line."""
        if self.mode != "auto":
            return self.mode
        needed = images * image_size[0] * image_size[1] * 3
        available = available_memory()
        if available is None:
            self.mode, why = "ram", "the available memory is unknown"
        else:
            self.mode = "ram" if RAM_FACTOR * needed <= available / 2 else "disk"
            relation = "is under" if self.mode == "ram" else "is over"
            digits = 0 if needed >= 1e7 else 1  # a sample's 0.2 MB, not "0 MB"
            why = (f"{images} images decode to {needed / 1e6:,.{digits}f} MB; {RAM_FACTOR}x "
                   f"that {relation} half of the {available / 1e9:.1f} GB available")
        log().info(f"Cache: {self.mode} (--cache auto: {why})")
        return self.mode

    def decode(self, paths, size, source, describe=None):
        """(pixels, rows, kept, skipped, digests) of `paths`, files of folder `source`, read
        through its disk cache (decode_cached), or with mode none opened to be decoded when
        read (streamed.open_files). `pixels` is read by rows: DiskArray, DecodeOnRead.
        `describe` names the files in the line that says how they were read ("training
        images from DIR"; default "images from SOURCE")."""
        describe = describe or f"images from {display(source)}"
        if self.mode == "none":
            return open_files(paths, size, describe)
        source = self.source or source
        folder = cache_folder(cache_root(self.cache_dir), source, size)
        if folder not in self.folders:
            self.folders.append(folder)
        return decode_cached(paths, size, source, folder, describe)

    def record(self):
        """What dataset.json says about where the pixels were."""
        if self.mode != "disk":
            return {"mode": self.mode}
        return {"mode": "disk", "folders": [str(folder) for folder in self.folders]}


def cache_folder(root, source, size):
    """The cache folder of `source` decoded at `size`: named for people, keyed by a hash of
    the source's real path (a link to the folder finds its cache) and every decode setting."""
    source = os.path.realpath(source)
    key = json.dumps({"source": source, "size": list(size), "format": FORMAT,
                      **DECODE_SETTINGS}, sort_keys=True)
    digest = hashlib.sha256(key.encode(errors="surrogateescape")).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(source).name)[:40]
    return Path(root) / f"{name}-{size[0]}x{size[1]}-{digest}"


# ---------------------------------------------------------------- reading a pixels file


class DiskArray:
    """A cache's pixels file, held open and checked whole: `read(rows)` copies those rows
    into a new array. Raises ValueError for a file that is not what its header says.
    `failure`: the RunFailed `read` raised for a file cut short during the run (another
    program truncated it in place), which tf_pipeline.read_errors_raised raises as one line."""

    dtype = np.dtype(np.uint8)
    failure = None

    def __init__(self, path):
        self.path = Path(path)
        self.fd = os.open(path, os.O_RDONLY)
        try:
            with os.fdopen(os.dup(self.fd), "rb") as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran_order, dtype = read_header(handle)
                self.offset = handle.tell()
            if dtype != self.dtype or fortran_order or len(shape) != 4 or shape[3] != 3:
                raise ValueError(f"holds {dtype} {shape}, not uint8 images")
            self.shape = tuple(shape)
            self.row_bytes = int(np.prod(shape[1:]))
            expected, actual = self.offset + shape[0] * self.row_bytes, os.fstat(self.fd).st_size
            if actual != expected:
                raise ValueError(f"{actual:,} bytes where its shape needs {expected:,}")
        except BaseException:
            os.close(self.fd)
            raise

    def __len__(self):
        return self.shape[0]

    def read(self, rows):
        """The images at `rows` (any order, repeats allowed), shape (len(rows), h, w, 3)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        flat = out.reshape(len(rows), self.row_bytes)
        for row, buffer in zip(rows, flat):
            if os.preadv(self.fd, [buffer], self.offset + int(row) * self.row_bytes) != self.row_bytes:
                self.failure = self.failure or RunFailed(
                    f"the disk cache's pixels file was cut short during the run (it ends "
                    f"before image {row:,})", where=self.path,
                    fix="leave the cache folder alone while a run reads it; run again (the "
                        "cache is checked and rebuilt), or train with --cache ram")
                raise self.failure
        return out

    def __del__(self):
        with contextlib.suppress(Exception):
            os.close(self.fd)


# ---------------------------------------------------------------- bringing a cache up to date


def decode_cached(paths, size, source, folder, describe="images"):
    """Decode `paths` (files of `source`) at `size` through the cache in `folder`: only files
    it lacks, or that changed since, are decoded; two processes at once take turns (flock).
    One line says which: all read from the cache, some decoded into it, or all (`describe`
    names the files: "training images from DIR").

    Returns:
        (DiskArray, rows, kept, skipped, digests): `rows[j]` is the pixels file's row of
        `paths[kept[j]]`; skipped holds (path, reason) of the unreadable files, as
        images.decode_many's.
    Raises:
        RunFailed: the disk is full (or refuses) while caching; nothing partial is left.
    """
    keys = [_file_key(path) for path in paths]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder):
            manifest, store = _open(folder, size)
            entries = manifest["files"] if manifest else {}
            missing = [key for key in keys if not _same(entries.get(key[0]), key)]
            log().info(_reading_line(len(paths), describe, len(set(missing)), folder))
            if manifest is None or missing:
                manifest, store = _update(folder, size, source, entries, store, keys, missing)
            else:
                os.utime(folder / MANIFEST)  # its mtime is the cache's last use
    except OSError as error:
        raise _refused(error, folder) from None
    rows, kept, skipped, digests = [], [], [], []
    for index, (path, key) in enumerate(zip(paths, keys)):
        entry = manifest["files"][key[0]]
        if "reason" in entry:
            skipped.append((path, entry["reason"]))
        else:
            rows.append(entry["row"])
            kept.append(index)
            digests.append(entry["digest"])
    return store, np.array(rows, dtype=np.int64), np.array(kept, dtype=np.int64), skipped, digests


def _reading_line(count, describe, new, folder):
    """What reading `count` files through the cache in `folder` does, `new` of them not in it."""
    if not new:
        return f"Reading {count} {describe} out of the cache {folder}"
    if new == count:
        return f"Decoding {count} {describe} into the cache {folder}"
    return (f"Reading {count} {describe} out of the cache {folder}; decoding {new} new or "
            f"changed ones into it")


def _file_key(path):
    """(real path, size, mtime in ns): a file whose key changed is decoded again. The real
    path (symbolic links resolved): a symbolic link to a photo (a k-fold fold's tree) finds the
    photo's row; a hard link or a copy does not, and is decoded once more."""
    real = os.path.realpath(path)
    try:
        info = os.stat(real)
        return real, info.st_size, info.st_mtime_ns
    except OSError:  # gone, or not ours to read: decode_many says why, and it is not reused
        return real, -1, -1


def _same(entry, key):
    return entry is not None and entry["size"] == key[1] and entry["mtime_ns"] == key[2] >= 0


@contextlib.contextmanager
def _locked(folder):
    """Hold the cache's lock (flock: released by the OS when a process dies, however)."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; one process per cache is then the user's care
        yield
        return
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log().info(f"Waiting for another process filling the cache {folder}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _open(folder, size):
    """(manifest, DiskArray) of the cache in `folder` if it is whole and matches `size`,
    else (None, None); a damaged one says so and is decoded again, never trained on."""
    path = folder / MANIFEST
    if not path.exists():
        return None, None
    try:
        manifest = json.loads(path.read_text())
        if (manifest.get("format") != FORMAT or manifest["image_size"] != list(size)
                or manifest["decode"] != DECODE_SETTINGS):
            raise ValueError("made with other settings")
        store = DiskArray(folder / manifest["pixels"])
        if store.shape != (manifest["rows"], *size, 3):
            raise ValueError(f"shape {store.shape}, the manifest says {manifest['rows']} rows")
        return manifest, store
    except (OSError, ValueError, KeyError, TypeError) as error:
        log().warning(f"Cache {folder} is damaged ({error}): decoding its images again")
        return None, None


def _update(folder, size, source, entries, store, keys, missing):
    """Write a new pixels file (rows still true of their files, then `missing` decoded) and
    its manifest; remove the old file. Returns (manifest, DiskArray)."""
    missing = list(dict.fromkeys(missing))  # a path listed twice is decoded once
    wanted, stale = {key[0] for key in keys}, {key[0] for key in missing}
    kept = {path: entry for path, entry in entries.items() if store is not None
            and path not in stale and (path in wanted or _same(entry, _file_key(path)))}
    reused = [path for path, entry in kept.items() if "reason" not in entry]
    total = len(reused) + len(missing)
    name = f"pixels-{secrets.token_hex(6)}.npy"
    temp, final = folder / f".{name}.tmp", folder / name
    files = {path: entry for path, entry in kept.items() if "reason" in entry}
    try:
        with open(temp, "wb") as out:
            np.lib.format.write_array_header_1_0(
                out, {"descr": "|u1", "fortran_order": False, "shape": (total, *size, 3)})
            for start, batch in _batches(reused, size):
                _write(out, store.read([kept[path]["row"] for path in batch]))
                files.update({path: {**kept[path], "row": start + i} for i, path in enumerate(batch)})
            files.update(_decode_into(out, missing, size, len(reused)))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, final)
        manifest = {"format": FORMAT, "source": os.path.realpath(source),
                    "image_size": list(size), "decode": DECODE_SETTINGS, "pixels": name,
                    "rows": total, "bytes": final.stat().st_size,
                    "images": sum("row" in entry for entry in files.values()), "files": files}
        runs.write_text(folder / MANIFEST, json.dumps(manifest))
    except BaseException:
        temp.unlink(missing_ok=True)
        if final.exists() and not _names(folder / MANIFEST, name):
            final.unlink()
        raise
    for leftover in folder.glob("*pixels-*"):  # older files; a dead writer's temporary
        if leftover.name != name:
            leftover.unlink(missing_ok=True)
    return manifest, DiskArray(final)


def _names(manifest_path, name):
    with contextlib.suppress(OSError, ValueError):
        return json.loads(manifest_path.read_text()).get("pixels") == name
    return False


def _batches(items, size):
    """(first index, items) in batches of about BATCH_BYTES of decoded pixels."""
    step = max(1, BATCH_BYTES // (size[0] * size[1] * 3))
    for start in range(0, len(items), step):
        yield start, items[start:start + step]


def _decode_into(out, keys, size, first_row):
    """Decode the files of `keys` batch by batch, appending their pixels to `out` (an
    unreadable file's row stays zero, unused); returns their manifest entries."""
    files, bar = {}, progress_bar(len(keys))
    processes_from = 1 if len(keys) >= PROCESSES_FROM else PROCESSES_FROM
    for start, batch in _batches(keys, size):
        decoded = decode_many([key[0] for key in batch], size, progress=False,
                              processes_from=processes_from)
        pixels = np.zeros((len(batch), *size, 3), np.uint8)
        pixels[decoded.kept] = decoded.pixels
        _write(out, pixels)
        reasons = dict(decoded.skipped)
        digests = dict(zip(decoded.kept.tolist(), decoded.digests))
        for index, (path, file_size, mtime_ns) in enumerate(batch):
            entry = {"size": file_size, "mtime_ns": mtime_ns}
            if index in digests:
                entry.update(row=first_row + start + index, digest=digests[index])
            else:
                entry["reason"] = reasons[path]
            files[path] = entry
        if bar is not None:
            bar.update(start + len(batch))
    return files


def _write(out, pixels):
    """Append `pixels` to the open file `out` (one place, so tests can fill the disk)."""
    out.write(np.ascontiguousarray(pixels).data)


def _refused(error, folder):
    """A full (or refusing) disk while caching, as one line naming the cache folder."""
    if error.errno in DISK_FULL:
        what = "disk full while caching decoded images; no partial file is left"
    else:
        what = f"cannot write the cache: {error.strerror or error}"
    return RunFailed(what, where=folder,
                     fix="free space there, move the cache with --cache-dir or CATSDOGS_CACHE, "
                         "or train with --cache ram")


# ---------------------------------------------------------------- listing and clearing


def list_caches(root):
    """One dict per cache folder under `root` (folder, source, image_size, images, bytes,
    last_used as a Unix time), oldest use first; folders of other programs are left out."""
    caches = []
    for folder in sorted(Path(root).iterdir()) if Path(root).is_dir() else ():
        manifest = _read_manifest(folder)
        if manifest is None and not _only_ours(folder):
            continue
        manifest = manifest or {}
        used = folder / (MANIFEST if manifest else LOCK)
        caches.append({"folder": folder, "source": manifest.get("source", "(never completed)"),
                       "image_size": manifest.get("image_size"),
                       "images": manifest.get("images", 0), "bytes": runs.size_of(folder),
                       "last_used": used.stat().st_mtime if used.exists() else 0.0})
    return sorted(caches, key=lambda cache: cache["last_used"])


def clear_caches(root, older_than_days=None, now=None):
    """Remove the caches under `root` (only those last used over `older_than_days` ago, when
    given); a cache another process is using is left. Returns (removed, in use) caches."""
    now = time.time() if now is None else now
    removed, busy = [], []
    for cache in list_caches(root):
        if older_than_days is not None and now - cache["last_used"] < older_than_days * 86400:
            continue
        if _remove_if_free(cache["folder"]):
            removed.append(cache)
        else:
            busy.append(cache)
    return removed, busy


def _remove_if_free(folder):
    try:
        import fcntl
    except ImportError:
        shutil.rmtree(folder)
        return True
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    try:
        shutil.rmtree(folder)
    finally:
        os.close(fd)
    return True


def _read_manifest(folder):
    """A cache's manifest (of any format: `cache clear` removes old ones too), or None for a
    folder that is no cache of ours: `--cache-dir` may name a folder holding others' folders,
    and `clear` removes what this returns a manifest for."""
    with contextlib.suppress(OSError, ValueError):
        manifest = json.loads((folder / MANIFEST).read_text())
        if isinstance(manifest, dict) and isinstance(manifest.get("format"), int) and \
                {"source", "image_size"} <= manifest.keys() and _cache_files_only(folder):
            return manifest
    return None


def _only_ours(folder):
    """A cache never completed: its lock and pixels files, no manifest."""
    return (folder / LOCK).is_file() and _cache_files_only(folder)


def _cache_files_only(folder):
    """Whether `folder` holds nothing but what a cache writes (its lock, where the system has
    one, manifest and pixels files and their temporaries) and what systems leave beside files
    (.DS_Store, NFS's .nfs* of a file still open)."""
    return all(p.name in (LOCK, MANIFEST, ".DS_Store") or "pixels-" in p.name
               or p.name.startswith((f".{MANIFEST}.tmp", ".nfs")) for p in folder.iterdir())
