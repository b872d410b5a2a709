"""A trained model with its class names, loaded from a run folder, `.keras` or SavedModel.

`load(path)` is what predict, evaluate and export start from: it finds the class names that
travel beside the model, checks they fit the model's output, and refuses models that could run
code of their own: unsafe `.keras` files, and SavedModel, `.tflite` and `.onnx` models holding
operations a classifier never needs (model_ops.py) unless `trust_model`.
"""

import dataclasses
import json
import numbers
from pathlib import Path

import numpy as np

from catsdogs import runs
from catsdogs.config import is_number
from catsdogs.data.images import irregular_reason
from catsdogs.errors import CatsDogsError
from catsdogs.inference.calibrate import CALIBRATION_FILE, TEMPERATURE_BOUNDS, apply_temperature
from catsdogs.inference.model_ops import refuse_untrusted_ops
from catsdogs.inference.predict import predict_paths
from catsdogs.inference.runtimes import (as_class_probabilities, open_h5, open_keras, open_onnx,
                                         open_saved_model, open_tflite)


@dataclasses.dataclass
class Classifier:
    """A model that maps pixels 0..255 of `image_size` to class probabilities."""

    predict_batch: object  # callable: float32 array (n, h, w, 3) -> probabilities (n, 1 | classes)
    class_names: list
    image_size: tuple  # (height, width)
    source: Path
    model: object = None  # the keras.Model, from .keras or .h5 (None for other runtimes)
    calibration: dict = dataclasses.field(default_factory=dict)  # calibration.json, if any

    @property
    def is_binary(self):
        return len(self.class_names) == 2

    @property
    def temperature(self):
        """Divides the logits (calibrate.py); 1 where the model was never calibrated."""
        return float(self.calibration.get("temperature", 1.0))

    def views_calibration(self, tta=None):
        """What calibration.json fitted for predictions averaged over `tta`'s views (a
        TTA_MODES name, or True for the flip): {} for the plain view, or a run calibrated
        before views had their own."""
        from catsdogs.inference.tta import tta_mode

        mode = tta_mode(tta)
        return (self.calibration.get("tta") or {}).get(mode) or {} if mode else {}

    def temperature_for(self, tta=None):
        """The temperature of predictions averaged over `tta`'s views: the one fitted on those
        views where there is one (their average is less sure than one view, so the plain
        view's temperature over- or under-corrects it), else the plain view's."""
        fitted = self.views_calibration(tta)
        return float(fitted["temperature"]) if fitted else self.temperature

    def tempered(self, raw, tta=None):
        """Raw probabilities (of `tta`'s views, averaged) with their temperature applied."""
        return apply_temperature(raw, self.temperature_for(tta))

    def probabilities(self, pixels, calibrated=True):
        """Class probabilities (n, classes) for a batch, also for one-sigmoid binary models;
        with the run's temperature applied unless `calibrated=False`."""
        raw = as_class_probabilities(self.predict_batch(np.asarray(pixels, np.float32)))
        return apply_temperature(raw, self.temperature) if calibrated else raw

    def explain(self, pixels, class_indices=None):
        """Grad-CAM heatmaps (n, h', w') in [0, 1] and the class each explains (default: the
        predicted one); see `inference.explain`. Needs the Keras model."""
        from catsdogs.inference.explain import gradcam

        if self.model is None:
            raise CatsDogsError("explanations need the Keras model", where=self.source,
                                fix="pass the run folder, its model.keras or a .h5 model")
        return gradcam(self.model, pixels, class_indices)

    def predict_folder(self, *paths, **options):
        """Classify image files and folders (recursive); see `inference.predict.predict_paths`."""
        return predict_paths(self, paths, **options)


def _class_names_near(path):
    """class_names.json beside the model: in the folder, or the folder holding the file."""
    path = Path(path)
    for folder in ([path, path.parent] if path.is_dir() else [path.parent]):
        candidate = folder / runs.CLASS_NAMES_FILE
        if candidate.is_file():  # is_file: a FIFO of that name is never opened
            return read_class_names(candidate), candidate
    raise CatsDogsError("no class_names.json beside the model", where=path,
                        fix="put the run's class_names.json next to it, pass the run folder, "
                            "or give --class-names cats,dogs")


def read_calibration(model_path):
    """calibration.json of the run folder a model lies in ({} where there is none: T = 1).
    Exports have none beside them: their temperature is inside the exported graph."""
    candidate = Path(model_path).parent / CALIBRATION_FILE
    if Path(model_path).is_dir() or not candidate.is_file():
        return {}
    try:
        values = json.loads(candidate.read_text())
        for entry in [values, *(values.get("tta") or {}).values()]:
            _check_calibration_entry(entry)
        return values
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise CatsDogsError(f"cannot read the calibration ({type(error).__name__}: {error})",
                            where=candidate,
                            fix="recreate it: catsdogs calibrate RUN_DIR") from None


def _check_calibration_entry(entry):
    """A temperature in the range the fit searches and a stored threshold that is a
    probability, both JSON numbers: a temperature far outside it turns float32 logits into NaN
    (T near 0) or ties every class (T huge), a threshold of another type fails every request."""
    temperature, (low, high) = _number(entry["temperature"], "temperature"), TEMPERATURE_BOUNDS
    if not low <= temperature <= high:  # NaN fails too
        raise ValueError(f"temperature {temperature} is outside the fit's range {low}-{high}")
    stored = entry.get("min_confidence_auto")
    if stored is not None:
        threshold = _number(stored["threshold"], "threshold")
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold {threshold} is not a probability in [0, 1]")


def _number(value, what):
    """A JSON number as float: not a string or true/false, which float() would take."""
    if not is_number(value):
        raise TypeError(f"{what} {value!r} is not a number")
    return float(value)


def _check_input_size(size, path):
    """The input side a model file declares, checked as input from anyone: whole numbers from 1
    to MAX_INPUT_SIDE (a model of (None, None), 0 or a million pixels a side would fail deep in
    resizing, or ask for terabytes)."""
    fits = len(size) == 2 and all(isinstance(side, numbers.Integral) and 1 <= side <= MAX_INPUT_SIDE
                                  for side in size)
    if not fits:
        raise CatsDogsError(f"the model's input size {tuple(size)} is not two sides from 1 to "
                            f"{MAX_INPUT_SIDE} pixels", where=path,
                            fix="give a model of a fixed image size, as train and export write")


def _check_names_inside(saved_model, names, names_from):
    """The class names beside a SavedModel must be the ones inside it (its class_name output
    reads those): reordered, every prediction here would carry another class's name. SavedModels
    exported before the names were kept as a variable carry none to compare."""
    inside = getattr(saved_model, "class_names", None)
    if inside is None:
        return
    inside = [name.decode(errors="replace") for name in inside.numpy()]
    if inside != list(names):
        raise CatsDogsError(f"the class names {list(names)} differ from the SavedModel's own "
                            f"{inside}", where=names_from,
                            fix="give the names in the SavedModel's order, or export it again")


def read_class_names(path):
    """A JSON list of class names, each checked (runs.check_class_names): they may come from
    anyone's run folder and become folder names."""
    try:
        names = json.loads(Path(path).read_text())
    except (OSError, ValueError, RecursionError) as error:  # RecursionError: [[[[... nested
        raise CatsDogsError(f"cannot read class names ({type(error).__name__})", where=path,
                            fix="a JSON list such as [\"cats\", \"dogs\"]") from None
    if not isinstance(names, list):
        raise CatsDogsError("class names must be a JSON list of names", where=path,
                            fix='e.g. ["cats", "dogs"]')
    return runs.check_class_names(names, path)


MAX_INPUT_SIDE = 4096  # pixels: far above any preset, far below what a batch can hold

# the model files load() opens, by suffix, each in its own runtime
FILE_OPENERS = {".keras": open_keras, ".h5": open_h5, ".hdf5": open_h5, ".tflite": open_tflite,
           ".onnx": open_onnx}
KINDS = "a run folder, a .keras, .h5, .tflite or .onnx file, or a SavedModel folder"


def model_file(path):
    """The file (or SavedModel folder) `load(path)` opens: a run folder's model.keras, else
    `path` itself; known before anything loads, so the outputs beside it can be checked first."""
    path = Path(path)
    return path / runs.MODEL_FILE if path.is_dir() and (path / runs.MODEL_FILE).exists() else path


def load(path, class_names=None, input_scale=None, trust_model=False, calibrated=True):
    """Load a classifier from a run folder, a model file or a SavedModel folder.

    Args:
        path: a run folder (uses its model.keras); a `.keras` file; a Keras `.h5` file (the
            seed tutorials' format); a `.tflite` or `.onnx` file written by `export`; or a
            SavedModel folder.
        class_names: the class names in output order, where no class_names.json lies beside
            the model (run folders and exports have one).
        input_scale: for `.h5` models, the factor pixels 0..255 are multiplied by before the
            model; default: 1/255 when the model has no Rescaling layer of its own (the
            tutorials' `ImageDataGenerator(rescale=1./255)`), else 1.
        trust_model: load a SavedModel, `.tflite` or `.onnx` model even if it holds
            operations a classifier never needs (`inference.model_ops`); off, it is refused.
        calibrated: read calibration.json beside the model; off (for `calibrate`, which
            fits it again), the classifier's temperature is 1 and the file is not read.

    Returns:
        Classifier

    Raises:
        CatsDogsError: missing files, an unsafe model (Lambda layers; file, process or custom
            ops unless `trust_model`), or class names whose
            count does not fit the model's output.

    Example:
        >>> clf = load("runs/seed-catsdogs-20261124-142544")  # doctest: +SKIP
        >>> rows, skipped = clf.predict_folder("my_photos/")  # doctest: +SKIP
        >>> clf = load("model.h5", class_names=["cats", "dogs"])  # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise CatsDogsError("model not found", where=path, fix=f"pass {KINDS}")
    path = model_file(path)
    if not path.is_dir() and irregular_reason(path):  # a FIFO would block the read forever
        raise CatsDogsError(f"cannot read the model: {irregular_reason(path)}", where=path,
                            fix=f"pass {KINDS}")
    suffix = path.suffix.lower()
    saved_model = path.is_dir() and (path / "saved_model.pb").is_file()
    if not (saved_model or suffix in FILE_OPENERS):
        raise CatsDogsError("not a model", where=path, fix=f"pass {KINDS}")  # before its names
    if class_names is not None:
        names, names_from = runs.check_class_names(class_names, "--class-names"), "--class-names"
    else:
        names, names_from = _class_names_near(path)
    if not trust_model:
        refuse_untrusted_ops(path)  # before any of the model's own code can run
    if saved_model:
        runtime = open_saved_model(path)
        _check_names_inside(runtime.handle, names, names_from)
    elif suffix in (".h5", ".hdf5"):
        runtime = open_h5(path, input_scale)
    else:
        runtime = FILE_OPENERS[suffix](path)
    _check_input_size(runtime.image_size, path)
    model = runtime.handle if suffix in (".keras", ".h5", ".hdf5") else None
    classifier = Classifier(runtime, names, runtime.image_size, path, model,
                            read_calibration(path) if calibrated else {})
    outputs = runtime.outputs
    fits = outputs == len(names) or (outputs == 1 and len(names) == 2)  # sigmoid: one unit
    if not fits or len(names) < 2:
        raise CatsDogsError(f"{len(names)} class names do not fit a model with {outputs} outputs",
                            where=names_from, fix="give the class names of the run that made "
                                                  "the model, in its output order")
    return classifier
