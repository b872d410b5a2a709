"""Run each exported format in the runtime that will serve it, behind one call signature.

Each `open_*` returns a Runtime: `runtime(pixels) -> probabilities (n, classes)` for float32
pixels 0..255 of shape (n, height, width, 3), the `image_size` it takes and its `outputs` (1 for
a sigmoid), so `export --check`, `catsdogs.load` and the tests compare formats like for like.
"""

import dataclasses
import os
from typing import Callable

from pathlib import Path

import numpy as np

from catsdogs.console import log
from catsdogs.errors import CatsDogsError
from catsdogs.models.keras_files import load_keras_model
from catsdogs.runs import check_class_names
from catsdogs.stderr_filter import quiet_tensorflow


@dataclasses.dataclass
class Runtime:
    """One loaded model in its own runtime."""

    predict: Callable  # float32 pixels (n, h, w, 3) -> probabilities (n, classes)
    image_size: tuple  # (height, width)
    outputs: int  # units of the model's output: 1 for a sigmoid, else one per class
    handle: object = None  # the loaded object; its variables live as long as this Runtime

    def __call__(self, pixels):
        return self.predict(pixels)


def as_class_probabilities(out):
    """(n, classes) probabilities; a one-unit sigmoid output becomes (1 - p, p)."""
    out = np.asarray(out, dtype=np.float64)
    return np.concatenate([1 - out, out], axis=1) if out.shape[-1] == 1 else out


def keras_probabilities(model, pixels, batch_size=64):
    """Class probabilities (n, classes) of a Keras model for pixels (n, h, w, 3), in batches."""
    return np.concatenate([as_class_probabilities(model.predict_on_batch(
        np.asarray(pixels[i:i + batch_size], np.float32))) for i in range(0, len(pixels), batch_size)])


def _keras_runtime(model):
    return Runtime(lambda pixels: as_class_probabilities(model.predict_on_batch(pixels)),
                   tuple(model.input_shape[1:3]), model.output_shape[-1], model)


def starts_with_rescaling(model):
    """True if the model scales its own pixels (a Rescaling layer before any weights), as every
    catsdogs model does."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.Rescaling):
            return True
        if layer.weights or isinstance(layer, keras.Model):
            return False
    return False


def open_h5(path, input_scale=None):
    """A Keras HDF5 model (`model.h5`, what the seed tutorials save), loaded with Keras' safe
    mode, taking pixels 0..255 like every catsdogs model.

    The tutorials scale pixels outside the model (`ImageDataGenerator(rescale=1./255)`), so a
    model with no Rescaling layer of its own gets one in front: `input_scale`, by default 1/255
    for such models and 1 (nothing added) for models that rescale themselves.
    """
    import keras

    model = load_keras_model(path)
    if input_scale is None:
        input_scale = 1.0 if starts_with_rescaling(model) else 1 / 255
    if input_scale != 1.0:
        log().info(f"{Path(path).name}: pixels are multiplied by {input_scale:.6g} before the "
                   "model (the tutorials' rescale=1./255 when it has no Rescaling layer of its "
                   "own; --input-scale sets it)")
        inputs = keras.Input(model.input_shape[1:], name="pixels")
        scaled = keras.layers.Rescaling(input_scale, name="rescale")(inputs)
        model = keras.Model(inputs, model(scaled), name=model.name)
    return _keras_runtime(model)


def open_keras(path):
    """A `.keras` file, loaded only if it is safe: no foreign modules, no Lambda layers
    (safe_mode), so a downloaded model cannot run code on load."""
    return _keras_runtime(load_keras_model(path))


def _probabilities_of(outputs):
    """The probabilities among a signature's outputs: catsdogs names them, Keras' `export`
    has just one."""
    return outputs["probabilities"] if "probabilities" in outputs else next(iter(outputs.values()))


def open_saved_model(path):
    """Through the pixels signature: `serving_pixels` of catsdogs' exports, or the default
    signature of Keras' `model.export` (see `open_saved_model_bytes` for image bytes)."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except (OSError, ValueError) as error:
        raise CatsDogsError(f"not a readable SavedModel ({type(error).__name__})", where=path) from None
    serve = loaded.signatures.get("serving_pixels") or loaded.signatures.get("serving_default")
    spec = next(iter(serve.structured_input_signature[1].values())) if serve else None
    if spec is None or spec.dtype != tf.float32 or len(spec.shape) != 4:
        raise CatsDogsError("the SavedModel has no signature that takes pixels", where=path,
                            fix="export it with python -m catsdogs.export")

    def predict(pixels):
        return as_class_probabilities(_probabilities_of(serve(tf.constant(pixels, tf.float32))))

    outputs = _probabilities_of(serve.structured_outputs).shape[-1]
    return Runtime(predict, tuple(spec.shape[1:3]), outputs, loaded)


def open_saved_model_bytes(path):
    """The `serving_default` signature: encoded images in, (probabilities, class names) out."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]

    def classify(encoded_images):
        out = serve(image_bytes=tf.constant(encoded_images, tf.string))
        names = [n.decode(errors="replace") for n in np.asarray(out["class_name"])]
        check_class_names(sorted(set(names)), f"{path}: class_name output")  # carried inside
        return np.asarray(out["probabilities"]), names

    classify.keep_alive = loaded  # the signature's variables live as long as this function
    return classify


def tflite_interpreter(path, threads=None):
    """LiteRT's interpreter (ai-edge-litert), or TensorFlow's own copy where it is missing.

    `threads` defaults to every core: LiteRT's own default runs XNNPACK on one thread, which
    halves int8 images/s on a 2-core machine (bench/export.py measures it). Its tensors are
    allocated.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - depends on the installed packages
        import tensorflow as tf
        Interpreter = tf.lite.Interpreter
    with quiet_tensorflow():  # its "Created TensorFlow Lite XNNPACK delegate" line, at the first
        interpreter = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count())
        interpreter.allocate_tensors()
    return interpreter


def open_tflite(path):
    """A .tflite model as pixels -> class probabilities, a whole batch per invoke (the input
    tensor is resized to each new batch size; XNNPACK runs batches faster than single images)."""
    interpreter = tflite_interpreter(path)
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]

    def run(pixels):
        pixels = np.asarray(pixels, np.float32)
        if tuple(interpreter.get_input_details()[0]["shape"]) != pixels.shape:
            interpreter.resize_tensor_input(input_detail["index"], pixels.shape)
            interpreter.allocate_tensors()
        if input_detail["dtype"] != np.float32:  # integer input: quantize as the model says
            scale, zero = input_detail["quantization"]
            pixels = np.clip(np.round(pixels / scale + zero), *_limits(input_detail["dtype"]))
        interpreter.set_tensor(input_detail["index"], pixels.astype(input_detail["dtype"]))
        interpreter.invoke()
        out = interpreter.get_tensor(output_detail["index"]).astype(np.float64)
        if output_detail["dtype"] != np.float32:
            scale, zero = output_detail["quantization"]
            out = (out - zero) * scale
        return as_class_probabilities(out)

    side = tuple(map(int, input_detail["shape"][1:3]))  # NumPy int32: JSON and sums need int
    return Runtime(run, side, int(output_detail["shape"][-1]),
                   interpreter)


def _limits(dtype):
    info = np.iinfo(dtype)
    return info.min, info.max


def open_onnx(path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    source = session.get_inputs()[0]

    def predict(pixels):
        return as_class_probabilities(session.run(None, {source.name: pixels.astype(np.float32)})[0])

    return Runtime(predict, tuple(source.shape[1:3]), session.get_outputs()[0].shape[-1], session)


OPENERS = {"saved_model": open_saved_model, "keras": open_keras, "tflite": open_tflite,
           "tflite-fp16": open_tflite, "tflite-int8": open_tflite, "onnx": open_onnx}
