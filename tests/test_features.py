"""Stage one on features computed once: the same training as running the frozen body each epoch."""

import keras
import numpy as np
import pytest

import catsdogs
from catsdogs import runs
from catsdogs.commands.train import main
from catsdogs.config import AugmentConfig, TrainConfig
from catsdogs.data.images import decode_many
from catsdogs.models import presets
from catsdogs.training import features

from conftest import Interrupt, crash_when_epoch_starts, one_error_line

TINY = "tiny-backbone"


def tiny_backbone_body(x):
    """A keras.applications-like body: a nested model with BatchNorm, globally pooled."""
    from keras import layers

    inputs = keras.Input(x.shape[1:])
    y = layers.Conv2D(6, 3, strides=2)(inputs)
    y = layers.ReLU()(layers.BatchNormalization()(y))
    backbone = keras.Model(inputs, layers.GlobalAveragePooling2D()(y), name="tiny_backbone")
    return backbone(x)


@pytest.fixture
def tiny_start(monkeypatch, tmp_path):
    """The tiny preset registered, and a weights file of it (as a pretrained body would be)."""
    preset = presets.Preset(TINY, "a tiny nested backbone for tests", (32, 32), tiny_backbone_body,
                            presets.Recipe(epochs=3, batch_size=64, learning_rate=0.05))
    monkeypatch.setitem(presets.PRESETS, TINY, preset)
    keras.utils.set_random_seed(7)
    path = tmp_path / "tiny.weights.h5"
    preset.build(2).save_weights(path)
    return path


def tiny_config(folder, run_dir, weights, **overrides):
    """Batches larger than the 24 training images: each epoch is one batch of every image on
    either path, in whatever order, so their losses must agree."""
    return TrainConfig(data=str(folder), preset=TINY, weights=str(weights), run_dir=str(run_dir),
                       keep_epoch="last", **overrides)


def count_head_fits(monkeypatch):
    """The models whose stage one trained on features (a list that grows with each)."""
    split = features.split_at_features
    models = []
    monkeypatch.setattr(features, "split_at_features",
                        lambda model: models.append(model) or split(model))
    return models


def numbers(rows, keys=("loss", "accuracy", "val_loss", "val_accuracy")):
    return np.array([[float(row[key]) for key in keys] for row in rows])


def validation_pixels(folder):
    paths = sorted((folder / "validation").rglob("*.*"))
    return decode_many(paths, (32, 32), progress=False).pixels.astype(np.float32)


def test_features_once_train_the_head_as_the_slow_path(binary_folders, tiny_start, tmp_path,
                                                       monkeypatch):
    head_fits = count_head_fits(monkeypatch)
    fast = catsdogs.train(tiny_config(binary_folders, tmp_path / "fast", tiny_start))
    slow = catsdogs.train(tiny_config(binary_folders, tmp_path / "slow", tiny_start,
                                      cache_features=False))
    assert len(head_fits) == 1  # the first run only, by default (nothing augments)
    assert list(fast.history[0]) == list(slow.history[0])  # the same history.csv columns
    assert len(fast.history) == 3
    np.testing.assert_allclose(numbers(fast.history), numbers(slow.history), rtol=2e-4, atol=1e-5)
    assert numbers(fast.history)[2, 0] < numbers(fast.history)[0, 0]  # the head did learn

    # the saved full model is the one whose head trained: it predicts as the slow path's, and
    # scores on the validation photos what the head scored on their features
    pixels = validation_pixels(binary_folders)
    saved = [keras.saving.load_model(run.model_path, compile=False) for run in (fast, slow)]
    np.testing.assert_allclose(saved[0].predict(pixels, verbose=0),
                               saved[1].predict(pixels, verbose=0), rtol=1e-4, atol=1e-6)
    labels = np.repeat([0.0, 1.0], 6)  # validation/cats, then validation/dogs, sorted
    loss = keras.losses.BinaryCrossentropy()(labels[:, None], saved[0].predict(pixels, verbose=0))
    assert float(loss) == pytest.approx(float(fast.history[-1]["val_loss"]), rel=1e-4)


def test_a_kill_in_stage_one_resumes_on_features_and_goes_on_to_stage_two(
        binary_folders, tiny_start, tmp_path, monkeypatch):
    head_fits = count_head_fits(monkeypatch)
    whole = catsdogs.train(tiny_config(binary_folders, tmp_path / "whole", tiny_start,
                                       epochs=2, fine_tune_epochs=1))
    started = crash_when_epoch_starts(monkeypatch, 1)
    run_dir = tmp_path / "killed"
    with pytest.raises(Interrupt):
        catsdogs.train(tiny_config(binary_folders, run_dir, tiny_start, epochs=2,
                                   fine_tune_epochs=1))
    resumed = catsdogs.resume(run_dir)
    assert started == [0, 1, 1, 2]
    rows = runs.read_csv(run_dir / runs.HISTORY_FILE)
    assert [int(float(row["stage"])) for row in rows] == [1, 1, 2]
    np.testing.assert_allclose(numbers(rows), numbers(whole.history), rtol=2e-4, atol=1e-5)
    assert resumed.metrics["epochs_run"] == 3 and len(head_fits) == 3


def test_dropout_before_the_head_stays_in_the_head_model():
    model = presets.get_preset("fast-catsdogs").build(2)  # ... GlobalMaxPooling -> Dropout -> head
    extractor, head = features.split_at_features(model)
    assert [type(layer).__name__ for layer in head.layers] == ["InputLayer", "Dropout", "Dense"]
    assert extractor.output_shape == (None, 256)
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32)
    np.testing.assert_allclose(head(extractor(pixels)), model(pixels), rtol=1e-5, atol=1e-6)
    assert head.layers[-1] is model.layers[-1]  # one head layer, trained once


@pytest.mark.parametrize("overrides, expected", [
    ({"weights": "run"}, True),  # a frozen start, no augmentation
    ({"fine_tune_epochs": 2}, True),  # from scratch, frozen for the first stage
    ({"weights": "run", "cache_features": False}, False),
    ({"weights": "run", "augment": AugmentConfig(horizontal_flip=True)}, False),
    ({"weights": "run", "mixup": 0.2}, False),
    ({"weights": "run", "augment": AugmentConfig(horizontal_flip=True), "cache_features": True},
     True),
    ({"weights": "run", "strategy": "multiworker"}, False),
    ({}, False),  # nothing frozen
])
def test_features_are_used_when_nothing_changes_the_images(overrides, expected):
    config = TrainConfig(preset="seed-cifar10", **{"augment": AugmentConfig(), **overrides})
    assert features.used(config) is expected


@pytest.mark.parametrize("pixels_in, asked, expected", [
    ("disk", None, False), ("none", None, False), ("disk", True, True), ("ram", None, True)])
def test_features_stay_off_by_default_where_the_pixels_did_not_stay_in_memory(
        pixels_in, asked, expected):
    config = TrainConfig(preset="seed-cifar10", weights="run", augment=AugmentConfig(),
                         cache_features=asked)
    assert features.used(config, pixels_in) is expected


@pytest.mark.parametrize("extra, words", [
    ([], "needs a frozen body"),
    (["--fine-tune-epochs", "1", "--ema", "0.99"], "--ema"),
    (["--fine-tune-epochs", "1", "--progressive-start", "0.5"], "--progressive-start"),
])
def test_cache_features_where_it_cannot_work_is_one_line(binary_folders, capsys, extra, words):
    line = one_error_line(capsys, main, ["--data", str(binary_folders), "--preset",
                                         "fast-cifar10", "--cache-features", *extra])
    assert "--cache-features" in line and words in line


def test_cache_features_with_local_workers_is_one_line_before_any_worker_starts(
        binary_folders, capsys, monkeypatch):
    from catsdogs.training import distribute

    monkeypatch.setattr(distribute, "run_local_workers",
                        lambda argv, count: pytest.fail("the workers started"))
    line = one_error_line(capsys, main, ["--data", str(binary_folders), "--preset",
                                         "fast-cifar10", "--fine-tune-epochs", "1",
                                         "--cache-features", "--local-workers", "2"])
    assert "--cache-features with --local-workers" in line and "--strategy" not in line

