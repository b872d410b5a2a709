"""The seed presets are the tutorials' models, layer for layer."""

import keras
import numpy as np
import pytest

from catsdogs.models import PRESETS, count_flops, describe_presets, get_preset
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
