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
                            "proxy: set https_proxy)"))

        if into is None:
            return download(self.file, cache_subdir="models")
        into = Path(into).absolute()
        if into.exists() and not into.is_dir():
            raise CatsDogsError("not a folder", where=into, fix="give a folder for --into")
        runs.check_writable(into)  # else Keras quietly writes to /tmp/.keras instead
        into.mkdir(parents=True, exist_ok=True)
        target = into / self.file
        if target.exists():
            from keras.src.utils.file_utils import validate_file

            if validate_file(str(target), file_hash):
                return target
            raise CatsDogsError("a file of that name is there, and it is not these weights (its "
                                "hash differs: an interrupted download, or another file)",
                                where=target, fix="remove it, or give another --into")
        for leftover in into.glob(f".{glob.escape(self.file)}.tmp-*"):  # a killed fetch's
            leftover.unlink(missing_ok=True)
        with runs.atomic_path(target) as temp:
            download(temp.name, cache_dir=str(into), cache_subdir="")
        return target
