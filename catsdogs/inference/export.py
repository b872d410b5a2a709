"""Export a trained model for serving, and prove each export in its own runtime (the library of
`catsdogs export`).

Formats: saved_model (signature `serving_default` takes encoded JPEG/PNG bytes and returns
probabilities and class names; `serving_pixels` takes pixels), keras, tflite (float32),
tflite-fp16, tflite-int8 (full integer, calibrated on training images), onnx. Each file or folder
is written beside its destination and swapped in, so an existing export is never half-replaced.
"""

import contextlib
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from catsdogs import config as cfg
from catsdogs import runs
from catsdogs.errors import CatsDogsError
from catsdogs.inference.calibrate import with_temperature
from catsdogs.inference.saved_model import write_saved_model
from catsdogs.stderr_filter import quiet_tensorflow

FORMATS = ("saved_model", "keras", "tflite", "tflite-fp16", "tflite-int8", "onnx")
FILE_NAMES = {"saved_model": "saved_model", "keras": "model.keras", "tflite": "model.tflite",
              "tflite-fp16": "model-fp16.tflite", "tflite-int8": "model-int8.tflite",
              "onnx": "model.onnx"}
CALIBRATION_IMAGES = 300  # representative images for int8 ranges


# ---------------------------------------------------------------- writers, one per format


def write_keras(model, path):
    """The native Keras archive, written atomically."""
    with runs.atomic_path(path) as temp:
        model.save(temp)


@contextlib.contextmanager
def _tflite_converter(model):
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as folder:  # Keras 3 -> TFLite goes through a SavedModel
        model.export(folder, format="tf_saved_model", verbose=False)
        yield tf.lite.TFLiteConverter.from_saved_model(folder)


def write_tflite(model, path, mode="float32", calibration=None, int8_io=False):
    """TFLite flatbuffer: mode float32, float16 (weights), or int8 (full integer).

    Args:
        calibration: for int8, float pixels (n, h, w, 3) whose activations set the ranges.
        int8_io: int8 only; input uint8 pixels and output uint8 probabilities too.
    """
    import tensorflow as tf

    with _tflite_converter(model) as converter:
        if mode == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif mode == "int8":
            if calibration is None or not len(calibration):
                raise CatsDogsError("int8 export needs calibration images", where="--calibration",
                                    fix="pass a folder of training images")
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([image[None].astype(np.float32)]
                                                        for image in calibration)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if int8_io:
                converter.inference_input_type = tf.uint8
                converter.inference_output_type = tf.uint8
        with quiet_tensorflow():  # the quantisation summary it prints on every conversion
            flatbuffer = converter.convert()
    with runs.atomic_path(path) as temp:
        temp.write_bytes(flatbuffer)


def write_onnx(model, path):
    """ONNX through Keras' own exporter (tf2onnx underneath)."""
    model(np.zeros((1, *model.input_shape[1:]), np.float32))  # Keras exports only called models
    try:
        with runs.atomic_path(path) as temp, warnings.catch_warnings():
            # Keras' bundled tf2onnx asks NumPy for np.object at import, which NumPy 2 answers
            # with a FutureWarning the user can do nothing about
            warnings.filterwarnings("ignore", message=".*np\\.object", category=FutureWarning)
            model.export(str(temp), format="onnx", verbose=False)
    except ImportError as error:
        raise CatsDogsError(f"ONNX export needs tf2onnx and onnx ({error})", where="--format onnx",
                            fix="pip install tf2onnx onnx onnxruntime") from None


# ---------------------------------------------------------------- calibration data


def training_folder_of(run_dir):
    """The training images a run folder was trained on, if they are folders on this disk."""
    from catsdogs.data.datasets import find_split_folders

    config_file = Path(run_dir) / runs.CONFIG_FILE
    if not config_file.is_file():
        return None
    try:
        config = cfg.read_run_config(config_file)
    except CatsDogsError:  # another tool's config.json, or a damaged one: no folder known
        return None
    if config.train_dir:
        return Path(config.train_dir)
    if config.data:
        splits = find_split_folders(config.data)
        return splits[0] if splits else Path(config.data)
    return None


def calibration_pixels(folder, image_size, count=CALIBRATION_IMAGES):
    """Up to `count` images taken at even steps through `folder`'s files (listed class by
    class, so each class gives its share of the folder), decoded as float pixels."""
    from catsdogs.data.datasets import scan_class_folders
    from catsdogs.data.images import decode_many

    _, paths, _, _ = scan_class_folders(folder)
    picks = np.linspace(0, len(paths) - 1, min(count, len(paths))).astype(int)
    pixels, _, _, _ = decode_many([paths[i] for i in picks], image_size, progress=False)
    return pixels.astype(np.float32)


# ---------------------------------------------------------------- export and check


def default_out(model_path):
    """Where exports go when no folder is given: `exports/` beside the model file."""
    return Path(model_path).parent / "exports"


def export(model, formats=FORMATS, out=None, calibration=None, int8_io=False):
    """Write `formats` of a model into `out`.

    Args:
        model: a Classifier, or a run folder or `.keras` file (see `catsdogs.load`).
        formats: names from FORMATS, or ("all",).
        out: folder for the exports [default: `exports/` beside the model].
        calibration: folder of class sub-folders for int8 [default: the run's training data].

    Returns:
        dict: format -> written path.
    """
    from catsdogs.inference.classifier import Classifier, load

    formats = check_formats(formats)
    classifier = model if isinstance(model, Classifier) else load(model)
    if classifier.model is None:
        raise CatsDogsError("exporting needs the Keras model", where=classifier.source,
                            fix="pass the run folder or its model.keras, not an export "
                                "(SavedModel, TFLite or ONNX)")
    # the run's temperature goes inside every export, so their probabilities are calibrated
    # too (and no calibration.json is written beside them: it would be applied twice)
    keras_model = with_temperature(classifier.model, classifier.temperature)
    out = Path(out) if out else default_out(classifier.source)
    out.mkdir(parents=True, exist_ok=True)
    runs.write_json(out / runs.CLASS_NAMES_FILE, classifier.class_names)
    written = {}
    for name in formats:
        path = out / FILE_NAMES[name]
        if name == "saved_model":
            write_saved_model(keras_model, path, classifier.class_names)
        elif name == "keras":
            write_keras(keras_model, path)
        elif name == "onnx":
            write_onnx(keras_model, path)
        else:
            mode = {"tflite": "float32", "tflite-fp16": "float16", "tflite-int8": "int8"}[name]
            pixels = None
            if mode == "int8":
                folder = calibration or training_folder_of(classifier.source.parent)
                if folder is None:
                    raise CatsDogsError("no calibration images for int8", where="--calibration",
                                        fix="pass --calibration FOLDER of training images")
                pixels = calibration_pixels(folder, classifier.image_size)
            write_tflite(keras_model, path, mode, pixels, int8_io)
        written[name] = path
        print(f"{name:<12} {path}")
    return written


def check_formats(formats):
    """The format names asked for, "all" expanded; an unknown one is one line naming it."""
    formats = list(FORMATS) if "all" in formats else list(formats)
    for name in formats:
        if name not in FORMATS:
            raise CatsDogsError(f"unknown format {name!r}", where="--format",
                                fix=f"one of {', '.join(FORMATS)}, all")
    return formats


def check(written, data_dir, source=None):
    """Run every written format on `data_dir`: size, accuracy, agreement with Keras, images/s;
    said in one line when those photos trained the model at `source` or chose its epoch."""
    from catsdogs.data.images import decode_many
    from catsdogs.inference.classifier import read_class_names
    from catsdogs.inference.evaluate import labels_in_model_order
    from catsdogs.inference.photo_roles import warn_if_the_model_used
    from catsdogs.inference.runtimes import OPENERS

    class_names = read_class_names(Path(next(iter(written.values()))).parent / runs.CLASS_NAMES_FILE)
    paths, labels, _ = labels_in_model_order(data_dir, class_names)
    warn_if_the_model_used(source, paths)  # its accuracy on them reads high
    results, top1, decoded = [], {}, {}
    for name, path in written.items():
        predict = OPENERS[name](path)
        size = predict.image_size
        if size not in decoded:  # every format of one model takes the same size: decode once
            pixels, kept, _, _ = decode_many(paths, size, progress=False)
            decoded[size] = (pixels.astype(np.float32), kept)
        pixels, kept = decoded[size]
        predict(pixels[:1])  # warm-up: graph tracing and allocation stay out of the timing
        started = time.perf_counter()
        probabilities = np.concatenate([predict(pixels[i:i + 32]) for i in range(0, len(pixels), 32)])
        seconds = time.perf_counter() - started
        top1[name] = probabilities.argmax(axis=1)
        results.append({"format": name, "bytes": runs.size_of(path),
                        "accuracy": float((top1[name] == labels[kept]).mean()),
                        "images_per_second": len(pixels) / seconds})
    base = top1.get("keras")  # absent where only other formats were written
    for row in results:
        row["agreement"] = None if base is None else float((top1[row["format"]] == base).mean())
    return results


def format_check_table(results):
    lines = [f"{'format':<12}{'size':>10}{'accuracy':>10}{'agreement':>11}{'images/s':>10}"]
    for row in results:
        agreement = "-" if row["agreement"] is None else f"{row['agreement']:.1%}"
        lines.append(f"{row['format']:<12}{row['bytes'] / 1e6:>8.2f}MB{row['accuracy']:>10.1%}"
                     f"{agreement:>11}{row['images_per_second']:>10.0f}")
    return lines
