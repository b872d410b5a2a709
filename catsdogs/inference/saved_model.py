"""The SavedModel writer: a model with its class names, in the shape TensorFlow Serving loads.

Training writes every run's saved_model/ through it and `catsdogs export` too, so both give
the same two signatures.
"""

import json
from pathlib import Path

from catsdogs import runs


JPEG_SCALES = (1, 2, 4, 8)  # libjpeg's scaled decoding: decode_jpeg's `ratio`, Pillow's draft
# images one call of the bytes signature decodes at once (tf.map_fn's parallel_iterations):
# with each under MAX_DECODED_BYTES, a call holds at most this many decoded images
DECODES_AT_ONCE = 4


def _header_size(encoded):
    """(width, height), as float64, that the file's header states (JPEG, PNG, GIF, BMP), read
    before any decoding, so that a decompression bomb sent to a server is refused instead of
    expanded. Any other format gives (-1, -1) (refused: the bytes signature takes these four)."""
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

    def jpeg_size():
        height, width = tf.unstack(tf.cast(tf.image.extract_jpeg_shape(encoded), tf.float64)[:2])
        return tf.stack([width, height])

    def bmp_height():  # signed: negative means stored top-down
        height = number(22, 4, False)
        return tf.abs(tf.where(height >= 2.0 ** 31, height - 2.0 ** 32, height))

    png = tf.stack([number(16, 4, True), number(20, 4, True)])  # IHDR, big-endian
    gif = tf.stack([number(6, 2, False), number(8, 2, False)])  # the logical screen
    bmp = tf.stack([number(18, 4, False), bmp_height()])
    unknown = tf.constant([-1.0, -1.0], tf.float64)
    other = tf.where(starts_with(b"\x89PNG"), png, tf.where(
        starts_with(b"GIF8"), gif, tf.where(starts_with(b"BM"), bmp, unknown)))
    return tf.unstack(tf.cond(tf.io.is_jpeg(encoded), jpeg_size, lambda: other))


def _gif_frames(encoded):
    """The number of frames of a GIF, as float64, counted by walking its blocks in the graph
    before decoding (0 for bytes that end before the first frame's data). TensorFlow's GIF
    decoder holds every frame at the full canvas size, and no header field says how many
    frames there are; the walk reads one byte per data sub-block (at most 256 bytes each), so
    it costs a few milliseconds for a photo-sized GIF."""
    import tensorflow as tf

    length = tf.strings.length(encoded)

    def byte(position):  # 0 past the end, so a cut file ends the walk
        inside = tf.strings.substr(tf.strings.join([encoded, "\0"]),
                                   tf.minimum(position, length), 1)
        return tf.cast(tf.io.decode_raw(inside, tf.uint8)[0], tf.int32)

    def table(packed):  # bytes of the colour table a packed field announces
        return tf.where(packed >= 128, 3 * 2 ** (tf.bitwise.bitwise_and(packed, 7) + 1), 0)

    start = 13 + table(byte(10))  # the header, the logical screen, its global colour table

    def step(position, frames, in_blocks):
        value = byte(position)
        # a run of data sub-blocks: skip one (its length byte + data); length 0 ends the run
        skipped = (position + value + 1, frames, value != 0)
        image = (position + 10 + table(byte(position + 9)) + 1, frames + 1, True)  # 0x2C
        extension = (position + 2, frames, True)  # 0x21, its label, then sub-blocks
        done = (length, frames, False)  # the trailer 0x3B, or anything else
        pick = lambda i: tf.where(in_blocks, skipped[i], tf.where(  # noqa: E731
            value == 0x2C, image[i], tf.where(value == 0x21, extension[i], done[i])))
        return pick(0), pick(1), pick(2)

    _, frames, _ = tf.while_loop(lambda position, *_: position < length, step,
                                 (start, tf.constant(0), tf.constant(False)))
    return tf.cast(frames, tf.float64)


def _jpeg_scale_index(width, height, side):
    """Index into JPEG_SCALES of the scale Pillow's `draft` picks when data/images.py asks it
    for `side` x `side`: the largest at most min(width // side, height // side)."""
    import tensorflow as tf

    fits = tf.minimum(tf.math.floordiv(width, float(side)), tf.math.floordiv(height, float(side)))
    return tf.reduce_sum(tf.cast(fits >= list(JPEG_SCALES[1:]), tf.int32))


def _float64(number):
    import tensorflow as tf

    return tf.constant(number, tf.float64)


def _decode_to_pixels(image_bytes, image_size):
    """In-graph decoding for the bytes signature: JPEG/PNG/BMP/GIF (first frame) -> RGB
    float pixels at the model's size, with the antialiased bilinear resize Pillow also uses.

    Refused before decoding, from the header (the limits of every other decode path,
    data/images.py): another format; over MAX_PIXELS pixels; pixels that decode to over
    MAX_DECODED_BYTES. The graph decodes straight to 8-bit RGB whatever the file holds (a
    16-bit or grayscale PNG included: libpng converts row by row, measured: a 6000 x 6000
    16-bit PNG raised the peak by 108 MB, its RGB size), so its decoded size is width x
    height x 3. JPEGs are decoded at the scale Pillow's draft picks, by the same libjpeg
    method, so they decode to exactly the pixels data/images.py gets, and a large photo costs
    what its scaled size does. A GIF counts every frame (_gif_frames): TensorFlow's decoder
    holds them all at the canvas size (measured: 40 frames of 1500 x 1500, 270 MB, from a
    115 kB file) while the header states only the canvas. At most DECODES_AT_ONCE images of a
    call are decoded at once. Not read: the EXIF orientation (TensorFlow's decoders have no
    such step), which Pillow's path applies; docs/smaller-models.md says so to TF Serving users.
    """
    import tensorflow as tf

    from catsdogs.data.images import MAX_DECODED_BYTES, MAX_PIXELS

    def decode_one(encoded):
        width, height = _header_size(encoded)
        is_jpeg = tf.io.is_jpeg(encoded)
        scale_index = tf.where(is_jpeg, _jpeg_scale_index(width, height, max(image_size)), 0)
        scale = tf.gather(tf.constant(JPEG_SCALES, tf.float64), scale_index)
        is_gif = tf.equal(tf.strings.substr(encoded, 0, 4), b"GIF8")
        frames = tf.cond(is_gif, lambda: _gif_frames(encoded), lambda: _float64(1))
        decoded = tf.math.ceil(width / scale) * tf.math.ceil(height / scale) * 3 * frames
        checks = [
            tf.debugging.assert_greater(tf.minimum(width, height), _float64(0),
                                        message="not a JPEG, PNG, GIF or BMP image"),
            tf.debugging.assert_less_equal(width * height, _float64(MAX_PIXELS), message=(
                f"image larger than {MAX_PIXELS:,} pixels (a possible decompression bomb)")),
            tf.debugging.assert_less_equal(decoded, _float64(MAX_DECODED_BYTES), message=(
                f"image decodes to over {MAX_DECODED_BYTES / 2**20:.0f} MiB (width x height x "
                f"3 bytes, JPEGs once scaled, GIFs every frame); save it smaller"))]

        def jpeg():  # `ratio` is an attribute, not a tensor: one branch per scale
            return tf.switch_case(scale_index, [
                lambda ratio=ratio: tf.io.decode_jpeg(encoded, channels=3, ratio=ratio,
                                                      dct_method="INTEGER_ACCURATE")
                for ratio in JPEG_SCALES])

        with tf.control_dependencies(checks):
            image = tf.cond(is_jpeg, jpeg, lambda: tf.io.decode_image(
                encoded, channels=3, expand_animations=False))
        return tf.image.resize(image, image_size, method="bilinear", antialias=True)

    return tf.map_fn(decode_one, image_bytes, fn_output_signature=tf.float32,
                     parallel_iterations=DECODES_AT_ONCE)


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
    # the same names as a variable, read back by classifier.load (not used in the graph: a
    # gather from a variable is an op model_ops does not let through)
    serving.class_names = tf.Variable(names, trainable=False)
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
