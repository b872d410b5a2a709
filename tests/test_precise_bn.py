"""Precise BatchNorm statistics: exact means over un-augmented training photos, nothing else
changed, and a run that asks for them ships them."""

import json

import keras
import numpy as np

import catsdogs
from catsdogs.training.precise_bn import layers_of, recompute_statistics
from catsdogs.training.train import resolve_config


def small_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.BatchNormalization(momentum=0.99, name="first")(inputs)
    x = keras.layers.Dropout(0.5)(keras.layers.Conv2D(2, 3, name="conv")(x))
    x = keras.layers.BatchNormalization(name="second")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(x))
    return keras.Model(inputs, outputs)


def test_the_statistics_are_the_mean_of_the_batches_and_nothing_else_changes():
    model = small_model()
    pixels = np.random.default_rng(1).uniform(0, 255, (40, 4, 4, 3)).astype(np.float32)
    weights = [w.copy() for w in model.get_weights()]
    trainable = [w.numpy().copy() for w in model.trainable_weights]
    assert recompute_statistics(model, pixels, batch_size=16) == 2
    first = model.get_layer("first")
    batches = [pixels[0:16], pixels[16:32], pixels[32:40]]  # the last one short: weighted
    sizes = [len(b) for b in batches]
    np.testing.assert_allclose(first.moving_mean.numpy(), pixels.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(first.moving_variance.numpy(),
                               np.average([b.var(axis=(0, 1, 2)) for b in batches], axis=0,
                                          weights=sizes), rtol=1e-4)
    for before, after in zip(trainable, model.trainable_weights):
        np.testing.assert_array_equal(before, after.numpy())  # the weights: untouched
    assert first.momentum == 0.99 and layers_of(model, keras.layers.Dropout)[0].rate == 0.5
    again = [w.copy() for w in model.get_weights()]
    recompute_statistics(model, pixels, batch_size=16)  # dropout off: the same every time
    for a, b in zip(again, model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert any(not np.allclose(a, b) for a, b in zip(weights, again))


def test_frozen_batch_norm_layers_keep_their_statistics():
    model = small_model()
    model.get_layer("first").trainable = False  # a frozen pretrained body's, in inference mode
    before = model.get_layer("first").moving_mean.numpy().copy()
    pixels = np.random.default_rng(1).uniform(0, 255, (16, 4, 4, 3)).astype(np.float32)
    assert recompute_statistics(model, pixels) == 1
    np.testing.assert_array_equal(model.get_layer("first").moving_mean.numpy(), before)


def test_a_model_without_batch_norm_is_left_alone():
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(inputs)))
    assert recompute_statistics(model, np.zeros((4, 4, 4, 3), np.float32)) == 0


def test_the_preset_decides_unless_the_flag_does():
    assert resolve_config(catsdogs.TrainConfig(preset="resnet-catsdogs")).precise_bn is True
    assert resolve_config(catsdogs.TrainConfig(preset="fast-catsdogs")).precise_bn is True
    assert resolve_config(catsdogs.TrainConfig(preset="seed-cifar10")).precise_bn is False
    assert resolve_config(catsdogs.TrainConfig(preset="resnet-catsdogs",
                                               precise_bn=False)).precise_bn is False


def test_a_run_with_precise_bn_ships_the_recomputed_statistics(binary_folders, tmp_path):
    from catsdogs.data.datasets import load_labelled_folder

    run = catsdogs.train(catsdogs.TrainConfig(
        data=str(binary_folders), preset="fast-cifar10", epochs=1, batch_size=8,
        precise_bn=True, run_dir=str(tmp_path / "run")))
    assert run.metrics["precise_bn_layers"] > 0
    assert json.loads((run.dir / "config.json").read_text())["precise_bn"] is True
    shipped = keras.saving.load_model(run.dir / "model.keras", compile=False)
    _, train = load_labelled_folder(binary_folders / "train", (32, 32))
    expected = keras.saving.load_model(run.dir / "model.keras", compile=False)
    recompute_statistics(expected, train.pixels, 8)  # 3 equal batches: the mean is exact
    norms = layers_of(shipped, keras.layers.BatchNormalization)
    for shipped_layer, expected_layer in zip(norms, layers_of(expected,
                                                              keras.layers.BatchNormalization)):
        np.testing.assert_allclose(shipped_layer.moving_mean.numpy(),
                                   expected_layer.moving_mean.numpy(), rtol=1e-3, atol=1e-3)


def test_a_run_without_it_keeps_the_statistics_training_left(binary_folders, tmp_path):
    run = catsdogs.train(catsdogs.TrainConfig(
        data=str(binary_folders), preset="fast-cifar10", epochs=1, batch_size=8,
        precise_bn=False, run_dir=str(tmp_path / "run")))
    assert run.metrics["precise_bn_layers"] == 0
