"""Regularising levers: Keras' MixUp, CutMix and RandAugment on training batches, and the
optimizer's weight EMA (validated, checkpointed and saved)."""

import json

import keras
import numpy as np
import pytest

import catsdogs
from catsdogs.config import TrainConfig
from catsdogs.data.augment import build_batch_mixer
from catsdogs.data.datasets import Split
from catsdogs.data.tf_pipeline import make_dataset
from catsdogs.training.train import loss_and_accuracy

from conftest import (THREE_CLASSES, TWO_CLASSES, Interrupt, crash_when_epoch_starts,
                      one_error_line, write_class_images)


def _split(count=16, classes=2, side=16):
    """Flat images, one grey level per class from 40 to 190 (+ noise < 20)."""
    rng = np.random.default_rng(0)
    labels = np.arange(count) % classes
    levels = np.linspace(40, 190, classes).astype(np.uint8)
    pixels = np.stack([np.full((side, side, 3), levels[label], np.uint8) for label in labels])
    pixels = np.clip(pixels + rng.integers(0, 20, pixels.shape), 0, 255).astype(np.uint8)
    return Split(pixels, labels, [f"{i}.png" for i in range(count)])


def test_off_is_no_step():
    assert build_batch_mixer() is None


def test_mixup_blends_images_and_sigmoid_labels_alike():
    """One-sigmoid labels become float rows (n, 1); each mixed label is the same blend of the
    two labels as its image is of the two images."""
    split = _split()
    mixer = build_batch_mixer(mixup=0.4, seed=1)
    images, labels = next(iter(make_dataset(split, 16, mixer=mixer)))
    images, labels = images.numpy(), labels.numpy()
    assert labels.shape == (16, 1) and labels.dtype == np.float32
    assert 0 <= labels.min() and labels.max() <= 1
    assert ((labels > 0.01) & (labels < 0.99)).any()  # some labels are blends
    # the class images are flat 40 and 190 (+ noise < 20): the mean pixel tells the blend
    blend = (images.mean(axis=(1, 2, 3)) - 40 - 9.5) / 150
    np.testing.assert_allclose(blend, labels[:, 0], atol=0.05)


def test_cutmix_pastes_boxes_and_mixes_one_hot_labels_by_area():
    split = _split(classes=3)
    mixer = build_batch_mixer(cutmix=1.0, seed=2)
    images, labels = next(iter(make_dataset(split, 16, one_hot=3, mixer=mixer)))
    images, labels = images.numpy(), labels.numpy()
    np.testing.assert_allclose(labels.sum(axis=1), 1, atol=1e-5)
    mixed = labels.max(axis=1) < 0.999
    assert mixed.any()  # some images took a box from another class
    # the classes are flat 40, 115 and 190 (+ noise < 20): a pasted box spans two levels
    spread = images.max(axis=(1, 2, 3)) - images.min(axis=(1, 2, 3))
    assert (spread[mixed] > 50).all() and (spread[~mixed] < 20).all()


def test_randaugment_changes_images_not_labels():
    split = _split()
    mixer = build_batch_mixer(rand_augment=2, seed=3)
    plain_images, plain_labels = next(iter(make_dataset(split, 16)))
    images, labels = next(iter(make_dataset(split, 16, mixer=mixer)))
    np.testing.assert_array_equal(labels.numpy(), plain_labels.numpy())
    assert not np.allclose(images.numpy(), plain_images.numpy())
    assert images.numpy().min() >= 0 and images.numpy().max() <= 255


def test_mixing_trains_on_soft_labels():
    """Sparse categorical losses cannot take blended labels: mixing asks for one-hot ones."""
    loss, _, one_hot = loss_and_accuracy(3, 0.0, mixing=True)
    assert one_hot and isinstance(loss, keras.losses.CategoricalCrossentropy)
    loss, _, one_hot = loss_and_accuracy(2, 0.0, mixing=True)
    assert not one_hot and isinstance(loss, keras.losses.BinaryCrossentropy)


@pytest.fixture
def fruit(tmp_path):
    root = tmp_path / "fruit"
    write_class_images(root / "train", THREE_CLASSES, 12, size=(32, 32), seed=1)
    write_class_images(root / "validation", THREE_CLASSES, 4, size=(32, 32), seed=2)
    return root


def test_a_run_with_every_lever_trains_records_them_and_resumes(fruit, tmp_path, monkeypatch):
    config = TrainConfig(data=str(fruit), preset="seed-cifar10", epochs=2, batch_size=8,
                         mixup=0.2, cutmix=1.0, rand_augment=1, ema=0.9,
                         run_dir=str(tmp_path / "run"))
    started = crash_when_epoch_starts(monkeypatch, 1)  # crashes the first time only
    with pytest.raises(Interrupt):
        catsdogs.train(config)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["mixup"], saved["cutmix"], saved["rand_augment"], saved["ema"]) == (0.2, 1.0, 1, 0.9)
    first_epoch = (tmp_path / "run" / "history.csv").read_text().splitlines()[:2]
    run = catsdogs.resume(tmp_path / "run")
    assert started == [0, 1, 1] and len(run.history) == 2  # epoch 2 again, not from the start
    assert (tmp_path / "run" / "history.csv").read_text().splitlines()[:2] == first_epoch
    assert np.isfinite([float(row["loss"]) for row in run.history]).all()


def test_the_saved_model_holds_the_averaged_weights_that_were_validated(fruit, tmp_path):
    """With --ema, validation and model.keras both see the average: the saved model's loss on
    the validation images is the val_loss its best epoch recorded (the raw weights' differs)."""
    from catsdogs.data.datasets import load_image_data

    config = TrainConfig(data=str(fruit), preset="seed-cifar10", epochs=3, batch_size=8, ema=0.8,
                         run_dir=str(tmp_path / "run"))
    run = catsdogs.train(config)
    val = load_image_data(config, (32, 32)).val
    probabilities = catsdogs.load(run.dir).probabilities(val.pixels, calibrated=False)
    loss = -np.mean(np.log(probabilities[np.arange(len(val)), val.labels]))
    assert loss == pytest.approx(run.metrics["best_val_loss"], rel=1e-3)


@pytest.mark.parametrize("flags, expected", [
    (["--ema", "1"], "--ema"),
    (["--ema", "0.9", "--lookahead"], "--ema and --lookahead"),
    (["--mixup", "-1"], "--mixup"),
    (["--rand-augment", "9"], "--rand-augment"),
])
def test_bad_lever_settings_are_one_error_line(flags, expected, capsys, tmp_path):
    from catsdogs.commands.train import main

    write_class_images(tmp_path / "d", TWO_CLASSES, 4, size=(32, 32))
    line = one_error_line(capsys, main, ["--data", str(tmp_path / "d"), *flags])
    assert expected in line


def test_preview_titles_name_blended_labels_with_their_share():
    from catsdogs.training.train import label_titles

    names = ["cats", "dogs"]
    assert label_titles(np.array([0, 1]), names) == ["cats", "dogs"]
    assert label_titles(np.array([[1.0], [0.3]]), names) == ["dogs", "cats 0.70"]
    assert label_titles(np.array([[0, 0, 1.0], [0.2, 0.8, 0]]), ["a", "b", "c"]) == ["c", "b 0.80"]


def test_training_accuracy_on_blended_sigmoid_labels_counts_the_larger_share():
    """Keras' BinaryAccuracy never counts a label of 0.7 as right; the run's metric does."""
    _, accuracy, _ = loss_and_accuracy(2, 0.0, mixing=True)
    accuracy.update_state(np.array([[0.7], [0.2], [1.0], [0.6]]), np.array([[0.9], [0.1], [0.8], [0.3]]))
    assert float(accuracy.result()) == pytest.approx(0.75)
    accuracy.reset_state()
    accuracy.update_state(np.array([0, 1]), np.array([[0.2], [0.4]]))  # validation: 0/1 labels
    assert float(accuracy.result()) == pytest.approx(0.5)


def test_a_sigmoid_model_trained_with_mixup_saves_and_loads(binary_folders, tmp_path):
    run = catsdogs.train(TrainConfig(data=str(binary_folders), preset="seed-cifar10", epochs=1,
                                     batch_size=8, mixup=0.4, run_dir=str(tmp_path / "run")))
    classifier = catsdogs.load(run.dir)
    assert classifier.class_names == ["cats", "dogs"]
    assert 0 <= float(run.history[0]["accuracy"]) <= 1
