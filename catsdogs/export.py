"""Export a trained model for serving, and prove each export in its own runtime.

    python -m catsdogs.export runs/seed-catsdogs-20261124-142544 --format all
    python -m catsdogs.export model.keras --format tflite-int8 --calibration data/cats_and_dogs/train
    python -m catsdogs.export RUN_DIR --format all --check data/cats_and_dogs/validation

Formats: saved_model (signature `serving_default` takes encoded JPEG/PNG bytes and returns
probabilities and class names; `serving_pixels` takes pixels), keras, tflite (float32),
tflite-fp16, tflite-int8 (full integer, calibrated on training images), onnx. Each file or folder
is written beside its destination and swapped in, so an existing export is never half-replaced.
Training writes model.keras and saved_model/ through the same functions.
"""

import contextlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from catsdogs import runs
from catsdogs.callable_module import make_callable
from catsdogs.config import command_parser
from catsdogs.errors import CatsDogsError, run_command

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


def _header_pixel_count(encoded):
    """Width x height as the file's header states it (JPEG, PNG, GIF, BMP), read before any
    decoding, so that a decompression bomb sent to a server is refused instead of expanded.
    Any other format gives -1 (refused: the bytes signature takes these four)."""
    import tensorflow as tf

    head = tf.io.decode_raw(tf.strings.substr(tf.strings.join([encoded, "\0" * 32]), 0, 32),
                            tf.uint8)
    head = tf.cast(head, tf.float64)  # float: 2^32 x 2^32 must not overflow

    def number(start, size, big_endian):
        places = 256.0 ** tf.range(size, dtype=tf.float64)
        digits = head[start:start + size]
        return tf.reduce_sum((tf.reverse(digits, [0]) if big_endian else digits) * places)

    def starts_with(signature):
        return tf.reduce_all(tf.equal(head[:len(signature)], list(signature)))

    def jpeg_pixels():
        shape = tf.cast(tf.image.extract_jpeg_shape(encoded), tf.float64)
        return shape[0] * shape[1]

    def bmp_height():  # signed: negative means stored top-down
        height = number(22, 4, False)
        return tf.abs(tf.where(height >= 2.0 ** 31, height - 2.0 ** 32, height))

    other = tf.where(starts_with(b"\x89PNG"), number(16, 4, True) * number(20, 4, True),
            tf.where(starts_with(b"GIF8"), number(6, 2, False) * number(8, 2, False),
            tf.where(starts_with(b"BM"), number(18, 4, False) * bmp_height(), -1.0)))
    return tf.cast(tf.cond(tf.io.is_jpeg(encoded), jpeg_pixels, lambda: other), tf.float32)


def _decode_to_pixels(image_bytes, image_size):
    """In-graph decoding for the bytes signature: JPEG/PNG/BMP/GIF (first frame) -> RGB
    float pixels at the model's size, with the antialiased bilinear resize Pillow also uses.
    Images whose header states more than MAX_PIXELS pixels (the limit of every other decode
    path) or another format are refused before they are decoded."""
    import tensorflow as tf

    from catsdogs.images import MAX_PIXELS

    def decode_one(encoded):
        pixels = _header_pixel_count(encoded)
        checks = [
            tf.debugging.assert_greater(pixels, 0.0, message="not a JPEG, PNG, GIF or BMP image"),
            tf.debugging.assert_less_equal(pixels, float(MAX_PIXELS), message=(
                f"image larger than {MAX_PIXELS:,} pixels (a possible decompression bomb)"))]
        with tf.control_dependencies(checks):
            image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
        return tf.image.resize(image, image_size, method="bilinear", antialias=True)

    return tf.map_fn(decode_one, image_bytes, fn_output_signature=tf.float32)


def write_saved_model(model, path, class_names):
    """A SavedModel with two signatures, no random layers (augmentation never enters models):

    - `serving_default(image_bytes: string[n])` -> probabilities, class_name, class_index
    - `serving_pixels(pixels: float32[n, h, w, 3], 0..255)` -> the same outputs

    Saved with `tf.saved_model.save` on a tf.Module that tracks the raw variables once:
    Keras' `model.export` / `ExportArchive` store every weight twice (keras-team/keras#23553,
    open in Keras 3.15), doubling the file and the memory of every server that loads it.
    """
    import tensorflow as tf

    image_size = tuple(model.input_shape[1:3])
    names = tf.constant(list(class_names))

    def outputs(pixels):
        probabilities = model(pixels, training=False)
        if probabilities.shape[-1] == 1:  # one sigmoid unit -> both classes' probabilities
            probabilities = tf.concat([1 - probabilities, probabilities], axis=-1)
        best = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {"probabilities": probabilities, "class_name": tf.gather(names, best),
                "class_index": best}

    serving = tf.Module()
    serving.model_variables = [variable.value for variable in model.variables]
    serving.serve_bytes = tf.function(
        lambda image_bytes: outputs(_decode_to_pixels(image_bytes, image_size)),
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")], autograph=False)
    serving.serve_pixels = tf.function(outputs, autograph=False, input_signature=[
        tf.TensorSpec([None, *image_size, 3], tf.float32, name="pixels")])

    def write(folder):
        tf.saved_model.save(serving, str(folder), signatures={
            "serving_default": serving.serve_bytes, "serving_pixels": serving.serve_pixels})
        (folder / runs.CLASS_NAMES_FILE).write_text(json.dumps(list(class_names)))

    runs.replace_dir(Path(path), write)


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
        flatbuffer = converter.convert()
    with runs.atomic_path(path) as temp:
        temp.write_bytes(flatbuffer)


def write_onnx(model, path):
    """ONNX through Keras' own exporter (tf2onnx underneath)."""
    model(np.zeros((1, *model.input_shape[1:]), np.float32))  # Keras exports only called models
    try:
        with runs.atomic_path(path) as temp:
            model.export(str(temp), format="onnx", verbose=False)
    except ImportError as error:
        raise CatsDogsError(f"ONNX export needs tf2onnx and onnx ({error})", where="--format onnx",
                            fix="pip install tf2onnx onnx onnxruntime") from None


# ---------------------------------------------------------------- calibration data


def training_folder_of(run_dir):
    """The training images a run folder was trained on, if they are folders on this disk."""
    from catsdogs.data import find_split_folders

    config_file = Path(run_dir) / runs.CONFIG_FILE
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    if config.get("train_dir"):
        return Path(config["train_dir"])
    if config.get("data"):
        splits = find_split_folders(config["data"])
        return splits[0] if splits else Path(config["data"])
    return None


def calibration_pixels(folder, image_size, count=CALIBRATION_IMAGES):
    """Up to `count` images spread evenly over `folder`'s classes, decoded as float pixels."""
    from catsdogs.data import scan_class_folders
    from catsdogs.images import decode_many

    _, paths, _, _ = scan_class_folders(folder)
    picks = np.linspace(0, len(paths) - 1, min(count, len(paths))).astype(int)
    pixels, _, _, _ = decode_many([paths[i] for i in picks], image_size, progress=False)
    return pixels.astype(np.float32)


# ---------------------------------------------------------------- export and check


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
    from catsdogs.classifier import Classifier, load

    formats = list(FORMATS) if "all" in formats else list(formats)
    for name in formats:
        if name not in FORMATS:
            raise CatsDogsError(f"unknown format {name!r}", where="--format",
                                fix=f"one of {', '.join(FORMATS)}, all")
    classifier = model if isinstance(model, Classifier) else load(model)
    if classifier.model is None:
        raise CatsDogsError("exporting needs the Keras model", where=classifier.source,
                            fix="pass the run folder or its model.keras, not the SavedModel")
    keras_model = classifier.model
    out = Path(out) if out else classifier.source.parent / "exports"
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


def check(written, data_dir, reference="keras"):
    """Run every written format on `data_dir`: size, accuracy, agreement with Keras, images/s."""
    from catsdogs.data import scan_class_folders
    from catsdogs.images import decode_many
    from catsdogs.runtimes import OPENERS

    class_names = json.loads((Path(next(iter(written.values()))).parent / runs.CLASS_NAMES_FILE).read_text())
    folder_names, paths, labels, _ = scan_class_folders(data_dir)
    labels = np.array([class_names.index(folder_names[i]) for i in labels])
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
    base = top1.get(reference)
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


def build_parser():
    parser = command_parser("export", __doc__)
    parser.add_argument("model", help="run folder or .keras file")
    parser.add_argument("--format", nargs="+", default=["all"], metavar="FORMAT",
                        help=f"{', '.join(FORMATS)} or all [default: all]")
    parser.add_argument("--out", help="folder for the exports [default: exports/ beside the model]")
    parser.add_argument("--calibration", help="training images for int8 [default: the run's]")
    parser.add_argument("--int8-io", action="store_true", help="int8 TFLite takes and gives uint8")
    parser.add_argument("--check", metavar="DATA_DIR",
                        help="run every export on DATA_DIR and print a comparison table")
    return parser


def main(argv=None):
    return run_command(lambda: _run(build_parser().parse_args(argv)))


def _run(args):
    formats = args.format
    if args.check and "keras" not in formats and "all" not in formats:
        formats = [*formats, "keras"]  # the reference the others are compared with
    written = export(args.model, formats, args.out, args.calibration, args.int8_io)
    if args.check:
        print("\n".join(format_check_table(check(written, args.check))))
    return 0


make_callable(__name__, export)

if __name__ == "__main__":
    raise SystemExit(main())
