"""keras.applications' ImageNet weights: where Keras gets them, where it keeps them, and
fetching them ahead of time for a machine without the network (`catsdogs weights fetch`).

The URL and hash of each file are read from the keras.applications module that downloads it
(its BASE_WEIGHTS_PATH and WEIGHTS_HASHES), not copied here: the file fetched is the one
`--weights imagenet` would download, checked as Keras checks it. Keras imports inside the
functions: the presets' registry holds these records and is read before TensorFlow loads.
"""

import dataclasses
import glob
import importlib
import os
import re
from pathlib import Path

from catsdogs import runs
from catsdogs.errors import CatsDogsError


@dataclasses.dataclass(frozen=True)
class ImagenetWeights:
    """A keras.applications backbone's notop ImageNet weights, as Keras downloads them."""

    file: str  # the name Keras saves it as in ~/.keras/models
    module: str  # the keras.applications module that downloads it (keras.src.applications.*)
    key: str  # its entry in that module's WEIGHTS_HASHES

    def origin_and_hash(self):
        """The URL Keras downloads the file from and the hash it checks (MD5 or SHA-256)."""
        module = importlib.import_module(f"keras.src.applications.{self.module}")
        base = getattr(module, "BASE_WEIGHTS_PATH", None) or module.BASE_WEIGHT_PATH
        return base + self.file, module.WEIGHTS_HASHES[self.key][1]

    def where_keras_looks(self):
        """Keras' cache path of the file (~/.keras/models/<file>; KERAS_HOME moves it)."""
        from keras.src.backend.config import keras_home

        path, home = os.path.join(keras_home(), "models", self.file), os.path.expanduser("~")
        return "~" + path[len(home):] if path.startswith(home + os.sep) else path

    def fetch(self, into=None):
        """Download the file with Keras' own downloader (keras.utils.get_file) into Keras' cache,
        where `--weights imagenet` finds it, or into the folder `into`; a file already there with
        the right hash is kept. Returns its path.

        Into a folder of the user's, the file is downloaded under a hidden temporary name and
        renamed when whole (Keras writes onto the final name, so a kill left a partial file a
        `--weights` path then named), and a file of that name with another hash is refused
        (Keras would download over it).

        Raises:
            RunFailed: no network, or a file that fails the hash (exit 1).
            CatsDogsError: `into` is not a folder, or holds another file of that name;
                MachineError: one that cannot be written.
        """
        import keras

        from catsdogs.data.download import through_keras  # numpy, Pillow: not for the registry

        origin, file_hash = self.origin_and_hash()

        def download(name, **place):
            return Path(through_keras(
                lambda: keras.utils.get_file(name, origin, file_hash=file_hash, **place),
                origin, fix="run it again on a machine that reaches the address (through a "
                            "proxy: set https_proxy)", writes_to=into))

        if into is None:
            return download(self.file, cache_subdir="models")
        into = Path(into).absolute()
        if into.exists() and not into.is_dir():
            raise CatsDogsError("not a folder", where=into, fix="give a folder for --into")
        runs.check_writable(into)  # else Keras quietly writes to /tmp/.keras instead
        into.mkdir(parents=True, exist_ok=True)
        target = into / self.file
        if self._kept(target, file_hash):
            return target
        for leftover in into.glob(f".{glob.escape(self.file)}.tmp-*"):  # a killed fetch's
            if not _running(leftover.name):
                leftover.unlink(missing_ok=True)
        try:
            with runs.atomic_path(target) as temp:
                download(temp.name, cache_dir=str(into), cache_subdir="")
                if os.path.lexists(target):  # taken meanwhile: the download is not renamed
                    raise _TakenMeanwhile
        except _TakenMeanwhile:
            self._kept(target, file_hash)  # another fetch's is kept; anything else refused
        return target

    @staticmethod
    def _kept(target, file_hash):
        """Whether `target` already holds these weights (then kept); nothing there is False,
        anything else there is refused, never downloaded over."""
        if not os.path.lexists(target):
            return False
        from keras.src.utils.file_utils import validate_file

        if target.is_file() and validate_file(str(target), file_hash):
            return True
        raise CatsDogsError("something of that name is there, and it is not these weights (an "
                            "interrupted download, or another file)", where=target,
                            fix="remove it, or give another --into")


class _TakenMeanwhile(Exception):
    """Something took the file's name while it downloaded (another fetch into the folder)."""


def _running(temporary_name):
    """Whether the process whose id runs.atomic_path put in `temporary_name` still runs (its
    download is not a leftover to remove)."""
    match = re.search(r"\.tmp-(\d+)", temporary_name)
    if match is None:
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: running
        return True
    return True
