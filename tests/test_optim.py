"""airbench's optimizer pieces as catsdogs options: the triangular schedule, SGD with 64x steps
for shift-only BatchNorm biases, and lookahead."""

import json

import keras
import numpy as np
import pytest

import catsdogs
from catsdogs.models import optim
from catsdogs.training import callbacks
from catsdogs.config import TrainConfig

from conftest import Interrupt, crash_when_epoch_starts


def test_triangular_schedule_rises_to_the_peak_at_23_percent_then_falls_to_7_percent():
    schedule = optim.TriangularSchedule(peak=2.0, total_steps=100)
    rates = {step: float(schedule(step)) for step in (0, 10, 23, 50, 100, 150)}
    assert rates[0] == pytest.approx(0.4)  # 0.2 x peak
    assert rates[10] == pytest.approx(0.4 + 1.6 * 10 / 23, rel=1e-5)
    assert rates[23] == pytest.approx(2.0)
    assert rates[50] == pytest.approx(2.0 - 2.0 * 0.93 * 27 / 77, rel=1e-5)
    assert rates[100] == pytest.approx(0.14) and rates[150] == pytest.approx(0.14)
    again = optim.TriangularSchedule.from_config(schedule.get_config())
    assert float(again(50)) == pytest.approx(rates[50])


def test_linear_schedule_falls_from_the_peak_to_zero():
    schedule = optim.make_schedule("linear", 2.0, 100)
    assert [float(schedule(step)) for step in (0, 50, 100, 150)] == pytest.approx([2, 1, 0, 0])


def two_norm_model():
    """A BatchNorm without a scale (airbench's) and one with it."""
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2D(3, 1, use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(scale=False, name="shift_only")(x)
    x = keras.layers.BatchNormalization(name="full")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(x))


def one_step(optimizer):
    keras.utils.set_random_seed(0)
    model = two_norm_model()
    before = [np.array(w) for w in model.trainable_weights]
    x = np.random.default_rng(0).normal(size=(8, 4, 4, 2)).astype(np.float32)
    model.compile(optimizer=optimizer, loss="mse")
    model.train_on_batch(x, np.arange(8, dtype=np.float32))
    return model, {w.path: np.array(w) - b for w, b in zip(model.trainable_weights, before)}


def test_sgd_steps_the_biases_of_shift_only_batchnorm_64x_further():
    assert optim.norm_biases_without_scale(two_norm_model()) == ["shift_only/beta"]
    _, plain = one_step(keras.optimizers.SGD(0.01))
    model, scaled = one_step(optim.NormBiasSGD(0.01, scaled_paths=["shift_only/beta"]))
    assert np.abs(plain["shift_only/beta"]).max() > 0
    np.testing.assert_allclose(scaled["shift_only/beta"], 64 * plain["shift_only/beta"], rtol=1e-4)
    for path in plain.keys() - {"shift_only/beta"}:
        np.testing.assert_allclose(scaled[path], plain[path], rtol=1e-4, atol=1e-8)
    config = model.optimizer.get_config()
    assert config["scaled_paths"] == ["shift_only/beta"] and config["scale"] == 64.0


def test_lookahead_averages_every_5_steps_and_ends_each_epoch_on_the_average():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(optimizer=keras.optimizers.SGD(), loss="mse")
    model.optimizer.build(model.trainable_variables)
    kernel = model.weights[0]
    lookahead = callbacks.Lookahead(steps_per_epoch=12, epochs=1, every=5, decay=0.5)
    lookahead.set_model(model)

    def step(iterations, batch, value):
        model.optimizer.iterations.assign(iterations)
        kernel.assign(np.full((2, 1), value, np.float32))
        lookahead.on_train_batch_end(batch)
        return float(np.array(kernel)[0, 0])

    assert step(1, 0, 1.0) == 1.0  # the average starts here; no update before 5 steps
    weight = 0.5 * (5 / 12) ** 3
    assert step(5, 4, 3.0) == pytest.approx(weight * 1.0 + (1 - weight) * 3.0)
    average = weight * 1.0 + (1 - weight) * 3.0
    assert step(7, 6, 9.0) == 9.0  # between updates the weights move freely
    weight = 0.5 * (10 / 12) ** 3
    average = weight * average + (1 - weight) * 5.0
    assert step(10, 9, 5.0) == pytest.approx(average)
    assert step(12, 11, 7.0) == pytest.approx(average)  # the epoch's last step takes the average


def test_orthogonalize_keeps_the_singular_vectors_and_evens_out_the_singular_values():
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    v, _ = np.linalg.qr(rng.normal(size=(15, 6)))
    matrix = (u * np.array([9.0, 5.0, 3.0, 2.0, 1.5, 1.0])) @ v.T  # singular values 1..9
    out = np.asarray(optim.orthogonalize(keras.ops.convert_to_tensor(matrix, "float32"), steps=5))
    inner = u.T @ out @ v  # diagonal if the singular vectors are kept
    assert np.abs(inner - np.diag(np.diag(inner))).max() < 1e-3
    assert 0.5 < np.diag(inner).min() and np.diag(inner).max() < 1.5  # 1 to 9 became ~1
    tall = np.asarray(optim.orthogonalize(keras.ops.convert_to_tensor(matrix.T, "float32"), steps=5))
    np.testing.assert_allclose(tall, out.T, atol=1e-5)


def test_muon_steps_normalised_kernels_along_the_orthogonalised_gradient_and_the_rest_as_sgd():
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = two_norm_model()
    x = np.random.default_rng(0).normal(size=(8, 4, 4, 2)).astype(np.float32)
    y = np.arange(8, dtype=np.float32)[:, None]
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y, model(x, training=True))
    kernel = model.get_layer("conv").kernel
    gradient = tape.gradient(loss, kernel.value).numpy().reshape(-1, 3)
    before = kernel.numpy()
    assert optim.convolution_kernels(model) == ["conv/kernel"]

    model, muon = one_step(optim.MuonSGD(0.01, muon_paths=["conv/kernel"],
                                         scaled_paths=["shift_only/beta"], momentum=0.85))
    _, sgd = one_step(optim.NormBiasSGD(0.01, scaled_paths=["shift_only/beta"], momentum=0.85))
    normalised = before * np.sqrt(3) / np.linalg.norm(before)
    step = np.asarray(optim.orthogonalize(keras.ops.convert_to_tensor(gradient)))  # scale-free
    expected = normalised - 0.01 * optim.MUON_RATE_RATIO * step.reshape(before.shape)
    np.testing.assert_allclose(before + muon["conv/kernel"], expected, rtol=1e-4, atol=1e-6)
    for path in sgd.keys() - {"conv/kernel"}:
        np.testing.assert_allclose(muon[path], sgd[path], rtol=1e-4, atol=1e-8)
    assert model.optimizer.get_config()["muon_paths"] == ["conv/kernel"]


@pytest.mark.parametrize("optimizer, schedule", [("sgd", "triangular"), ("muon", "linear")])
def test_sgd_and_muon_with_lookahead_train_resume_and_save_a_model_that_loads(
        binary_folders, tmp_path, monkeypatch, optimizer, schedule):
    started = crash_when_epoch_starts(monkeypatch, 1)
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupt):
        catsdogs.train(TrainConfig(
            data=str(binary_folders), preset="seed-cifar10", epochs=3, batch_size=8,
            optimizer=optimizer, learning_rate=0.05, schedule=schedule, lookahead=True,
            weight_decay=0.01, run_dir=str(run_dir)))
    run = catsdogs.resume(run_dir)
    assert started == [0, 1, 1, 2] and [int(r["epoch"]) for r in run.history] == [1, 2, 3]
    config = json.loads((run.dir / "config.json").read_text())
    assert (config["optimizer"], config["schedule"], config["lookahead"]) == (optimizer, schedule, True)
    model = keras.saving.load_model(run.model_path)
    assert isinstance(model.optimizer, optim.NormBiasSGD) and model.optimizer.nesterov
    assert isinstance(model.optimizer, optim.MuonSGD) == (optimizer == "muon")
    assert model.optimizer.get_config()["learning_rate"]["class_name"] == {
        "triangular": "TriangularSchedule", "linear": "PolynomialDecay"}[schedule]
    # predict/evaluate/export load it too: the optimizer (catsdogs.optim) is not part of the model
    classifier = catsdogs.load(run.dir)
    assert classifier.probabilities(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 2)
