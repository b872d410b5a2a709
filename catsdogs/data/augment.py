"""ImageDataGenerator's augmentation knobs, in its units, as Keras layers for the tf.data pipeline.

Why not stack Keras' RandomRotation/RandomTranslation/RandomShear/RandomZoom: `RandomShear`
shears about the image corner along both axes, with a factor that is not ImageDataGenerator's
angle in degrees, and `RandomBrightness` adds to pixels where ImageDataGenerator multiplies them.
Four layers also mean four resamplings (four blurs) of every image; measured on a 2-core CPU at
150x150, one fused warp delivers 2.4x the images/s of the four-layer stack. So rotation, shifts,
shear and zoom are composed into ImageDataGenerator's own affine matrix and applied once, by
`bilinear_warp`, which XLA compiles inside tf.data (tf_pipeline.make_dataset); flips are folded into
that matrix, and only without any warp do they use Keras' `RandomFlip` as it is. Edges repeat
into the gaps (ImageDataGenerator's default "nearest"). `AlternatingFlips` is airbench's
derandomised horizontal flip, which needs each image's index and the epoch, so it runs in the
pipeline's gather step rather than as a layer.
"""

import math

import keras
import numpy as np
from keras import ops

from catsdogs.config import AugmentConfig

def bilinear_warp(images, transforms):
    """Resample each image at its transform's input coordinates, bilinearly, edges repeated.

    The same numbers as `ops.image.affine_transform(images, transforms, "bilinear",
    fill_mode="nearest")` (a test holds them equal), written as four gathers so that XLA can
    compile it: TensorFlow's ImageProjectiveTransformV3 kernel has no XLA lowering and, per
    channel of every pixel, recomputes the projection; compiled, this runs about 4x faster.
    `transforms` are Keras' 8-number rows of which only the affine six are used.
    """
    batch, height, width, channels = ops.shape(images)
    xs = ops.arange(width, dtype=images.dtype)[None, None, :]
    ys = ops.arange(height, dtype=images.dtype)[None, :, None]
    a0, a1, a2, b0, b1, b2 = (ops.reshape(transforms[:, i], (-1, 1, 1)) for i in range(6))
    # Clamping the coordinate first is "nearest" fill: outside pixels repeat the edge.
    x = ops.clip(a0 * xs + a1 * ys + a2, 0, width - 1)
    y = ops.clip(b0 * xs + b1 * ys + b2, 0, height - 1)
    x0, y0 = ops.floor(x), ops.floor(y)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = ops.cast(x0, "int32"), ops.cast(y0, "int32")
    x1, y1 = ops.minimum(x0 + 1, width - 1), ops.minimum(y0 + 1, height - 1)
    flat = ops.reshape(images, (-1, channels))
    first = ops.reshape(ops.arange(batch, dtype="int32") * (height * width), (-1, 1, 1))

    def pixels(row, col):
        return ops.take(flat, first + row * width + col, axis=0)

    top = pixels(y0, x0) * (1 - wx) + pixels(y0, x1) * wx
    bottom = pixels(y1, x0) * (1 - wx) + pixels(y1, x1) * wx
    return top * (1 - wy) + bottom * wy


class ImageDataGeneratorAffine(keras.layers.Layer):
    """Random rotation, shifts, shear, zoom and flips as one affine warp, in ImageDataGenerator's units.

    Per image: theta ~ U(-rotation_range, rotation_range) degrees; a horizontal shift of
    U(-width_shift_range, width_shift_range) * width pixels (a vertical one likewise from
    `height_shift_range`); a range >= 1 is in pixels, and an int N shifts by whole pixels,
    +-k with k uniform in 0..N-1, as ImageDataGenerator's int ranges do: no resampling blur, so
    trained images stay as sharp as the ones predicted; shear ~ U(-shear_range, shear_range)
    degrees; zoom zx, zy ~ U(*zoom_range) drawn independently (>1 zooms out). The matrix is
    ImageDataGenerator's `R @ T @ S @ Z` about the image centre, mapping output to input pixels;
    a flip (each with probability 1/2, after the warp as in ImageDataGenerator) negates the
    output axis it mirrors, so it costs nothing: no second pass over the pixels, which also keeps
    XLA from fusing the gathers into a flip's reverse-and-select (7x slower, measured).

    Note: ImageDataGenerator itself (since keras-preprocessing 1.1) shifts images horizontally
    for `height_shift_range` and vertically for `width_shift_range`, against its docs; this layer
    follows the docs. Images are channels-last batches of shape (batch, height, width, channels).

    Example:
        >>> layer = ImageDataGeneratorAffine(rotation_range=20, zoom_range=(0.8, 1.2), seed=1)
        >>> layer(keras.ops.ones((2, 32, 32, 3)), training=True).shape
        (2, 32, 32, 3)
    """

    def __init__(self, rotation_range=0.0, width_shift_range=0.0, height_shift_range=0.0,
                 shear_range=0.0, zoom_range=(1.0, 1.0), horizontal_flip=False,
                 vertical_flip=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rotation_range = float(rotation_range)
        self.width_shift_range = width_shift_range  # an int means whole pixels: keep the type
        self.height_shift_range = height_shift_range
        self.shear_range = float(shear_range)
        self.zoom_range = tuple(float(z) for z in zoom_range)
        self.horizontal_flip = bool(horizontal_flip)
        self.vertical_flip = bool(vertical_flip)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _uniform(self, batch, limit):
        return keras.random.uniform((batch,), -limit, limit, seed=self.seed_generator)

    def _shift(self, batch, shift_range, size):
        """Shifts in pixels for ImageDataGenerator's `shift_range` (see the class docstring)."""
        if isinstance(shift_range, int) and shift_range >= 1:
            steps = keras.random.randint((batch,), 0, shift_range, seed=self.seed_generator)
            return ops.cast(steps, "float32") * self._flip_sign(batch, True)
        pixels = shift_range * size if shift_range < 1 else shift_range
        return self._uniform(batch, float(pixels))

    def _flip_sign(self, batch, enabled):
        if not enabled:
            return ops.ones((batch,))
        coin = keras.random.uniform((batch,), seed=self.seed_generator)
        return ops.where(coin < 0.5, -1.0, 1.0)

    def sample_parameters(self, batch, height, width):
        """Draw one set of ImageDataGenerator parameters per image (degrees, pixels, scales,
        and -1 for a mirrored axis)."""
        low, high = self.zoom_range
        return {
            "theta": self._uniform(batch, self.rotation_range),
            "shift_x": self._shift(batch, self.width_shift_range, width),
            "shift_y": self._shift(batch, self.height_shift_range, height),
            "shear": self._uniform(batch, self.shear_range),
            "zx": keras.random.uniform((batch,), low, high, seed=self.seed_generator),
            "zy": keras.random.uniform((batch,), low, high, seed=self.seed_generator),
            "flip_x": self._flip_sign(batch, self.horizontal_flip),
            "flip_y": self._flip_sign(batch, self.vertical_flip),
        }

    @staticmethod
    def transform_matrices(params, height, width):
        """Keras' 8-number transforms (output xy -> input xy) for a batch of parameters."""
        theta = params["theta"] * (math.pi / 180)
        shear = params["shear"] * (math.pi / 180)
        # A flip mirrors the output about the centre: x_out - c becomes -(x_out - c).
        zx, zy = params["zx"] * params["flip_x"], params["zy"] * params["flip_y"]
        tx, ty = params["shift_x"], params["shift_y"]
        cos_t, sin_t = ops.cos(theta), ops.sin(theta)
        sin_s, cos_s = ops.sin(shear), ops.cos(shear)
        # R @ T @ S @ Z with R = [[c, -s], [s, c]], T = shift, S = [[1, -sin], [0, cos]],
        # Z = diag(zx, zy), multiplied out so the whole batch is a handful of vector ops.
        a0 = cos_t * zx
        a1 = (-cos_t * sin_s - sin_t * cos_s) * zy
        b0 = sin_t * zx
        b1 = (-sin_t * sin_s + cos_t * cos_s) * zy
        a2 = cos_t * tx - sin_t * ty
        b2 = sin_t * tx + cos_t * ty
        # About the centre: x_in = A (x_out - c) + c + t.
        cx, cy = (width - 1) / 2, (height - 1) / 2
        a2 = a2 + cx - a0 * cx - a1 * cy
        b2 = b2 + cy - b0 * cx - b1 * cy
        zeros = ops.zeros_like(a0)
        return ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)

    def apply(self, images, params):
        """Warp `images` with given parameters (the deterministic half of `call`)."""
        height, width = images.shape[1], images.shape[2]
        transforms = self.transform_matrices(params, height, width)
        return bilinear_warp(images, ops.cast(transforms, images.dtype))

    def call(self, images, training=True):
        if not training:
            return images
        return self.apply(images, self.sample_parameters(ops.shape(images)[0], images.shape[1],
                                                         images.shape[2]))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rotation_range": self.rotation_range,
                "width_shift_range": self.width_shift_range,
                "height_shift_range": self.height_shift_range, "shear_range": self.shear_range,
                "zoom_range": self.zoom_range, "horizontal_flip": self.horizontal_flip,
                "vertical_flip": self.vertical_flip, "seed": self.seed}


class RandomBrightnessScale(keras.layers.Layer):
    """Multiply each image by U(low, high) and clip to 0..255, as ImageDataGenerator's
    `brightness_range` does through PIL's `ImageEnhance.Brightness` (Keras' own
    `RandomBrightness` adds an offset instead). Expects pixels in 0..255."""

    def __init__(self, brightness_range, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.brightness_range = tuple(float(b) for b in brightness_range)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        low, high = self.brightness_range
        factors = keras.random.uniform((ops.shape(images)[0], 1, 1, 1), low, high,
                                       seed=self.seed_generator)
        return ops.clip(images * ops.cast(factors, images.dtype), 0, 255)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "brightness_range": self.brightness_range, "seed": self.seed}


class AlternatingFlips:
    """airbench's derandomised horizontal flip, for the tf.data pipeline (tf_pipeline.make_dataset).

    A coin per image (drawn once from `seed`) decides whether it is mirrored in the first epoch;
    from then on every image swaps sides each epoch, so across any two epochs running the model
    sees each image both ways round, where a new coin per epoch shows half of them the same
    way twice. airbench measures it ahead of random flips wherever flips help
    (arXiv 2404.00498, section 3.6). Flipping before the random warp is the same in
    distribution as after it: every ImageDataGenerator range is symmetric about zero.

    The epoch lives in a tf.Variable that `training.callbacks.FlipEpoch` sets at each epoch's
    start (Keras makes the epoch's iterator after `on_epoch_begin`: progressive resizing relies
    on the same), and on
    resume Keras calls it with the resumed epoch, so the alternation continues in step.
    """

    def __init__(self, count, seed=None):
        from catsdogs.backends import pipeline_value

        self.coins = np.random.default_rng(seed).random(count) < 0.5
        self.epoch = pipeline_value(0, "int64")

    def __call__(self, images, indices):
        """Mirror left-right the images of `indices` (their rows in the split) due this epoch."""
        import tensorflow as tf

        odd_epoch = tf.equal(self.epoch.read_value() % 2, 1)
        flip = tf.not_equal(tf.gather(self.coins, indices), odd_epoch)
        return tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)

    def on_host(self, images, indices):
        """The same on a NumPy batch, for the host pipeline."""
        flip = self.coins[indices] != (int(self.epoch.read_value()) % 2 == 1)
        return np.where(flip[:, None, None, None], images[:, :, ::-1], images)


def build_augmenter(config: AugmentConfig, seed=None):
    """The augmentation layers for `config` as one `keras.Sequential`, or None if it is a no-op.

    Runs in the tf.data pipeline on batches of float pixels 0..255, training split only.
    With `alternate_flips` the layers leave horizontal flips to AlternatingFlips.
    """
    layers = []
    warps = (config.rotation_range, config.width_shift_range, config.height_shift_range,
             config.shear_range)
    horizontal_flip = config.horizontal_flip and not config.alternate_flips
    flip_mode = {(True, False): "horizontal", (False, True): "vertical",
                 (True, True): "horizontal_and_vertical"}.get(
        (horizontal_flip, config.vertical_flip))
    if any(warps) or config.zoom_range != (1.0, 1.0):  # flips ride along in the warp
        layers.append(ImageDataGeneratorAffine(
            config.rotation_range, config.width_shift_range, config.height_shift_range,
            config.shear_range, config.zoom_range, horizontal_flip,
            config.vertical_flip, seed=seed))
    elif flip_mode:  # flips alone: no resampling needed
        layers.append(keras.layers.RandomFlip(flip_mode, seed=seed))
    if config.brightness_range is not None and config.brightness_range != (1.0, 1.0):
        layers.append(RandomBrightnessScale(config.brightness_range, seed=seed))
    return keras.Sequential(layers, name="augmentation") if layers else None


def build_batch_mixer(mixup=0.0, cutmix=0.0, rand_augment=0, seed=None):
    """Keras' own RandAugment, MixUp and CutMix as one `(images, labels) -> (images, labels)`
    step over whole training batches, or None when all are off. Mixed labels are float rows:
    one-hot ones blended, or a one-sigmoid model's 0/1 labels as (n, 1) blends.

    These run after the XLA-compiled warp, in TensorFlow's own ops: Keras builds them from
    random shuffles and per-op branches that XLA does not compile.
    With both MixUp and CutMix on, each batch takes one of the two, evenly.
    """
    randaugment = (keras.layers.RandAugment(value_range=(0, 255), num_ops=rand_augment, seed=seed)
                   if rand_augment else None)
    mixers = []
    if mixup:
        mixers.append(keras.layers.MixUp(alpha=mixup, seed=seed))
    if cutmix:
        mixers.append(keras.layers.CutMix(factor=cutmix, seed=seed))
    if randaugment is None and not mixers:
        return None
    from catsdogs.backends import tensorflow_trains

    # which of MixUp and CutMix a batch takes: tf.data's graph draws its own
    coin = None if tensorflow_trains() else np.random.default_rng(seed)

    def mix(images, labels):
        if randaugment is not None:
            images = randaugment(images, training=True)
        if not mixers:
            return images, labels
        if coin is None:
            import tensorflow as tf

            labels = tf.cast(labels, tf.float32)
        else:
            labels = np.asarray(labels, np.float32)
        if len(labels.shape) == 1:  # one sigmoid's 0/1 labels: rows (n, 1), as MixUp needs
            labels = labels[:, None]
        if len(mixers) == 1:
            return _mixed(mixers[0], images, labels)
        if coin is not None:  # the host pipeline (eager): a coin from NumPy
            return _mixed(mixers[int(coin.random() < 0.5)], images, labels)
        return tf.cond(tf.random.uniform(()) < 0.5, lambda: _mixed(mixers[0], images, labels),
                       lambda: _mixed(mixers[1], images, labels))

    return mix


def _mixed(layer, images, labels):
    out = layer({"images": images, "labels": labels}, training=True)
    return out["images"], out["labels"]
