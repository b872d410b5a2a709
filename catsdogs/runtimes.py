"""Run each exported format in the runtime that will serve it, behind one call signature.

Each `open_*` returns `predict(pixels) -> probabilities (n, classes)` for float32 pixels 0..255
of shape (n, height, width, 3), so `export --check` and the tests compare formats like for like.
"""

import numpy as np


def as_class_probabilities(out):
    """(n, classes) probabilities; a one-unit sigmoid output becomes (1 - p, p)."""
    out = np.asarray(out, dtype=np.float64)
    return np.concatenate([1 - out, out], axis=1) if out.shape[-1] == 1 else out


def open_keras(path):
    import keras

    model = keras.saving.load_model(path, safe_mode=True, compile=False)
    return lambda pixels: as_class_probabilities(model.predict_on_batch(pixels))


def open_saved_model(path):
    """Through the `serving_pixels` signature (see `open_saved_model_bytes` for image bytes)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_pixels"]

    def predict(pixels):
        return np.asarray(serve(pixels=tf.constant(pixels, tf.float32))["probabilities"])

    predict.keep_alive = loaded  # the signature's variables live as long as this object
    return predict


def open_saved_model_bytes(path):
    """The `serving_default` signature: encoded images in, (probabilities, class names) out."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]

    def classify(encoded_images):
        out = serve(image_bytes=tf.constant(encoded_images, tf.string))
        return np.asarray(out["probabilities"]), [n.decode() for n in np.asarray(out["class_name"])]

    classify.keep_alive = loaded
    return classify


def tflite_interpreter(path):
    """LiteRT's interpreter (ai-edge-litert), or TensorFlow's own copy where it is missing."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - depends on the installed packages
        import tensorflow as tf
        Interpreter = tf.lite.Interpreter
    return Interpreter(model_path=str(path))


def open_tflite(path):
    interpreter = tflite_interpreter(path)
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]

    def run_one(image):
        if input_detail["dtype"] != np.float32:  # integer input: quantize as the model says
            scale, zero = input_detail["quantization"]
            image = np.clip(np.round(image / scale + zero), *_limits(input_detail["dtype"]))
        interpreter.set_tensor(input_detail["index"], image[None].astype(input_detail["dtype"]))
        interpreter.invoke()
        out = interpreter.get_tensor(output_detail["index"]).astype(np.float64)
        if output_detail["dtype"] != np.float32:
            scale, zero = output_detail["quantization"]
            out = (out - zero) * scale
        return out[0]

    interpreter.allocate_tensors()
    return lambda pixels: as_class_probabilities(np.stack([run_one(p) for p in pixels]))


def _limits(dtype):
    info = np.iinfo(dtype)
    return info.min, info.max


def open_onnx(path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda pixels: as_class_probabilities(session.run(None, {name: pixels.astype(np.float32)})[0])


OPENERS = {"saved_model": open_saved_model, "keras": open_keras, "tflite": open_tflite,
           "tflite-fp16": open_tflite, "tflite-int8": open_tflite, "onnx": open_onnx}
