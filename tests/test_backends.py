"""Training where Keras does not run on TensorFlow (backends.py): the host pipeline takes the
tf.data pipeline's steps, and a run trains, chooses, tests and calibrates without tf.data,
tf.distribute, TensorBoard or a SavedModel.

The whole-run test stands TensorFlow's absence in by the one switch every part reads
(backends.tensorflow_trains), under this suite's TensorFlow backend; the same run was checked
by hand on the JAX backend, with and without TensorFlow installed (bench/RESULTS.md names it).
"""

import json

import keras
import numpy as np
import pytest

import catsdogs
from catsdogs import backends
from catsdogs.backends import HostValue
from catsdogs.config import AugmentConfig, TrainConfig
from catsdogs.data.augment import AlternatingFlips, build_augmenter
from catsdogs.data.datasets import Split
from catsdogs.data.host_pipeline import SplitBatches


@pytest.fixture
def without_tensorflow(monkeypatch):
    monkeypatch.setattr(backends, "tensorflow_trains", lambda: False)


def numbered_split(count, side=8):
    """Images whose every pixel holds the image's own number, so a batch names its images."""
    pixels = np.broadcast_to(np.arange(count, dtype=np.uint8)[:, None, None, None],
                             (count, side, side, 3)).copy()
    return Split(pixels, np.arange(count) % 2, [])


def epoch_of(batches):
    images, labels = zip(*(batches[i] for i in range(len(batches))))
    batches.on_epoch_end()
    return np.concatenate([np.asarray(x)[:, 0, 0, 0] for x in images]).astype(int), labels


def test_every_epoch_is_a_full_permutation_reshuffled_by_the_seed():
    batches = SplitBatches(numbered_split(10), 4, shuffle_seed=3)
    first, _ = epoch_of(batches)
    second, _ = epoch_of(batches)
    assert len(batches) == 3
    assert sorted(first) == sorted(second) == list(range(10))
    assert list(first) != list(second)
    again, _ = epoch_of(SplitBatches(numbered_split(10), 4, shuffle_seed=3))
    assert list(again) == list(first)  # the seed decides the order
    unshuffled, _ = epoch_of(SplitBatches(numbered_split(10), 4))
    assert list(unshuffled) == list(range(10))  # validation batches keep the split's order


def test_labels_one_hot_and_float_pixels():
    images, labels = SplitBatches(numbered_split(6), 6, one_hot=2)[0]
    assert np.asarray(images).dtype == np.float32
    assert np.array_equal(labels, np.eye(2, dtype=np.float32)[np.arange(6) % 2])


def test_batches_take_the_size_the_value_holds():
    size = HostValue((4, 6))
    batches = SplitBatches(numbered_split(5), 5, resize_to=size)
    assert tuple(np.asarray(batches[0][0]).shape[1:3]) == (4, 6)
    size.assign((8, 8))
    assert tuple(np.asarray(batches[0][0]).shape[1:3]) == (8, 8)


def test_alternating_flips_swap_sides_each_epoch(without_tensorflow):
    split = numbered_split(12)
    split.store[:, :, 0, :] = 255  # a white left column: a flipped image has it on the right
    flips = AlternatingFlips(len(split), seed=0)
    assert isinstance(flips.epoch, HostValue)
    batches = SplitBatches(split, 12, flips=flips)
    left_white = [np.asarray(batches[0][0])[:, 0, 0, 0] == 255]
    flips.epoch.assign(1)
    left_white.append(np.asarray(batches[0][0])[:, 0, 0, 0] == 255)
    assert np.array_equal(left_white[0], ~flips.coins)  # the coin flips it in the first epoch
    assert np.array_equal(left_white[1], ~left_white[0])  # and every image swaps the next


def test_the_augmenter_runs_on_whole_batches():
    augmenter = build_augmenter(AugmentConfig(rotation_range=20, horizontal_flip=True), seed=1)
    noise = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    split = Split(noise, np.zeros(8, np.int64), [])
    plain = np.asarray(SplitBatches(split, 8)[0][0])
    varied = np.asarray(SplitBatches(split, 8, augmenter=augmenter)[0][0])
    assert varied.shape == plain.shape and not np.allclose(varied, plain)


def test_a_run_trains_chooses_tests_and_calibrates_without_tensorflow(
        protocol_folders, tmp_path, without_tensorflow, capsys):
    # (no progressive resizing here: under this suite's TensorFlow backend, Keras feeds a
    # PyDataset through tf.data with the first batch's shape fixed; on JAX it is not)
    config = TrainConfig(data=str(protocol_folders), preset="fast-cifar10", epochs=2,
                         batch_size=8, selection_split=0.3,
                         keep_epoch="best", mixup=0.2, cutmix=0.5,
                         augment=AugmentConfig(horizontal_flip=True, alternate_flips=True,
                                               rotation_range=10),
                         run_dir=str(tmp_path / "run"))
    run = catsdogs.train(config)
    assert len(run.history) == 2
    assert (run.dir / "model.keras").exists()
    assert not (run.dir / "saved_model").exists() and not (run.dir / "logs").exists()
    metrics = json.loads((run.dir / "metrics.json").read_text())
    assert metrics["test_images"] == 12 and 0 <= metrics["test_accuracy"] <= 1
    out = capsys.readouterr()
    assert "TensorBoard logs: none" in out.err and "saved_model/: not written" in out.err
    model = keras.saving.load_model(run.dir / "model.keras")
    assert model.input_shape == (None, 32, 32, 3)


def test_several_devices_need_tensorflow_in_one_line(without_tensorflow):
    from catsdogs.errors import CatsDogsError
    from catsdogs.training.distribute import OneDevice, make_placement

    assert isinstance(make_placement("auto").strategy, OneDevice)
    with pytest.raises(CatsDogsError, match="--strategy mirrored needs tf.distribute"):
        make_placement("mirrored")


COMPILED_AGAINST_EAGER = """
import numpy as np
from catsdogs.config import AugmentConfig
from catsdogs.data.augment import build_augmenter
from catsdogs.data.host_pipeline import compiled_augmenter
config = AugmentConfig(rotation_range=15, width_shift_range=0.1, zoom_range=(0.85, 1.15),
                       horizontal_flip=True, brightness_range=(0.8, 1.2))
eager, compiled = build_augmenter(config, seed=1), compiled_augmenter(build_augmenter(config, seed=1))
images = np.random.default_rng(0).integers(0, 256, (8, 40, 40, 3)).astype(np.float32)
outputs = [(np.asarray(eager(images, training=True)), np.asarray(compiled(images))) for _ in range(3)]
print(max(float(abs(a - b).max()) for a, b in outputs), float(abs(outputs[1][1] - outputs[2][1]).max()))
"""


def test_on_jax_the_compiled_augmenter_draws_what_the_layers_draw():
    """On JAX the augmenter runs as one jitted call with its random state passed through: batch
    after batch the same images as the layers called op by op (to float rounding), and a new
    draw each batch. Needs JAX installed (not among this project's requirements: the test
    runs where a developer has it, and is skipped elsewhere)."""
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("jax") is None:
        pytest.skip("JAX is not installed")
    from conftest import REPO

    done = subprocess.run([sys.executable, "-c", COMPILED_AGAINST_EAGER], capture_output=True,
                          text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "KERAS_BACKEND": "jax"})
    assert done.returncode == 0, done.stderr[-3000:]
    difference, between_batches = map(float, done.stdout.split())
    assert difference < 0.01 and between_batches > 1
