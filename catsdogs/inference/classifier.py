"""A trained model with its class names, loaded safely from a run folder, `.keras` or SavedModel.

`load(path)` is what predict, evaluate and export start from: it finds the class names that
travel beside the model, checks they fit the model's output, and refuses unsafe `.keras` files.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np

from catsdogs import runs
from catsdogs.data.images import irregular_reason
from catsdogs.errors import CatsDogsError
from catsdogs.inference.predict import predict_paths
from catsdogs.inference.runtimes import as_class_probabilities, open_keras, open_saved_model


@dataclasses.dataclass
class Classifier:
    """A model that maps pixels 0..255 of `image_size` to class probabilities."""

    predict_batch: object  # callable: float32 array (n, h, w, 3) -> probabilities (n, 1 | classes)
    class_names: list
    image_size: tuple  # (height, width)
    source: Path
    model: object = None  # the keras.Model, when loaded from .keras (None for a SavedModel)

    @property
    def is_binary(self):
        return len(self.class_names) == 2

    def probabilities(self, pixels):
        """Class probabilities (n, classes) for a batch, also for one-sigmoid binary models."""
        return as_class_probabilities(self.predict_batch(np.asarray(pixels, np.float32)))

    def predict_folder(self, *paths, **options):
        """Classify image files and folders (recursive); see `inference.predict.predict_paths`."""
        return predict_paths(self, paths, **options)


def _class_names_near(path):
    """class_names.json beside the model: in the folder, or the folder holding the file."""
    path = Path(path)
    for folder in ([path, path.parent] if path.is_dir() else [path.parent]):
        candidate = folder / runs.CLASS_NAMES_FILE
        if candidate.is_file():  # is_file: a FIFO of that name is never opened
            names = json.loads(candidate.read_text())
            if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                raise CatsDogsError("class_names.json must hold a list of names", where=candidate)
            return names, candidate
    raise CatsDogsError("no class_names.json beside the model", where=path,
                        fix="put the run's class_names.json next to it, or pass the run folder")


def load(path):
    """Load a classifier from a run folder, a `.keras` file or a SavedModel folder.

    Args:
        path: a run folder (uses its model.keras), a `.keras` file, or a SavedModel folder;
            class_names.json must lie beside it (run folders have one).

    Returns:
        Classifier

    Raises:
        CatsDogsError: missing files, an unsafe `.keras` (Lambda layers), or class names whose
            count does not fit the model's output.

    Example:
        >>> clf = load("runs/seed-catsdogs-20261124-142544")  # doctest: +SKIP
        >>> rows, skipped = clf.predict_folder("my_photos/")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise CatsDogsError("model not found", where=path,
                            fix="pass a run folder, a .keras file or a SavedModel folder")
    if path.is_dir() and (path / runs.MODEL_FILE).exists():
        path = path / runs.MODEL_FILE
    if not path.is_dir() and irregular_reason(path):  # a FIFO would block the read forever
        raise CatsDogsError(f"cannot read the model: {irregular_reason(path)}", where=path,
                            fix="pass a regular .keras file, a run folder or a SavedModel folder")
    names, names_file = _class_names_near(path)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        runtime, model = open_saved_model(path), None
    elif path.suffix == ".keras":
        runtime = open_keras(path)
        model = runtime.handle
    else:
        raise CatsDogsError("not a model", where=path,
                            fix="pass a run folder, a .keras file or a SavedModel folder")
    classifier = Classifier(runtime, names, runtime.image_size, path, model)
    outputs = runtime.outputs
    fits = outputs == len(names) or (outputs == 1 and len(names) == 2)  # sigmoid: one unit
    if not fits or len(names) < 2:
        raise CatsDogsError(f"{len(names)} class names do not fit a model with {outputs} outputs",
                            where=names_file, fix="use the class_names.json of the run that made the model")
    return classifier
