"""Fetch a public dataset archive, check it against its pinned SHA-256, and unpack it safely
(the library of `catsdogs download`).

Downloads go through Keras' own `keras.utils.get_file` (its cache in ~/.keras/datasets, its
hash check); an archive you already have is checked with `--archive`. Nothing is unpacked
unless the SHA-256 matches and every member stays inside `--into` (catsdogs.data.archives).
CIFAR-10 comes through `keras.datasets.cifar10`, whose download Keras checks against its own
pinned hash: `catsdogs train --dataset cifar10` reads its arrays, and `catsdogs download cifar10`
writes them as PNG class folders (what `--data` reads at any size, e.g. to pretrain at 64 px).
"""

import dataclasses
import re
import types
import urllib.error
from pathlib import Path

import numpy as np

from catsdogs import runs
from catsdogs.data import archives
from catsdogs.data.images import irregular_reason
from catsdogs.console import progress_bar, progress_to_stderr
from catsdogs.errors import CatsDogsError, RunFailed, machine_error


@dataclasses.dataclass(frozen=True)
class Source:
    """A published archive: where it is, what its bytes hash to, and the folder inside it."""

    url: str
    sha256: str
    megabytes: int
    image_folder: str  # the class-folder root inside the archive
    about: str


CIFAR10 = "cifar10"  # not an archive: Keras' own download, written out as class folders
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
CIFAR10_SPLITS = ("train", "test")  # as Keras returns them, and the folders written

SOURCES = types.MappingProxyType({
    # Microsoft's "Kaggle Cats and Dogs" release (25,000 photos in Cat/ and Dog/, some of them
    # corrupt: catsdogs skips those, `python -m catsdogs.doctor` lists them). The SHA-256 is
    # the one pinned by gomlx's dogsvscats example for the same URL; not re-verified here
    # (this machine is offline), so a changed upstream file is refused, never used.
    "petimages": Source(
        url="https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-"
            "6DEBA77B919F/kagglecatsanddogs_5340.zip",
        sha256="b7974bd00a84a99921f36ee4403f089853777b5ae8d151c76a86e64900334af9",
        megabytes=787, image_folder="PetImages",
        about="Kaggle Cats and Dogs (Microsoft, 25,000 photos)"),
})


def through_keras(get, where, fix, writes_to=None):
    """`get()`, a download through Keras (its cache in ~/.keras, its hash check), its progress
    on stderr (Keras prints it on stdout: results only there); a failure is one line naming
    `where` and, for any failure but a hash mismatch, `fix`; the machine refusing the write (a
    full disk, a read-only folder: Keras re-raises its OSError, which may name no file) names
    the file, or `writes_to` (default: Keras' cache folder), and the fix for that."""
    try:
        with progress_to_stderr():
            return get()
    except ValueError as error:  # Keras' message for a file whose hash does not match
        raise RunFailed(f"download failed its hash check ({error})", where=where,
                        fix="try again later; the file was not used") from None
    except Exception as error:  # offline, proxy, HTTP error: all mean the same to the user
        refused = machine_error(error, getattr(error, "filename", None) or writes_to
                                or _keras_cache())
        if refused is not None:
            raise refused from None
        raise RunFailed(f"could not download ({why_not_downloaded(error)})", where=where,
                        fix=fix) from None


def _keras_cache():
    """Keras' cache folder (~/.keras; KERAS_HOME moves it), where its downloads are written."""
    from keras.src.backend.config import keras_home

    return keras_home()


def why_not_downloaded(error):
    """A failed download's reason in words. Keras replaces urllib's error with a bare Exception
    whose text repeats the URL and a None errno ("URL fetch failure on URL: None -- [Errno -3]
    ..."), so the reason is read from the urllib error it replaced, when there is one."""
    for cause in (error, error.__context__):
        if isinstance(cause, urllib.error.HTTPError):
            return f"the server answered HTTP {cause.code} {cause.reason}"
        if isinstance(cause, urllib.error.URLError):
            reason = cause.reason
            return f"no connection: {getattr(reason, 'strerror', None) or reason}"
    return str(error) or type(error).__name__


def download(source, sha256):
    """The archive of `source` in Keras' cache, downloaded if absent or if its hash is wrong;
    Keras checks it against `sha256`, so the caller need not hash it again."""
    import keras

    name = source.url.rsplit("/", 1)[-1]
    return through_keras(lambda: Path(keras.utils.get_file(
        name, origin=source.url, file_hash=sha256, hash_algorithm="sha256")),
        source.url, "download it by hand, then pass --archive FILE")


def fetch(name=None, into=None, archive=None, sha256=None):
    """Check and unpack a dataset archive; returns the folder to train on.

    Args:
        name: a key of SOURCES, or None for your own `archive` with its `sha256`.
        into: the new folder to unpack into [default: ./<name>].
        archive: a local archive instead of downloading.
        sha256: expected hex digest (required without `name`; overrides the pinned one).
    """
    if name is None and (archive is None or sha256 is None):
        raise CatsDogsError("name a dataset, or pass both --archive and --sha256",
                            fix=f"known datasets: {', '.join([*SOURCES, CIFAR10])}")
    if name is not None and name not in SOURCES:
        raise CatsDogsError(f"unknown dataset {name!r}", fix=f"known: {', '.join(SOURCES)}")
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise CatsDogsError(f"bad value for --sha256: expected 64 hex digits, received {sha256!r}",
                            fix="copy the SHA-256 the publisher lists (sha256sum prints one)")
    source = SOURCES.get(name)
    into = Path(into or name or Path(archive).name.split(".")[0])
    runs.check_new_folder(into, "--into")  # before a download of gigabytes
    expected = sha256 or source.sha256
    if archive is None:
        archive = download(source, expected)  # hash-checked by Keras
    elif irregular_reason(archive):  # missing, or a FIFO or device that would never end
        raise CatsDogsError(f"cannot read the archive: {irregular_reason(archive)}",
                            where=archive, fix="pass the downloaded .zip / .tar.gz file")
    else:
        archives.verify_sha256(archive, expected)
    archives.extract(archive, into)
    return into / source.image_folder if source else into


def cifar10_arrays(where, fix):
    """CIFAR-10's ((train pixels, labels), (test pixels, labels)) through Keras' own downloader
    (checksum pinned by Keras) and cache; a failure names `where` (the flag or command that
    asked) and `fix`."""
    import keras

    return through_keras(keras.datasets.cifar10.load_data, where, fix)


def write_cifar10(into):
    """CIFAR-10 as PNG files (lossless) in class folders, train/ and test/, in the new folder
    `into`, all or nothing (runs.replace_dir): a folder any command reads, at any image size.

    Raises:
        CatsDogsError: `into` exists (never written over), or cannot be written.
        RunFailed: the download failed.
    """
    from PIL import Image

    into = runs.check_new_folder(into, "--into")  # before the download (170 MB)
    splits = cifar10_arrays(f"catsdogs download {CIFAR10}",
                            "go online (Keras keeps the download in ~/.keras/datasets: once is "
                            "enough)")

    def write(temp):
        bar = progress_bar(sum(len(pixels) for pixels, _ in splits))
        for split, (pixels, labels) in zip(CIFAR10_SPLITS, splits):
            for name in CIFAR10_CLASSES:
                (temp / split / name).mkdir(parents=True)
            for index, (image, label) in enumerate(zip(pixels, np.ravel(labels))):
                folder = temp / split / CIFAR10_CLASSES[label]
                Image.fromarray(image).save(folder / f"{index:05d}.png")
                if bar and index % 1000 == 999:
                    bar.add(1000)

    runs.replace_dir(into, write, over=False, sync_all=True)
    return into
