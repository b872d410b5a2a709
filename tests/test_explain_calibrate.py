"""See why and how sure: Grad-CAM, temperature scaling, "unknown", per-image results."""

import csv
import json

import keras
import numpy as np
import pytest
from PIL import Image

import catsdogs
from catsdogs.inference import calibrate
from catsdogs.inference.explain import find_feature_layer, gradcam
from catsdogs.inference.runtimes import as_class_probabilities

from conftest import TWO_CLASSES, write_class_images


def corner_model():
    """A network whose answer is known: class "bright" is the brightness of its one feature
    map, so the evidence for it lies where the image is bright."""
    inputs = keras.Input((32, 32, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(1, 1, use_bias=False, name="brightness")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, out)
    model.get_layer("brightness").set_weights([np.full((1, 1, 3, 1), 1 / 3, np.float32)])
    model.layers[-1].set_weights([np.array([[20.0]], np.float32), np.array([-1.0], np.float32)])
    return model


def square_in_corner(corner):
    image = np.zeros((32, 32, 3), np.float32)
    rows = slice(0, 8) if corner[0] == "top" else slice(24, 32)
    cols = slice(0, 8) if corner[1] == "left" else slice(24, 32)
    image[rows, cols] = 255
    return image


def test_gradcam_peaks_where_the_evidence_is():
    corners = [("top", "left"), ("bottom", "right"), ("top", "right")]
    pixels = np.stack([square_in_corner(c) for c in corners])
    heatmaps, explained = gradcam(corner_model(), pixels)
    assert list(explained) == [1, 1, 1]  # the "bright" class, predicted for every image
    for heatmap, (vertical, horizontal) in zip(heatmaps, corners):
        row, col = np.unravel_index(heatmap.argmax(), heatmap.shape)
        assert (row < 16) == (vertical == "top") and (col < 16) == (horizontal == "left")
        assert heatmap.max() == pytest.approx(1.0) and heatmap.min() >= 0


@pytest.mark.parametrize("calibrated", [False, True])
def test_a_saturated_sigmoid_still_shows_where_the_evidence_is(calibrated):
    """At probability 1.0 (in float32) the sigmoid's gradient is 0: Grad-CAM takes the logit,
    so the heatmap of the surest photo is not blank; a calibrated model's too (its head is an
    Activation after the logits)."""
    model = corner_model()
    model.layers[-1].set_weights([np.array([[5000.0]], np.float32), np.array([-1.0], np.float32)])
    if calibrated:
        model = calibrate.with_temperature(model, 0.5)
    pixels = square_in_corner(("bottom", "right"))[None]
    assert float(model(pixels)[0, 0]) == 1.0  # saturated
    heatmaps, explained = gradcam(model, pixels)
    row, col = np.unravel_index(heatmaps[0].argmax(), heatmaps[0].shape)
    assert list(explained) == [1] and heatmaps[0].max() == pytest.approx(1.0)
    assert row >= 16 and col >= 16


def test_a_sequential_model_around_a_nested_network_explains_through_every_layer():
    """A Sequential lists no InputLayer: its first layer (here the pixels' scaling) is part of
    the chain the heatmap is computed through, as in the same layers built functionally."""
    keras.utils.set_random_seed(1)
    inner_in = keras.Input((16, 16, 3))
    maps = keras.layers.Conv2D(4, 3, activation="relu", bias_initializer="ones")(inner_in)
    body = keras.Model(inner_in, keras.layers.GlobalAveragePooling2D()(maps), name="body")
    scale, head = keras.layers.Rescaling(1 / 255), keras.layers.Dense(1, activation="sigmoid")
    sequential = keras.Sequential([keras.Input((16, 16, 3)), scale, body, head])
    inputs = keras.Input((16, 16, 3))
    functional = keras.Model(inputs, head(body(scale(inputs))))
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(gradcam(sequential, pixels)[0], gradcam(functional, pixels)[0],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("preset", ["seed-catsdogs", "fast-cifar10", "air-cifar10",
                                    "mobilenetv3-catsdogs"])
def test_every_kind_of_preset_has_a_map_to_explain(preset):
    from catsdogs.models.presets import get_preset

    model = get_preset(preset).build(2)
    backbone, layer = find_feature_layer(model)
    assert len(layer.output.shape) == 4 and (backbone is not None) == preset.startswith("mobile")
    side = model.input_shape[1]
    heatmaps, _ = gradcam(model, np.random.default_rng(0).uniform(0, 255, (2, side, side, 3)))
    assert heatmaps.shape[0] == 2 and np.isfinite(heatmaps).all()


def test_temperature_scaling_recovers_the_temperature_that_made_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20000, 3))
    true = np.exp(logits / 2.5) / np.exp(logits / 2.5).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(3, p=p) for p in true])
    overconfident = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    temperature = calibrate.fit_temperature(overconfident, labels)
    assert temperature == pytest.approx(2.5, rel=0.10)
    before = calibrate.expected_calibration_error(overconfident, labels)
    after = calibrate.expected_calibration_error(
        calibrate.apply_temperature(overconfident, temperature), labels)
    assert after < before / 3 and after < 0.02


def test_temperature_keeps_the_winner_and_a_sigmoid_matches_its_two_column_form():
    p = np.array([[0.9], [0.2], [0.6]])
    two = np.concatenate([1 - p, p], axis=1)
    one = calibrate.apply_temperature(p, 2.0)
    np.testing.assert_allclose(as_class_probabilities(one),
                               calibrate.apply_temperature(two, 2.0), atol=1e-12)
    assert ((one > 0.5) == (p > 0.5)).all() and abs(one[0, 0] - 0.5) < abs(p[0, 0] - 0.5)


@pytest.fixture
def calibrated_run(tmp_path):
    """A run-like folder: a 3-class model, its class names, and a temperature of 2.5."""
    from catsdogs.models.presets import get_preset

    run = tmp_path / "run"
    run.mkdir()
    keras.utils.set_random_seed(0)  # a fixed model: the tests' guards hold on every run
    model = get_preset("seed-cifar10").build(3)
    model.layers[-1].set_weights([w * 40 for w in model.layers[-1].get_weights()])  # confident
    model.save(run / "model.keras")
    (run / "class_names.json").write_text(json.dumps(["a", "b", "c"]))
    (run / "calibration.json").write_text(json.dumps({"temperature": 2.5}))
    return run


def test_every_export_applies_the_temperature_as_the_keras_model_does(calibrated_run, tmp_path):
    pixels = np.random.default_rng(1).uniform(0, 255, (16, 32, 32, 3)).astype(np.float32)
    classifier = catsdogs.load(calibrated_run)
    expected = classifier.probabilities(pixels)
    raw = classifier.probabilities(pixels, calibrated=False)
    assert np.abs(expected - raw).max() > 0.05  # the temperature changes them: the test can fail
    written = catsdogs.export(classifier, ["saved_model", "keras", "tflite", "onnx"],
                              out=tmp_path / "exports")
    assert not (tmp_path / "exports" / "calibration.json").exists()  # inside the models instead
    for name, path in written.items():
        got = catsdogs.load(path).probabilities(pixels)
        np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=name)


def test_int8_export_keeps_a_calibrated_sigmoid_models_answers(tmp_path):
    """Regression: the temperature once went in as sigmoid(log(p / (1 - p)) / T); int8 could
    not hold that division's range and the int8 model answered one class for every photo."""
    inputs = keras.Input((32, 32, 3), name="pixels")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(2, 1, activation="relu")(x)  # red minus green, green minus red
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(1, activation="sigmoid", name="probability")(x)
    model = keras.Model(inputs, out)
    model.layers[2].set_weights([np.array([[1, -1], [-1, 1], [0, 0]], np.float32)[None, None],
                                 np.zeros(2, np.float32)])
    model.layers[-1].set_weights([np.array([[-20.0], [20.0]], np.float32), np.zeros(1, np.float32)])
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    (run / "class_names.json").write_text(json.dumps(["red", "green"]))
    (run / "calibration.json").write_text(json.dumps({"temperature": 0.5}))  # sharpening
    photos = write_class_images(tmp_path / "photos", {"red": (200, 40, 40), "green": (40, 200, 40)},
                                20, size=(32, 32))
    written = catsdogs.export(run, ["keras", "tflite-int8"], out=tmp_path / "exports",
                              calibration=photos)
    rows = {name: catsdogs.load(path).predict_folder(photos)[0] for name, path in written.items()}
    keras_says = [row.predicted for row in rows["keras"]]
    assert set(keras_says) == {"red", "green"}  # both answers, so a collapse is seen
    assert [row.predicted for row in rows["tflite-int8"]] == keras_says
    np.testing.assert_allclose([row.probability for row in rows["tflite-int8"]],
                               [row.probability for row in rows["keras"]], atol=0.02)


def test_min_confidence_labels_the_unsure_unknown(calibrated_run, tmp_path, capsys):
    from catsdogs.commands.predict import main

    photos = write_class_images(tmp_path / "photos", {"x": (90, 90, 90), "y": (10, 200, 30)}, 6,
                                size=(32, 32))
    classifier = catsdogs.load(calibrated_run)
    rows, _ = classifier.predict_folder(photos)
    middle = float(np.median([r.probability for r in rows]))
    unsure, _ = classifier.predict_folder(photos, min_confidence=middle)
    for plain, row in zip(rows, unsure):
        assert row.predicted == ("unknown" if plain.probability < middle else plain.predicted)
    assert any(r.predicted == "unknown" for r in unsure) and any(r.predicted != "unknown" for r in unsure)
    assert main([str(calibrated_run), str(photos), "--min-confidence", "0.999999",
                 "--sort-into", str(tmp_path / "sorted")]) == 0
    assert len(list((tmp_path / "sorted" / "unknown").iterdir())) == 12


def test_predict_explain_writes_an_overlay_per_image(calibrated_run, tmp_path):
    photos = write_class_images(tmp_path / "photos", {"x": (90, 90, 90)}, 3, size=(32, 32))
    classifier = catsdogs.load(calibrated_run)
    rows, _ = classifier.predict_folder(photos, explain_into=tmp_path / "why")
    written = sorted(p.name for p in (tmp_path / "why").iterdir())
    assert written == sorted(f"{p.stem}-{r.predicted}.jpg" for p, r in
                             zip(map(__import__("pathlib").Path, [r.path for r in rows]), rows))
    with Image.open(tmp_path / "why" / written[0]) as image:
        assert min(image.size) >= 224  # a 32x32 image is enlarged so the heatmap can be seen


def test_predictions_csv_rows_equal_a_direct_model_call(tmp_path):
    from catsdogs.data.images import decode_image
    from catsdogs.models.presets import get_preset

    run = tmp_path / "run"
    run.mkdir()
    model = get_preset("seed-cifar10").build(2)
    model.save(run / "model.keras")
    (run / "class_names.json").write_text(json.dumps(["cats", "dogs"]))
    data = write_class_images(tmp_path / "val", TWO_CLASSES, 5, size=(32, 32))
    ood = write_class_images(tmp_path / "other", {"cars": (250, 250, 0)}, 4, size=(32, 32))
    report = catsdogs.evaluate(run, data, out=tmp_path / "report", ood_dir=ood,
                               min_confidence=0.6)
    with open(tmp_path / "report" / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 10 and [float(r["loss"]) for r in rows] == sorted(
        (float(r["loss"]) for r in rows), reverse=True)
    for row in rows:
        p_dog = float(model(decode_image(row["path"], (32, 32))[None].astype(np.float32))[0, 0])
        p_true = p_dog if row["true"] == "dogs" else 1 - p_dog
        assert float(row["loss"]) == pytest.approx(-np.log(p_true), abs=1e-4)
        assert row["predicted"] == ("dogs" if p_dog >= 0.5 else "cats")
    assert report["worst"][0]["path"] == rows[0]["path"]
    assert 0 <= report["ood"]["auroc"] <= 1 and report["ood"]["images"] == 4
    assert set(report["calibration"]) >= {"ece_before", "ece_after", "nll_before", "nll_after"}
    assert (tmp_path / "report" / "plots" / "reliability.png").is_file()


@pytest.mark.usefixtures("calibration_at_test_scale")
def test_training_calibrates_and_calibrate_adds_it_to_an_old_run(binary_folders, tmp_path, capsys,
                                                                  monkeypatch):
    from catsdogs.commands.calibrate import main

    run = catsdogs.train(catsdogs.TrainConfig(data=str(binary_folders), preset="seed-cifar10",
                                              epochs=1, batch_size=8, run_dir=str(tmp_path / "run")))
    stored = json.loads((run.dir / "calibration.json").read_text())
    assert stored["temperature"] > 0 and stored["fitted_on"].startswith("calibration")
    assert run.metrics["temperature"] == stored["temperature"]
    assert "fewer than the 100" in stored["decision"]  # 6 photos: T stays 1
    (run.dir / "calibration.json").unlink()  # a run from before calibration
    assert catsdogs.load(run.dir).temperature == 1.0
    assert main([str(run.dir)]) == 0
    out = capsys.readouterr().out
    assert "temperature" in out and "flip T = 1.0000" in out and "shift T = 1.0000" in out
    rewritten = json.loads((run.dir / "calibration.json").read_text())  # written again, whole
    for key in ("temperature", "images", "decision", "fitted_on", "ece_before", "ece_after"):
        same = pytest.approx(stored[key]) if isinstance(stored[key], float) else stored[key]
        assert rewritten[key] == same, key
    assert catsdogs.load(run.dir).temperature == pytest.approx(stored["temperature"], rel=1e-3)
    assert set(stored["tta"]) == {"flip", "shift"}  # too few photos: each view set keeps T = 1
    assert all("fewer than the 100" in views["decision"] for views in stored["tta"].values())
    assert len(rewritten["fitted_files"]) == rewritten["images"]  # which photos fitted it
    # on photos of the user's: calibration.json lists them (as real paths, whatever the
    # folder evaluate later runs from), for evaluate's warning
    monkeypatch.chdir(binary_folders)
    assert main([str(run.dir), "validation"]) == 0
    refitted = json.loads((run.dir / "calibration.json").read_text())
    assert len(refitted["fitted_files"]) == refitted["images"] > 0  # those the model did not use
    assert set(refitted["fitted_files"]) <= {str(p) for p in (binary_folders / "validation").rglob("*.*")}
