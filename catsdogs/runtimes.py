"""Run each exported format in the runtime that will serve it, behind one call signature.

Each `open_*` returns a Runtime: `runtime(pixels) -> probabilities (n, classes)` for float32
pixels 0..255 of shape (n, height, width, 3), and the `image_size` it takes, so `export --check`,
`catsdogs.load` and the tests compare formats like for like.
"""

import dataclasses
import os
from typing import Callable

import numpy as np

from catsdogs.errors import CatsDogsError


@dataclasses.dataclass
class Runtime:
    """One loaded model in its own runtime."""

    predict: Callable  # float32 pixels (n, h, w, 3) -> probabilities (n, classes)
    image_size: tuple  # (height, width)
    handle: object = None  # the loaded object; its variables live as long as this Runtime

    def __call__(self, pixels):
        return self.predict(pixels)


def as_class_probabilities(out):
    """(n, classes) probabilities; a one-unit sigmoid output becomes (1 - p, p)."""
    out = np.asarray(out, dtype=np.float64)
    return np.concatenate([1 - out, out], axis=1) if out.shape[-1] == 1 else out


def open_keras(path):
    import keras

    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    return Runtime(lambda pixels: as_class_probabilities(model.predict_on_batch(pixels)),
                   tuple(model.input_shape[1:3]), model)


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
        out = serve(tf.constant(pixels, tf.float32))
        return as_class_probabilities(out["probabilities"] if "probabilities" in out
                                      else next(iter(out.values())))

    return Runtime(predict, tuple(spec.shape[1:3]), loaded)


def open_saved_model_bytes(path):
    """The `serving_default` signature: encoded images in, (probabilities, class names) out."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]

    def classify(encoded_images):
        out = serve(image_bytes=tf.constant(encoded_images, tf.string))
        return np.asarray(out["probabilities"]), [n.decode() for n in np.asarray(out["class_name"])]

    classify.keep_alive = loaded  # the signature's variables live as long as this function
    return classify


def tflite_interpreter(path, threads=None):
    """LiteRT's interpreter (ai-edge-litert), or TensorFlow's own copy where it is missing.

    `threads` defaults to every core: LiteRT's own default runs XNNPACK on one thread, which
    halves int8 images/s on a 2-core machine (bench/export.py measures it).
    """
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - depends on the installed packages
        import tensorflow as tf
        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=str(path), num_threads=threads or os.cpu_count())


def open_tflite(path):
    """A .tflite model as pixels -> class probabilities, a whole batch per invoke (the input
    tensor is resized to each new batch size; XNNPACK runs batches faster than single images)."""
    interpreter = tflite_interpreter(path)
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    interpreter.allocate_tensors()

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

    return Runtime(run, tuple(input_detail["shape"][1:3]), interpreter)


def _limits(dtype):
    info = np.iinfo(dtype)
    return info.min, info.max


def open_onnx(path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    source = session.get_inputs()[0]

    def predict(pixels):
        return as_class_probabilities(session.run(None, {source.name: pixels.astype(np.float32)})[0])

    return Runtime(predict, tuple(source.shape[1:3]), session)


OPENERS = {"saved_model": open_saved_model, "keras": open_keras, "tflite": open_tflite,
           "tflite-fp16": open_tflite, "tflite-int8": open_tflite, "onnx": open_onnx}
