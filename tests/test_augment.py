"""Each augmentation flag moves or changes an image as ImageDataGenerator's docs say.

The reference is Keras' own legacy ImageDataGenerator (scipy-based), applied with the same
parameters; where it disagrees with its docs (shift axes), the docs win and the test says so.
"""

import keras
import numpy as np
import pytest
from keras.src.legacy.preprocessing.image import ImageDataGenerator

import catsdogs
from catsdogs.training.callbacks import FlipEpoch
from catsdogs.data.augment import (AlternatingFlips, ImageDataGeneratorAffine,
                              RandomBrightnessScale, bilinear_warp, build_augmenter)
from catsdogs.config import AugmentConfig, TrainConfig
from catsdogs.data.datasets import Split
from catsdogs.data.tf_pipeline import make_dataset
from catsdogs.errors import CatsDogsError

from conftest import Interrupt, crash_when_epoch_starts

SIZE = 33


def smooth_image(seed=0):
    """A smooth image, so bilinear resampling differences stay small away from edges."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (5, 5, 3))
    rows = np.linspace(0, 4, SIZE)
    cols = np.linspace(0, 4, SIZE)
    r0, c0 = np.floor(rows).astype(int).clip(0, 3), np.floor(cols).astype(int).clip(0, 3)
    fr, fc = (rows - r0)[:, None, None], (cols - c0)[None, :, None]
    top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c0 + 1] * fc
    bottom = coarse[r0 + 1][:, c0] * (1 - fc) + coarse[r0 + 1][:, c0 + 1] * fc
    return (top * (1 - fr) + bottom * fr).astype(np.float32)


def warp(image, **params):
    full = {"theta": 0.0, "shift_x": 0.0, "shift_y": 0.0, "shear": 0.0, "zx": 1.0, "zy": 1.0,
            "flip_x": 1.0, "flip_y": 1.0, **params}
    batch = {key: np.array([value], np.float32) for key, value in full.items()}
    return np.asarray(ImageDataGeneratorAffine().apply(image[None], batch))[0]


def reference(image, **params):
    return ImageDataGenerator(fill_mode="nearest").apply_transform(image, params)


@pytest.mark.parametrize("params", [
    {"theta": 25.0}, {"theta": -40.0}, {"shear": 20.0}, {"shear": -8.0},
    {"zx": 0.7, "zy": 0.7}, {"zx": 1.3, "zy": 0.8},
    {"theta": 15.0, "shear": 10.0, "zx": 1.1, "zy": 0.9},
])
def test_rotation_shear_zoom_equal_imagedatagenerator(params):
    image = smooth_image()
    ours, theirs = warp(image, **params), reference(image, **params)
    assert np.abs(theirs - image).mean() > 1.0  # the reference really moved pixels
    assert np.abs(ours - theirs).mean() < 0.5  # pixels 0..255: same warp, same direction
    assert np.percentile(np.abs(ours - theirs), 99) < 3.0


@pytest.mark.parametrize("flips", [{"flip_horizontal": True}, {"flip_vertical": True},
                                   {"flip_horizontal": True, "flip_vertical": True}])
def test_flips_folded_into_the_warp_equal_imagedatagenerator(flips):
    image = smooth_image(4)
    params = {"theta": 12.0, "zx": 0.9, "zy": 1.1}
    signs = {"flip_x": -1.0 if flips.get("flip_horizontal") else 1.0,
             "flip_y": -1.0 if flips.get("flip_vertical") else 1.0}
    ours, theirs = warp(image, **params, **signs), reference(image, **params, **flips)
    assert np.abs(theirs - reference(image, **params)).mean() > 1.0  # the flip changed pixels
    assert np.abs(ours - theirs).mean() < 0.5
    assert np.percentile(np.abs(ours - theirs), 99) < 3.0


def test_bilinear_warp_equals_keras_affine_transform():
    """The XLA-friendly warp gives TensorFlow's own kernel's numbers, edges included."""
    rng = np.random.default_rng(5)
    images = rng.uniform(0, 255, (6, 20, 27, 3)).astype(np.float32)
    transforms = np.zeros((6, 8), np.float32)
    transforms[:, [0, 4]] = rng.uniform(-1.5, 1.5, (6, 2))  # flips and zooms out past the edges
    transforms[:, [1, 3]] = rng.uniform(-0.5, 0.5, (6, 2))
    transforms[:, [2, 5]] = rng.uniform(-15, 15, (6, 2))
    expected = keras.ops.image.affine_transform(images, transforms, interpolation="bilinear",
                                                fill_mode="nearest")
    np.testing.assert_allclose(bilinear_warp(images, transforms), expected, atol=1e-3)


def test_augmentation_compiles_with_xla_to_the_same_pixels():
    import tensorflow as tf

    layer = ImageDataGeneratorAffine(rotation_range=30, shear_range=10, zoom_range=(0.8, 1.2),
                                     horizontal_flip=True, seed=2)
    params = layer.sample_parameters(4, SIZE, SIZE)
    images = np.stack([smooth_image(i) for i in range(4)])
    compiled = tf.function(layer.apply, jit_compile=True)(images, params)
    np.testing.assert_allclose(compiled, layer.apply(images, params), atol=1e-3)


def test_flip_with_a_warp_mirrors_about_half_the_images():
    layer = build_augmenter(AugmentConfig(zoom_range=(1.0, 1.0001), horizontal_flip=True), seed=3)
    images = np.repeat(smooth_image(2)[None], 64, axis=0)
    out = np.asarray(layer(images, training=True))
    mirrored = sum(np.abs(o - images[0][:, ::-1]).max() < 1.0 for o in out)
    same = sum(np.abs(o - images[0]).max() < 1.0 for o in out)
    assert mirrored + same == 64 and 16 < mirrored < 48


def test_zoom_above_one_zooms_out():
    image = np.zeros((SIZE, SIZE, 1), np.float32)
    image[8:25, 8:25] = 255  # a 17 px square in the middle
    zoomed_out = warp(image, zx=2.0, zy=2.0)
    zoomed_in = warp(image, zx=0.5, zy=0.5)
    assert (zoomed_out > 127).sum() < (image > 127).sum() < (zoomed_in > 127).sum()


def bright_column_and_row(image):
    mask = image[..., 0] > 127
    return np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))


def test_width_shift_moves_horizontally():
    image = np.zeros((SIZE, SIZE, 1), np.float32)
    image[10:14, 16] = 255  # a short vertical bar in column 16
    shifted = warp(image, shift_x=8.25)  # pixels
    columns, rows = bright_column_and_row(shifted)
    assert abs(abs(columns.mean() - 16) - 8.25) <= 0.5
    assert rows.tolist() == [10, 11, 12, 13]  # no vertical movement


def test_height_shift_moves_vertically():
    image = np.zeros((SIZE, SIZE, 1), np.float32)
    image[16, 10:14] = 255
    columns, rows = bright_column_and_row(warp(image, shift_y=-8.25))
    assert abs(abs(rows.mean() - 16) - 8.25) <= 0.5
    assert columns.tolist() == [10, 11, 12, 13]


def test_imagedatagenerator_itself_swaps_the_shift_axes():
    """Regression note: ImageDataGenerator's `tx` (from height_shift_range) moves columns."""
    image = smooth_image(1)
    np.testing.assert_allclose(warp(image, shift_x=5.0), reference(image, tx=5.0), atol=1e-3)


def test_sampled_parameters_stay_in_their_ranges():
    layer = ImageDataGeneratorAffine(rotation_range=30, width_shift_range=0.1,
                                     height_shift_range=0.2, shear_range=5,
                                     zoom_range=(0.8, 1.2), seed=7)
    params = {k: np.asarray(v) for k, v in layer.sample_parameters(2000, 40, 30).items()}
    # shifts in pixels: fractions of the width (30) and the height (40)
    for key, low, high in (("theta", -30, 30), ("shift_x", -3, 3), ("shift_y", -8, 8),
                           ("shear", -5, 5), ("zx", 0.8, 1.2), ("zy", 0.8, 1.2)):
        assert low <= params[key].min() and params[key].max() <= high
        assert params[key].max() - params[key].min() > 0.9 * (high - low)  # uses the range
    assert np.corrcoef(params["zx"], params["zy"])[0, 1] < 0.1  # drawn independently


def test_an_integer_shift_range_moves_by_whole_pixels_as_imagedatagenerator_does():
    """An int N: shifts of +-k pixels, k uniform in 0..N-1 (ImageDataGenerator's
    `choice(N) * choice([-1, 1])`), so 0 comes up 1/N of the time and no pixel is blurred."""
    layer = ImageDataGeneratorAffine(width_shift_range=3, height_shift_range=3, seed=5)
    params = layer.sample_parameters(6000, SIZE, SIZE)
    for key in ("shift_x", "shift_y"):
        shifts = np.asarray(params[key])
        assert set(np.unique(shifts)) == {-2.0, -1.0, 0.0, 1.0, 2.0}
        assert abs(np.mean(shifts == 0) - 1 / 3) < 0.03
    image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3)).astype(np.float32)
    out = np.asarray(layer(np.repeat(image[None], 16, axis=0), training=True))
    for shifted in out:  # every output is the image moved by whole pixels, edges repeated
        matches = [(dx, dy) for dx in range(-2, 3) for dy in range(-2, 3)
                   if np.array_equal(shifted[2:-2, 2:-2], image[2 + dy:SIZE - 2 + dy, 2 + dx:SIZE - 2 + dx])]
        assert len(matches) == 1


def test_a_float_shift_range_of_one_or_more_is_in_pixels():
    layer = ImageDataGeneratorAffine(width_shift_range=2.5, seed=5)
    shifts = np.asarray(layer.sample_parameters(2000, SIZE, SIZE)["shift_x"])
    assert -2.5 <= shifts.min() < -2.3 and 2.3 < shifts.max() <= 2.5
    assert np.mean(shifts != np.round(shifts)) > 0.99  # continuous


def test_shift_flags_keep_an_integer_an_int():
    import argparse

    from catsdogs.config import add_flags, from_dict, given_flags

    parser = argparse.ArgumentParser()
    add_flags(parser, AugmentConfig)
    values = given_flags(parser.parse_args(["--width-shift-range", "2",
                                            "--height-shift-range", "0.1"]), AugmentConfig)
    config = from_dict(AugmentConfig, values)
    assert type(config.width_shift_range) is int and config.height_shift_range == 0.1


def test_horizontal_flip_mirrors_left_right_about_half_the_time():
    images = np.repeat(smooth_image(2)[None], 64, axis=0)
    out = np.asarray(build_augmenter(AugmentConfig(horizontal_flip=True), seed=3)(images, training=True))
    mirrored = [np.allclose(o, images[0][:, ::-1]) for o in out]
    same = [np.allclose(o, images[0]) for o in out]
    assert all(m or s for m, s in zip(mirrored, same))
    assert 16 < sum(mirrored) < 48


def test_vertical_flip_mirrors_top_bottom():
    images = np.repeat(smooth_image(3)[None], 64, axis=0)
    out = np.asarray(build_augmenter(AugmentConfig(vertical_flip=True), seed=3)(images, training=True))
    assert all(np.allclose(o, images[0][::-1]) or np.allclose(o, images[0]) for o in out)
    assert any(np.allclose(o, images[0][::-1]) for o in out)


def test_brightness_multiplies_each_image_by_a_factor_in_range():
    images = np.full((200, 4, 4, 3), 100.0, np.float32)
    out = np.asarray(RandomBrightnessScale((0.5, 1.5), seed=1)(images, training=True))
    factors = out[:, 0, 0, 0] / 100.0
    assert np.allclose(out, factors[:, None, None, None] * 100.0)
    assert 0.5 <= factors.min() < 0.6 and 1.4 < factors.max() <= 1.5
    bright = np.asarray(RandomBrightnessScale((3.0, 3.0))(np.full((1, 2, 2, 3), 200.0), training=True))
    assert bright.max() == 255.0  # clipped like PIL's 8-bit result


def test_no_augmentation_at_inference():
    image = smooth_image()[None]
    layer = build_augmenter(AugmentConfig(rotation_range=40, horizontal_flip=True,
                                          brightness_range=(0.5, 1.5)))
    np.testing.assert_array_equal(np.asarray(layer(image, training=False)), image)


def test_identity_config_builds_no_layers():
    assert build_augmenter(AugmentConfig()) is None


def test_zoom_range_float_means_one_minus_to_one_plus():
    assert AugmentConfig(zoom_range=0.2).zoom_range == pytest.approx((0.8, 1.2))
    assert AugmentConfig(zoom_range=(0.5, 1.5)).zoom_range == (0.5, 1.5)


@pytest.mark.parametrize("field, value", [
    ("rotation_range", -1), ("width_shift_range", -0.5), ("shear_range", 95),
    ("zoom_range", (1.2, 0.8)), ("brightness_range", (1.5, 0.5)),
])
def test_bad_augmentation_values_are_user_errors(field, value):
    with pytest.raises(CatsDogsError, match=f"--{field.replace('_', '-')}"):
        AugmentConfig(**{field: value})


def test_alternating_flips_mirror_each_image_in_every_other_epoch_through_the_pipeline():
    """airbench's flip: a seeded coin per image for epoch 0, then each image swaps sides every
    epoch, whatever order the shuffle brings it in; the warp no longer flips on its own."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (40, 6, 8, 3), dtype=np.uint8)
    split = Split(pixels, np.arange(40, dtype=np.int32), [])
    flips = AlternatingFlips(len(split), seed=5)
    dataset = make_dataset(split, 16, shuffle_seed=1, flips=flips)  # labels name the images
    callback = FlipEpoch(flips)
    mirrored_by_epoch = []
    for epoch in range(3):
        callback.on_epoch_begin(epoch)
        mirrored = {}
        for x, y in dataset:
            for image, index in zip(x.numpy(), y.numpy()):
                same = np.array_equal(image, pixels[index])
                assert same or np.array_equal(image, pixels[index][:, ::-1])
                mirrored[int(index)] = not same
        mirrored_by_epoch.append([mirrored[i] for i in range(40)])
    first, second, third = (np.array(m) for m in mirrored_by_epoch)
    assert 8 < first.sum() < 32  # a coin each in the first epoch
    np.testing.assert_array_equal(second, ~first)
    np.testing.assert_array_equal(third, first)
    warp_only = build_augmenter(AugmentConfig(width_shift_range=3, horizontal_flip=True,
                                              alternate_flips=True))
    assert warp_only.layers[0].horizontal_flip is False
    assert build_augmenter(AugmentConfig(horizontal_flip=True, alternate_flips=True)) is None


def test_alternating_flips_without_flips_is_a_user_error():
    with pytest.raises(CatsDogsError, match="--alternate-flips needs --horizontal-flip"):
        AugmentConfig(alternate_flips=True)


def test_a_resumed_run_keeps_its_flips_alternating_in_step(binary_folders, tmp_path, monkeypatch):
    crash_when_epoch_starts(monkeypatch, 1)
    epochs_set = []
    original = FlipEpoch.on_epoch_begin

    def record(self, epoch, logs=None):
        original(self, epoch, logs)
        epochs_set.append(int(self.flips.epoch.numpy()))

    monkeypatch.setattr(FlipEpoch, "on_epoch_begin", record)
    flips = AugmentConfig(width_shift_range=2, horizontal_flip=True, alternate_flips=True)
    with pytest.raises(Interrupt):
        catsdogs.train(TrainConfig(data=str(binary_folders), preset="seed-cifar10", epochs=3,
                                   batch_size=8, augment=flips, run_dir=str(tmp_path / "run")))
    run = catsdogs.resume(tmp_path / "run")
    assert run.config.augment.alternate_flips and len(run.history) == 3
    assert epochs_set == [0, 1, 1, 2]  # the resumed epoch 2 is odd again, as before the crash
