"""Archives from outside: checked against a pinned SHA-256, then unpacked only if every member
stays inside the target folder.

Python's own `tarfile` "data" filter and `zipfile` already neutralise most hostile members,
but silently: the zip module rewrites `../x` to `x`, and a filtered tar stops half-way with
part of the archive written. A dataset archive has no reason to hold an absolute path, a `..`
step, a link or a device file, so any such member refuses the *whole* archive before a single
byte is written, with one line naming the member.
"""

import hashlib
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from catsdogs import runs
from catsdogs.errors import CatsDogsError

CHUNK = 1 << 20


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
    """(name, why unsafe or None) for each member of a tar archive."""
    for member in archive.getmembers():
        if member.issym() or member.islnk():
            yield member.name, f"a {'symbolic' if member.issym() else 'hard'} link"
        elif not (member.isfile() or member.isdir()):
            yield member.name, "a device, pipe or other special file"
        else:
            yield member.name, _unsafe_name(member.name)


def _zip_members(archive):
    """(name, why unsafe or None) for each member of a zip archive."""
    for info in archive.infolist():
        if stat.S_ISLNK(info.external_attr >> 16):
            yield info.filename, "a symbolic link"
        else:
            yield info.filename, _unsafe_name(info.filename)


def _open(path):
    """The archive as (opened archive, its member checker); zip or any tar compression."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        return zipfile.ZipFile(path), _zip_members
    if tarfile.is_tarfile(path):
        return tarfile.open(path), _tar_members
    raise CatsDogsError("not a zip or tar archive", where=path,
                        fix="pass the .zip / .tar.gz file as downloaded")


def extract(path, into):
    """Unpack archive `path` into the new folder `into`, all members or none.

    Every member is checked before anything is written; the archive is unpacked into a
    temporary folder beside `into` and renamed into place, so an interrupted extraction never
    leaves a half-filled `into`. An existing `into` is never written over.

    Raises:
        CatsDogsError: `into` exists, the file is not an archive, or a member is unsafe.
    """
    into = Path(into)
    if into.exists():
        raise CatsDogsError("folder already exists; catsdogs never unpacks over files",
                            where=into, fix="pass another --into, or remove that folder")
    archive, members_of = _open(path)
    with archive:
        for name, why in members_of(archive):
            if why:
                raise CatsDogsError(f"refused archive: member {name!r} is {why}", where=path,
                                    fix="use the published archive; this one could write "
                                        "outside its folder")

        def unpack(temp):
            temp.mkdir(parents=True)
            if isinstance(archive, tarfile.TarFile) and hasattr(tarfile, "data_filter"):
                archive.extractall(temp, filter="data")  # second guard: Python's own checks
            else:  # zip, or a Python older than 3.10.12 / 3.11.4 (no filters; checked above)
                archive.extractall(temp)

        runs.replace_dir(into, unpack)
    return into
