"""The seed presets are the tutorials' models, layer for layer."""

import dataclasses

import keras
import numpy as np
import pytest

from catsdogs.models.presets import (BACKBONES, PRESETS, WHITENING_LAYER, count_flops,
                                     describe_presets, get_preset, identity_init, whiten_patches)
from catsdogs.errors import CatsDogsError

SEED_CATSDOGS = [  # (layer type, output shape without batch, parameters)
    ("InputLayer", (150, 150, 3), 0),
    ("Rescaling", (150, 150, 3), 0),
    ("Conv2D", (148, 148, 32), 896), ("MaxPooling2D", (74, 74, 32), 0),
    ("Conv2D", (72, 72, 64), 18_496), ("MaxPooling2D", (36, 36, 64), 0),
    ("Conv2D", (34, 34, 128), 73_856), ("MaxPooling2D", (17, 17, 128), 0),
    ("Conv2D", (15, 15, 128), 147_584), ("MaxPooling2D", (7, 7, 128), 0),
    ("Flatten", (6272,), 0),
    ("Dense", (512,), 3_211_776),
    ("Dense", (1,), 513),
]
SEED_CIFAR10 = [
    ("InputLayer", (32, 32, 3), 0),
    ("Rescaling", (32, 32, 3), 0),
    ("Conv2D", (30, 30, 32), 896), ("MaxPooling2D", (15, 15, 32), 0),
    ("Conv2D", (13, 13, 64), 18_496), ("MaxPooling2D", (6, 6, 64), 0),
    ("Conv2D", (4, 4, 128), 73_856), ("MaxPooling2D", (2, 2, 128), 0),
    ("Flatten", (512,), 0),
    ("Dense", (128,), 65_664),
    ("Dense", (10,), 1_290),
]


def layer_table(model):
    return [(type(layer).__name__, tuple(layer.output.shape[1:]), layer.count_params())
            for layer in model.layers]


@pytest.mark.parametrize("name, classes, expected, total", [
    ("seed-catsdogs", 2, SEED_CATSDOGS, 3_453_121),
    ("seed-cifar10", 10, SEED_CIFAR10, 160_202),
])
def test_seed_presets_are_exact(name, classes, expected, total):
    model = get_preset(name).build(classes)
    assert layer_table(model) == expected
    assert model.count_params() == total
    activations = [layer.activation.__name__ for layer in model.layers if hasattr(layer, "activation")]
    assert activations[:-1] == ["relu"] * (len(activations) - 1)
    assert activations[-1] == ("sigmoid" if classes == 2 else "softmax")
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(c.kernel_size == (3, 3) and c.padding == "valid" for c in convs)
    assert all(layer.pool_size == (2, 2) for layer in model.layers
               if isinstance(layer, keras.layers.MaxPooling2D))


def test_models_take_pixels_0_to_255_and_output_probabilities():
    model = get_preset("seed-cifar10").build(10)
    rescale = model.get_layer("rescale")
    assert rescale.scale == pytest.approx(1 / 255) and rescale.offset == 0
    probabilities = model(np.full((2, 32, 32, 3), 255.0, np.float32)).numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_head_follows_class_count():
    assert get_preset("seed-catsdogs").build(3).output.shape[-1] == 3
    assert get_preset("seed-cifar10").build(2).output.shape[-1] == 1


def test_flops_of_seed_cifar10_by_hand():
    model = get_preset("seed-cifar10").build(10)
    by_hand = 2 * (3 * 3 * 3 * 32 * 30 * 30 + 3 * 3 * 32 * 64 * 13 * 13 + 3 * 3 * 64 * 128 * 4 * 4
                   + 512 * 128 + 128 * 10)
    assert count_flops(model) == by_hand


def test_list_presets_names_every_preset_with_its_parameters():
    text = "\n".join(describe_presets())
    for name in PRESETS:
        assert name in text
    assert "3,453,121" in text and "160,202" in text


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(CatsDogsError, match="did you mean 'seed-catsdogs'"):
        get_preset("seed-catdogs")


# beside the seeds; of the two keras.applications presets (one code path, make_backbone_body)
# the smaller one steps: EfficientNetB0's step took ~50 s of the suite's 10 minutes, and
# test_list_presets_names_every_preset_with_its_parameters builds it
# the keras.applications backbones beside MobileNetV3Small are minutes of CPU for one step:
# test_backbone_presets_build_offline_with_their_preprocessing covers them
# a preset that differs from an earlier one only in recipe, image size or words (long- and
# hires-catsdogs of fast-catsdogs: one network; fast-catsdogs takes any size) builds nothing new


def same_network(preset, other):
    words = ("name", "description", "recipe", "image_size")
    return dataclasses.replace(preset, **{field: getattr(other, field) for field in words}) == other


NEW_PRESETS = [name for index, name in enumerate(PRESETS)
               if not name.startswith("seed-") and name not in {b[0] for b in BACKBONES}
               and not any(same_network(PRESETS[name], PRESETS[earlier])
                           for earlier in list(PRESETS)[:index])]


def test_the_presets_that_share_a_network_are_recipes_of_one_that_steps():
    shared = {name for name in PRESETS if name not in NEW_PRESETS and not name.startswith("seed-")
              and name not in {b[0] for b in BACKBONES}}
    assert shared == {"long-catsdogs", "hires-catsdogs"} and "fast-catsdogs" in NEW_PRESETS
    assert PRESETS["fast-catsdogs"].any_size  # so hires-catsdogs' 128 px builds the same layers


@pytest.mark.parametrize("name", [  # a keras.applications graph: most of a minute to trace
    pytest.param(name, marks=pytest.mark.slow) if name.startswith("mobilenet") else name
    for name in NEW_PRESETS])
def test_new_preset_builds_trains_a_step_and_saves_and_loads(name, tmp_path):
    """Every preset beside the seeds: one optimizer step on generated images changes its
    weights, and the saved `.keras` loads safely (catsdogs.load) with identical outputs."""
    import json

    from catsdogs.inference.classifier import load

    preset = get_preset(name)
    classes = preset.listed_classes
    keras.utils.set_random_seed(0)
    model = preset.build(classes)
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (4, *preset.image_size, 3)).astype(np.float32)
    labels = np.arange(4) % classes
    if preset.adapt is not None:
        preset.adapt(model, pixels.astype(np.uint8))
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss="binary_crossentropy" if classes == 2 else "sparse_categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    model.fit(pixels, labels.astype(np.float32 if classes == 2 else np.int32), batch_size=4,
              epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    model.save(tmp_path / "model.keras")
    (tmp_path / "class_names.json").write_text(json.dumps([f"c{i}" for i in range(classes)]))
    loaded = load(tmp_path / "model.keras")
    expected = model.predict_on_batch(pixels)
    np.testing.assert_allclose(loaded.model.predict_on_batch(pixels), expected, atol=1e-5)


def test_patch_whitening_decorrelates_the_training_patches_and_stays_frozen():
    """fast-cifar10's stem, set from correlated images: on those images its filters give
    outputs of mean 0 and identity covariance (a filter and its negative per eigenvector),
    and a training step leaves them as they were."""
    model = get_preset("fast-cifar10").build(10)
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 200, (64, 16, 16, 1))  # neighbouring pixels and channels correlate
    pixels = (base.repeat(2, 1).repeat(2, 2) + rng.uniform(0, 55, (64, 32, 32, 3))).astype(np.uint8)
    whiten_patches(model, pixels, epsilon=1e-9)  # the default epsilon damps the smallest eigenvalues
    stem = keras.Model(model.input, model.get_layer(WHITENING_LAYER).output)
    outputs = stem.predict_on_batch(pixels.astype(np.float32)).reshape(-1, 24).astype(np.float64)
    np.testing.assert_allclose(outputs.mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(outputs[:, :12], -outputs[:, 12:], atol=1e-4)
    np.testing.assert_allclose(np.cov(outputs[:, :12], rowvar=False), np.eye(12), atol=0.05)

    kernel = model.get_layer(WHITENING_LAYER).get_weights()[0].copy()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    model.fit(pixels.astype(np.float32), np.arange(64) % 10, batch_size=16, epochs=1, verbose=0)
    np.testing.assert_array_equal(model.get_layer(WHITENING_LAYER).get_weights()[0], kernel)


@pytest.mark.parametrize("name", [b[0] for b in BACKBONES])
def test_backbone_presets_build_offline_with_their_preprocessing(name):
    """Each keras.applications preset builds without the network (--weights none) and scales
    0..1 pixels, inside the model, to the range its ImageNet weights expect."""
    model = get_preset(name).build(2)
    scale = model.layers[2]
    assert isinstance(scale, keras.layers.Rescaling)
    low, high = (float(scale(np.array([[v]], np.float32))[0, 0]) for v in (0.0, 1.0))
    assert (low, high) == ((-1.0, 1.0) if name == "resnet50v2-catsdogs" else (0.0, 255.0))
    assert model.output_shape == (None, 1)


def test_pretrained_weights_only_for_backbone_presets():
    with pytest.raises(CatsDogsError, match="no pretrained weights.*mobilenetv3-catsdogs"):
        get_preset("resnet-catsdogs").build(2, weights="imagenet")


def test_imagenet_weights_come_through_keras_download_and_freeze_the_backbone(monkeypatch, tmp_path):
    """Keras' own downloader (file_utils.get_file, with its cache and hash) is asked for the
    weights; here it hands back a weights file made offline, which must land in the backbone."""
    from keras.src.utils import file_utils

    reference = keras.applications.MobileNetV3Small(include_top=False, weights=None,
                                                    input_shape=(224, 224, 3), pooling="avg")
    reference.save_weights(tmp_path / "stand_in.weights.h5")
    asked = []

    def from_cache(fname, origin=None, **kwargs):
        asked.append(origin)
        return str(tmp_path / "stand_in.weights.h5")

    monkeypatch.setattr(file_utils, "get_file", from_cache)
    model = get_preset("mobilenetv3-catsdogs").build(2, weights="imagenet")
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    assert asked and asked[0].startswith("https://")
    for got, want in zip(backbone.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert not backbone.trainable
    assert [w.path for w in model.trainable_weights] == ["probability/kernel", "probability/bias"]


def test_offline_imagenet_weights_are_one_line(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(CatsDogsError, match="could not get the imagenet weights of "
                                            "mobilenetv3-catsdogs") as raised:
        get_preset("mobilenetv3-catsdogs").build(2, weights="imagenet")
    # the fix names the command that fetches the file, and the file Keras looks for
    assert "catsdogs weights fetch mobilenetv3-catsdogs" in str(raised.value)
    assert "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5" in str(raised.value)


def test_identity_init_passes_channels_through_and_leaves_the_whitening_stem():
    """air-cifar10's start (airbench's dirac init): each conv after the stem first copies its
    input channels; the whitening stem keeps the filters set from the data."""
    inputs = keras.Input((6, 6, 3))
    stem = keras.layers.Conv2D(4, 2, padding="same", name=WHITENING_LAYER)(inputs)
    outputs = keras.layers.Conv2D(6, 3, padding="same", use_bias=False)(stem)
    model = keras.Model(inputs, [stem, outputs])
    kernel = np.array(model.get_layer(WHITENING_LAYER).kernel)
    identity_init(model)
    np.testing.assert_array_equal(model.get_layer(WHITENING_LAYER).kernel, kernel)
    features, convolved = model(np.random.default_rng(0).normal(size=(2, 6, 6, 3)))
    np.testing.assert_allclose(np.array(convolved)[..., :4], np.array(features), atol=1e-6)
    assert np.abs(np.array(convolved)[..., 4:]).max() > 0  # the other channels keep their init
