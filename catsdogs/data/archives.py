"""Archives from outside: checked against a pinned SHA-256, then unpacked only if every member
stays inside the target folder and the whole fits on the disk.

Python's own `tarfile` "data" filter and `zipfile` already neutralise most hostile members,
but silently: the zip module rewrites `../x` to `x`, and a filtered tar stops half-way with
part of the archive written. A dataset archive has no reason to hold an absolute path, a `..`
step, a link or a device file, so any such member refuses the *whole* archive before a single
byte is written, with one line naming the member. Nor does it have a reason to unpack to more
than the disk holds, to a thousand times its own size, or to millions of files: the members'
declared sizes (which the zip and tar readers hold each member to) are summed first.
"""

import gzip
import hashlib
import lzma
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath

from catsdogs import runs
from catsdogs.errors import DISK_FULL, CatsDogsError

CHUNK = 1 << 20
# PetImages holds 25,000 files, CIFAR-10 as PNGs 60,000; ImageNet's 1.28 M training photos come
# as one tar per class. Each member costs an inode and a disk block: past a million, an archive
# is far likelier a bomb of empty files than one dataset.
MAX_MEMBERS = 1_000_000
# Photos (JPEG, PNG) are compressed already, so a photo archive unpacks to about its own size;
# text and BMP files reach 3-10x. Deflate stops near 1,000x, so past 100x an archive is mostly
# one byte repeated: a bomb. Below EXPANSION_CHECKED_FROM unpacked, no ratio can hurt.
MAX_EXPANSION = 100
EXPANSION_CHECKED_FROM = 100 * 2**20  # bytes
BLOCK = 4096  # bytes: the least disk a file takes on common filesystems, counted per member
FREE_MARGIN = 100 * 2**20  # bytes left free after unpacking: a full disk stops other programs


def sha256_of(path):
    """Hex SHA-256 of a file, read in 1 MB chunks (archives can be larger than memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path, expected):
    """Raise a one-line CatsDogsError unless `path` has the SHA-256 `expected`."""
    actual = sha256_of(path)
    if actual != expected.lower():
        raise CatsDogsError(f"SHA-256 mismatch: expected {expected.lower()}, got {actual}; "
                            "the file is incomplete, corrupt or not the published archive",
                            where=path, fix="delete it and download it again")


# what the zip, tar and compression modules raise on a truncated or damaged archive
CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile,
           lzma.LZMAError, NotImplementedError)  # the last: a zip compressed by an unknown method


def _unsafe_name(name):
    """Why a member name would land outside the target folder, or None if it is safe."""
    for flavour in (PurePosixPath, PureWindowsPath):
        parsed = flavour(name)
        if parsed.is_absolute() or parsed.drive or parsed.root:
            return "an absolute path"
        if ".." in parsed.parts:
            return "a '..' step"
    return None


def _tar_members(archive):
    """(name, why unsafe or None, bytes) for each member of a tar archive, read as it goes
    (iterating, not getmembers(), so a refusal comes before the rest is read)."""
    for member in archive:
        if member.issym() or member.islnk():
            yield member.name, f"a {'symbolic' if member.issym() else 'hard'} link", 0
        elif not (member.isfile() or member.isdir()):
            yield member.name, "a device, pipe or other special file", 0
        else:
            yield member.name, _unsafe_name(member.name), member.size


def _zip_members(archive):
    """(name, why unsafe or None, bytes) for each member of a zip archive."""
    for info in archive.infolist():
        if stat.S_ISLNK(info.external_attr >> 16):
            yield info.filename, "a symbolic link", 0
        else:
            yield info.filename, _unsafe_name(info.filename), info.file_size


def _open(path):
    """The archive as (opened archive, its member checker); zip or any tar compression."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        return zipfile.ZipFile(path), _zip_members
    if tarfile.is_tarfile(path):
        return tarfile.open(path), _tar_members
    raise CatsDogsError("not a zip or tar archive", where=path,
                        fix="pass the .zip / .tar.gz file as downloaded")


def _survey(archive, members_of, path):
    """(members, bytes unpacked) of an archive whose every member is safe and that holds at
    most MAX_MEMBERS; else the refusal naming the first member at fault."""
    count = total = 0
    for name, why, size in members_of(archive):
        count, total = count + 1, total + size
        if count > MAX_MEMBERS:
            why = f"one more than the {MAX_MEMBERS:,} members an archive may hold"
        if why:
            raise CatsDogsError(f"refused archive: member {name!r} is {why}", where=path,
                                fix="use the published archive; this one could write "
                                    "outside its folder or fill the disk")
    return count, total


def _nearest_existing(path):
    """`path` or the closest folder above it that exists: where its disk is measured."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return path


def _check_room(path, into, count, total):
    """Refuse, before writing, an archive that would fill the disk or that is a bomb; returns
    the bytes it needs."""
    needed = total + count * BLOCK
    packed = max(1, os.path.getsize(path))
    if total > EXPANSION_CHECKED_FROM and total / packed > MAX_EXPANSION:
        raise CatsDogsError(f"refused archive: it unpacks to {total / 1e6:,.0f} MB, "
                            f"{total / packed:,.0f} times its own size (at most {MAX_EXPANSION}x "
                            "is accepted)", where=path,
                            fix="use the published archive; this one is built to fill the disk")
    free = shutil.disk_usage(_nearest_existing(into)).free
    if needed + FREE_MARGIN > free:
        raise CatsDogsError(f"not enough disk space: the archive unpacks to {needed / 1e6:,.0f} "
                            f"MB ({count:,} members) and {free / 1e6:,.0f} MB are free",
                            where=into, fix=f"free {(needed + FREE_MARGIN - free) / 1e6:,.0f} "
                                            "MB on that disk, or pass --into on another disk")
    return needed


def extract(path, into):
    """Unpack archive `path` into the new folder `into`, all members or none.

    Every member is checked, and the sizes summed against the free space, before anything is
    written; the archive is unpacked into a temporary folder beside `into` that this call
    makes (runs.replace_dir) and renamed into place, so an interrupted or failed extraction
    never leaves a half-filled `into`, nor removes anything it did not make. An existing `into`
    is never written over.

    Raises:
        CatsDogsError: `into` exists, the file is not an archive or is damaged (truncated,
            a bad checksum inside), a member is unsafe, the archive is too large for the disk
            or a bomb (MAX_MEMBERS, MAX_EXPANSION), or the disk filled up while unpacking
            (nothing is kept).
    """
    into = runs.check_new_folder(into, "--into")
    try:
        archive, members_of = _open(path)
        with archive:
            _unpack_checked(archive, members_of, path, into)
    except CORRUPT as error:  # replace_dir has removed what it unpacked
        raise _damaged(path, error) from None
    except OSError as error:
        if error.errno is None:  # a decompressor's complaint (bz2: "Invalid data stream")
            raise _damaged(path, error) from None
        raise
    return into


def _damaged(path, error):
    return CatsDogsError(f"damaged archive: {error}", where=path,
                         fix="download it again (a truncated download, or a changed file)")


def _unpack_checked(archive, members_of, path, into):
    """extract()'s body, on the opened archive: survey, room check, unpack into place."""
    needed = _check_room(path, into, *_survey(archive, members_of, path))

    def unpack(temp):
        temp.mkdir()
        try:
            if isinstance(archive, tarfile.TarFile) and hasattr(tarfile, "data_filter"):
                archive.extractall(temp, filter="data")  # second guard: Python's checks
            else:  # zip, or a Python older than 3.10.12 / 3.11.4 (no filters; checked above)
                archive.extractall(temp)
        except RuntimeError as error:  # zipfile: an encrypted member
            raise CatsDogsError(f"cannot unpack: {error}", where=path,
                                fix="unpack it with its password yourself, then pass the "
                                    "folder") from None
        except OSError as error:
            if error.errno not in DISK_FULL:
                raise
            raise CatsDogsError("disk full while unpacking; nothing was kept", where=into,
                                fix=f"free at least {needed / 1e6:,.0f} MB on that disk, "
                                    "or pass --into on another disk") from None

    runs.replace_dir(into, unpack, over=False, sync_all=True)
