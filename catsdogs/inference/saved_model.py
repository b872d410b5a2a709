"""The SavedModel writer: a model with its class names, in the shape TensorFlow Serving loads.

Training writes every run's saved_model/ through it and `catsdogs export` too, so both give
the same two signatures.
"""

import json
from pathlib import Path

from catsdogs import runs


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

    from catsdogs.data.images import MAX_PIXELS

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
    names = tf.constant(runs.check_class_names(class_names, "the SavedModel's class names"))

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
