"""Using a trained model: predict on folders full of awkward files, evaluate against hand sums."""

import csv
import hashlib
import json
import shutil
import math
import os
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

import catsdogs
from catsdogs.inference.classifier import Classifier, load
from catsdogs.errors import CatsDogsError
from catsdogs.inference.evaluate import compute_metrics, evaluate
from catsdogs.inference.saved_model import write_saved_model
from catsdogs.data.images import decode_image
from catsdogs.models.presets import get_preset
from catsdogs.commands.evaluate import main as evaluate_main
from catsdogs.commands.predict import main as predict_main
from catsdogs.inference.predict import predict_paths

from conftest import TWO_CLASSES, bomb_png_bytes, one_error_line, write_class_images


@pytest.fixture
def model_dir(tmp_path):
    """An (untrained, seeded) seed-cifar10 model for two classes, saved as a run folder would."""
    keras.utils.set_random_seed(0)
    folder = tmp_path / "model"
    folder.mkdir()
    model = get_preset("seed-cifar10").build(2)
    model.save(folder / "model.keras")
    (folder / "class_names.json").write_text(json.dumps(["cats", "dogs"]))
    return folder


def awkward_folder(root):
    """One file per awkward case a real folder holds (empty, truncated, text, CMYK, 16-bit,
    palette, animated, EXIF-rotated, AppleDouble, a non-UTF-8 name, nested); returns the names
    expected as rows and as skips."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    photo.save(root / "good.jpg")
    (root / "empty.jpg").write_bytes(b"")
    (root / "truncated.jpg").write_bytes((root / "good.jpg").read_bytes()[:300])
    (root / "text.jpg").write_text("hello, not a picture")
    photo.convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 65535, (20, 20), dtype=np.uint16)).save(root / "deep16.png")
    palette = Image.new("P", (20, 20))
    palette.putpalette([255, 0, 0, 0, 255, 0] * 128)
    palette.info["transparency"] = 0
    palette.save(root / "palette.png", transparency=0)
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    exif = photo.getexif()
    exif[0x0112] = 8
    photo.save(root / "rotated.jpg", exif=exif)
    (root / "._good.jpg").write_bytes(b"\0\5\x16\7 AppleDouble")
    with open(os.path.join(os.fsencode(root), b"caf\xe9.png"), "wb") as handle:
        photo.save(handle, format="PNG")
    (root / "nested" / "deeper").mkdir(parents=True)
    photo.save(root / "nested" / "deeper" / "inner.bmp")
    rows = {"good.jpg", "cmyk.jpg", "deep16.png", "palette.png", "animated.gif", "rotated.jpg",
            "caf\udce9.png", "inner.bmp"}
    skips = {"empty.jpg", "truncated.jpg", "text.jpg"}
    return rows, skips


def file_hashes(root):
    return {path: hashlib.sha256(open(path, "rb").read()).hexdigest()
            for path in (os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)}


def test_every_awkward_file_gives_one_row_or_one_reason_and_stays_unchanged(model_dir, tmp_path):
    expected_rows, expected_skips = awkward_folder(tmp_path / "photos")
    before = file_hashes(tmp_path / "photos")
    rows, skipped = load(model_dir).predict_folder(tmp_path / "photos")
    assert {os.path.basename(r.path) for r in rows} == expected_rows
    assert {os.path.basename(p) for p, _ in skipped} == expected_skips
    assert len(rows) == len(expected_rows) and all(reason for _, reason in skipped)
    assert file_hashes(tmp_path / "photos") == before


def test_rows_equal_a_direct_model_call(model_dir, binary_folders):
    classifier = load(model_dir)
    rows, _ = predict_paths(classifier, [binary_folders / "validation"], batch_size=5)
    pixels = np.stack([decode_image(r.path, (32, 32)) for r in rows]).astype(np.float32)
    direct = keras.saving.load_model(model_dir / "model.keras")(pixels).numpy()[:, 0]
    for row, p_dog in zip(rows, direct):
        assert row.predicted == ("dogs" if p_dog >= 0.5 else "cats")
        assert row.probability == pytest.approx(p_dog if p_dog >= 0.5 else 1 - p_dog, abs=1e-5)


def test_saved_model_predicts_like_the_keras_file(model_dir, binary_folders):
    write_saved_model(keras.saving.load_model(model_dir / "model.keras"), model_dir / "saved_model",
                      ["cats", "dogs"])
    from_keras, _ = load(model_dir).predict_folder(binary_folders / "validation")
    from_saved, _ = load(model_dir / "saved_model").predict_folder(binary_folders / "validation")
    assert [r.predicted for r in from_saved] == [r.predicted for r in from_keras]
    np.testing.assert_allclose([r.probability for r in from_saved],
                               [r.probability for r in from_keras], atol=1e-5)


def test_cli_writes_csv_json_and_copies_with_sort_into(model_dir, binary_folders, tmp_path, capsys):
    photos = binary_folders / "validation"
    before = file_hashes(photos)
    code = predict_main([str(model_dir), str(photos), "--output", str(tmp_path / "p.csv"),
                         "--sort-into", str(tmp_path / "sorted")])
    assert code == 0
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "path,class,probability" and len(lines) == 13
    copied = list((tmp_path / "sorted").rglob("*.*"))
    assert len(copied) == 12 and {p.parent.name for p in copied} <= {"cats", "dogs"}
    assert file_hashes(photos) == before  # copied, not moved
    assert predict_main([str(model_dir), str(photos), "--output", str(tmp_path / "p.json")]) == 0
    assert len(json.loads((tmp_path / "p.json").read_text())["predictions"]) == 12


def test_predict_command_takes_the_tta_mode(model_dir, binary_folders, tmp_path, capsys):
    """--tta shift reaches the model: its probabilities are the six views' average."""
    photos = binary_folders / "validation"
    assert predict_main([str(model_dir), str(photos), "--tta", "shift",
                         "--output", str(tmp_path / "p.json")]) == 0
    rows = json.loads((tmp_path / "p.json").read_text())["predictions"]
    plain, _ = predict_paths(load(model_dir), [photos])
    shifted, _ = predict_paths(load(model_dir), [photos], tta="shift")
    assert [r["probability"] for r in rows] == pytest.approx([r.probability for r in shifted])
    assert [r.probability for r in shifted] != pytest.approx([r.probability for r in plain])


def test_top_k_for_multiclass_models(tmp_path, three_class_folder):
    model = get_preset("seed-cifar10").build(3)
    model.save(tmp_path / "m.keras")
    (tmp_path / "class_names.json").write_text(json.dumps(["apples", "grapes", "limes"]))
    rows, _ = load(tmp_path / "m.keras").predict_folder(three_class_folder, top_k=3)
    assert all(len(r.top_k) == 3 and sum(p for _, p in r.top_k) == pytest.approx(1, abs=1e-4)
               for r in rows)
    assert all(r.top_k[0] == (r.predicted, r.probability) for r in rows)


def test_no_classifiable_file_is_one_line_exit_1(model_dir, tmp_path, capsys):
    """A run that failed (nothing could be classified) exits 1, not 2 (a usage error)."""
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_text("text")
    assert predict_main([str(model_dir), str(tmp_path / "bad")]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines[-1].startswith("error: no image could be classified")
    assert sum(line.startswith("error:") for line in lines) == 1, lines
    assert any(line.startswith("skipped ") and "x.jpg" in line for line in lines), lines
    assert captured.out == ""


def test_folder_of_only_a_bomb_is_one_line_and_exit_1(model_dir, tmp_path, capsys):
    (tmp_path / "bombs").mkdir()
    (tmp_path / "bombs" / "huge.png").write_bytes(bomb_png_bytes())
    assert predict_main([str(model_dir), str(tmp_path / "bombs")]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()  # the skipped file's reason, then the one error
    assert lines[-1].startswith("error: no image could be classified")
    assert sum(line.startswith("error:") for line in lines) == 1, lines
    assert "huge.png" in captured.err and "decompression bomb" in captured.err
    assert captured.out == ""  # stdout holds rows only, and there are none


@pytest.mark.parametrize("flags, flag", [
    (["--batch-size", "0"], "--batch-size"), (["--batch-size", "-3"], "--batch-size"),
    (["--top-k", "0"], "--top-k"), (["--top-k", "-2"], "--top-k")])
def test_predict_rejects_a_count_below_one_before_anything_loads(flags, flag, capsys):
    """No model or image is needed: the flag is refused first, in train's words."""
    line = one_error_line(capsys, predict_main, ["nowhere.keras", "no_photos/", *flags])
    assert line == (f"error: bad value for {flag}: expected an integer >= 1, "
                    f"received {int(flags[1])}")


@pytest.mark.parametrize("size", ["0", "-3"])
def test_evaluate_rejects_a_batch_size_below_one_before_anything_loads(size, capsys):
    line = one_error_line(capsys, evaluate_main,
                          ["nowhere.keras", "no_data/", "--batch-size", size])
    assert line == (f"error: bad value for --batch-size: expected an integer >= 1, "
                    f"received {int(size)}")


def test_evaluate_names_a_missing_ood_dir_before_the_model_loads(tmp_path, capsys):
    data = write_class_images(tmp_path / "data", {"cats": (200, 120, 60), "dogs": (60, 120, 200)}, 1)
    line = one_error_line(capsys, evaluate_main, ["nowhere.keras", str(tmp_path / "data"),
                                                  "--ood-dir", str(tmp_path / "no_ood")])
    assert "no_ood" in line and "--ood-dir" in line

@pytest.mark.parametrize("name", ["x.txt", "rows", "p.csv.bak"])
def test_predict_rejects_an_unknown_output_type_before_anything_loads(name, tmp_path, capsys):
    line = one_error_line(capsys, predict_main, ["nowhere.keras", "no_photos/",
                                                 "--output", str(tmp_path / name)])
    assert "--output" in line and ".csv or .json" in line and name in line
    assert not (tmp_path / name).exists()


def test_predict_stdout_holds_the_rows_only(model_dir, tmp_path, capsys):
    """`predict RUN photos/ > rows.txt`: skipped files and the summary go to stderr."""
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "photos" / "good.jpg")
    (tmp_path / "photos" / "README.md").write_text("# not a picture")
    assert predict_main([str(model_dir), str(tmp_path / "photos")]) == 0
    captured = capsys.readouterr()
    rows = captured.out.strip().splitlines()
    assert len(rows) == 1 and rows[0].startswith(str(tmp_path / "photos" / "good.jpg")), rows
    assert rows[0].split()[1] in ("cats", "dogs")
    assert "README.md" in captured.err and "skipped" in captured.err
    assert "1 classified, 1 skipped" in captured.err


def test_top_k_2_lists_both_classes_of_a_binary_model(model_dir, tmp_path, capsys):
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "good.jpg")
    assert predict_main([str(model_dir), str(tmp_path / "good.jpg"), "--top-k", "2"]) == 0
    row = capsys.readouterr().out.strip()
    assert "cats 0." in row and "dogs 0." in row, row


def test_threshold_on_a_multiclass_model_is_one_line_not_ignored(tmp_path, capsys):
    get_preset("seed-cifar10").build(3).save(tmp_path / "m.keras")
    (tmp_path / "class_names.json").write_text(json.dumps(["apples", "grapes", "limes"]))
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "good.jpg")
    line = one_error_line(capsys, predict_main, [str(tmp_path / "m.keras"),
                                                 str(tmp_path / "good.jpg"), "--threshold", "0.7"])
    assert "--threshold is for two-class models" in line and "3 classes" in line


def test_threshold_moves_a_binary_models_choice(model_dir, tmp_path, capsys):
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "good.jpg")
    chosen = set()
    for threshold in ("0.001", "0.999"):
        assert predict_main([str(model_dir), str(tmp_path / "good.jpg"),
                             "--threshold", threshold]) == 0
        chosen.add(capsys.readouterr().out.split()[1])
    assert chosen == {"cats", "dogs"}


def test_lambda_model_is_refused_with_one_line(tmp_path, capsys):
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(1, activation="sigmoid")(
        keras.layers.Flatten()(keras.layers.Lambda(lambda x: x * 2)(inputs)))
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    (tmp_path / "class_names.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(CatsDogsError, match="Lambda"):
        load(tmp_path / "lambda.keras")
    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "img" / "a.png")
    assert predict_main([str(tmp_path / "lambda.keras"), str(tmp_path / "img")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Lambda" in err[0]


def test_class_names_that_do_not_fit_the_model_are_an_error(model_dir):
    (model_dir / "class_names.json").write_text(json.dumps(["a", "b", "c"]))
    with pytest.raises(CatsDogsError, match="3 class names do not fit a model with 1 outputs"):
        load(model_dir)


def brightness_classifier():
    """A stand-in model: P(dogs) = mean pixel / 255, so every number can be worked by hand."""
    return Classifier(lambda x: x.mean(axis=(1, 2, 3))[:, None] / 255.0, ["cats", "dogs"],
                      (8, 8), source=None)


def test_evaluate_matches_a_hand_computation(tmp_path):
    levels = {"cats": [50, 100, 200], "dogs": [150, 220, 30]}
    for name, values in levels.items():
        (tmp_path / "set" / name).mkdir(parents=True)
        for value in values:
            Image.new("RGB", (8, 8), (value,) * 3).save(tmp_path / "set" / name / f"{value}.png")
    metrics = evaluate(brightness_classifier(), tmp_path / "set", out=tmp_path / "report")

    p = {v: v / 255 for v in levels["cats"] + levels["dogs"]}
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    assert metrics["confusion_matrix"] == [[2, 1], [1, 2]]
    assert metrics["per_class"]["cats"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert metrics["roc_auc"] == pytest.approx(5 / 9)  # dog/cat pairs where the dog scores higher
    hand_loss = -(sum(math.log(1 - p[v]) for v in levels["cats"])
                  + sum(math.log(p[v]) for v in levels["dogs"])) / 6
    assert metrics["loss"] == pytest.approx(hand_loss, rel=1e-6)
    for name in ("metrics.json", "confusion_matrix.json", "plots/confusion_matrix.png",
                 "plots/most_wrong.png"):
        assert (tmp_path / "report" / name).is_file(), name


def test_flip_tta_averages_the_two_views():
    clf = Classifier(lambda x: x[:, 0, 0, :1] / 255.0, ["l", "r"], (2, 2), source=None)
    pixels = np.zeros((1, 2, 2, 3), np.float32)
    pixels[0, :, 0] = 255  # left column white: plain view says 1.0, flipped view 0.0
    from catsdogs.inference.tta import predict_arrays
    np.testing.assert_allclose(predict_arrays(clf, pixels, tta=True), [[0.5, 0.5]])


def test_shift_tta_views_move_by_whole_pixels_with_edges_repeated():
    from catsdogs.inference.tta import tta_views
    batch = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    views = tta_views(batch, "shift")
    assert [w for w, _ in views] == [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    assert sum(w for w, _ in views) == 1
    plain, mirrored = views[0][1], views[1][1]
    np.testing.assert_array_equal(mirrored, batch[:, :, ::-1])
    down_right, up_left = views[2][1], views[3][1]
    np.testing.assert_array_equal(down_right[:, 1:, 1:], plain[:, :-1, :-1])  # content moved +1, +1
    np.testing.assert_array_equal(down_right[:, 0, 1:], plain[:, 0, :-1])  # top row repeated
    np.testing.assert_array_equal(up_left[:, :-1, :-1], plain[:, 1:, 1:])
    np.testing.assert_array_equal(up_left[:, -1, -1], plain[:, -1, -1])  # corner repeated
    np.testing.assert_array_equal(views[4][1][:, 1:, 1:], mirrored[:, :-1, :-1])
    assert all(view.shape == batch.shape for _, view in views)


def test_shift_tta_averages_the_six_views_with_airbench_weights():
    clf = Classifier(lambda x: x[:, 0, 0, :1] / 255.0, ["l", "r"], (4, 4), source=None)
    pixels = np.zeros((1, 4, 4, 3), np.float32)
    pixels[0, 0, 0] = 255  # only the top-left pixel: plain and up-left views see it
    from catsdogs.inference.tta import predict_arrays
    # plain 1.0 (weight 1/4), mirrored 0, down-right 1.0 (edge repeated, 1/8), up-left 0,
    # mirrored shifts 0: 3/8 for the second class
    np.testing.assert_allclose(predict_arrays(clf, pixels, tta="shift"), [[5 / 8, 3 / 8]])
    with pytest.raises(CatsDogsError, match="unknown test-time augmentation"):
        predict_arrays(clf, pixels, tta="rotate")


def test_evaluate_runs_on_a_run_folder_by_default_into_eval_dir(model_dir, binary_folders):
    metrics = catsdogs.evaluate(model_dir, binary_folders / "validation")
    assert metrics["images"] == 12
    assert (model_dir / "eval-validation" / "metrics.json").is_file()


def test_evaluate_and_calibrate_say_when_the_photos_trained_the_model(model_dir, binary_folders,
                                                                      caplog, monkeypatch):
    """photos.json names the photos that trained the model and chose its epoch: measured
    again, figures read high, and evaluate says so; calibrate fits on the others (the same
    files written through another path count too)."""
    from catsdogs.inference.calibrate import held_out_photos

    validation = binary_folders / "validation"
    monkeypatch.chdir(binary_folders)
    cats = [str(Path("validation/cats") / p.name) for p in sorted((validation / "cats").iterdir())]
    dogs = [str(p) for p in sorted((validation / "dogs").iterdir())][:2]
    (model_dir / "photos.json").write_text(json.dumps({
        "trained_on": {"files": cats}, "chose_the_model": {"files": dogs},
        "tested_once": {"files": []}}))
    metrics = catsdogs.evaluate(model_dir, validation)
    assert metrics["photos_the_model_used"] == {"trained_on": 6, "chose_the_model": 2}
    assert "6 trained it and 2 chose its epoch" in caplog.text
    caplog.clear()
    # what `catsdogs calibrate` fits on: the other photos only, and it says so
    split, labels, _ = held_out_photos(model_dir, load(model_dir), validation)
    assert "of these 12 photos, 8 trained the model or chose its epoch" in caplog.text
    assert len(split) == len(labels) == 4 and not set(map(str, split.paths)) & {
        str(validation / "cats" / Path(c).name) for c in cats}
    caplog.clear()
    assert catsdogs.evaluate(model_dir, binary_folders / "train")["photos_the_model_used"] == {}
    assert "read high" not in caplog.text
    # photos.json is input like any other: entries of other types are skipped, a file that
    # cannot be read is said to leave the question open
    (model_dir / "photos.json").write_text(json.dumps({
        "trained_on": {"files": [1, None, ["x"], *cats]}, "chose_the_model": {"files": "x"}}))
    assert catsdogs.evaluate(model_dir, validation)["photos_the_model_used"] == {"trained_on": 6}
    (model_dir / "photos.json").write_text('{"trained_on": ')
    caplog.clear()
    assert catsdogs.evaluate(model_dir, validation)["photos_the_model_used"] == {}
    assert "cannot be read, so which photos the model used is not known" in caplog.text
    # photos that fitted the temperature: the calibration error after it reads low on them
    (model_dir / "photos.json").write_text(json.dumps({
        "fitted_the_temperature": {"files": [str(p) for p in (validation / "dogs").iterdir()]}}))
    caplog.clear()
    assert "photos_that_fitted_the_temperature" not in catsdogs.evaluate(model_dir, validation)
    assert "reads low" not in caplog.text  # T = 1 was kept (no calibration.json): none fitted
    (model_dir / "calibration.json").write_text(json.dumps({"temperature": 1.5}))
    metrics = catsdogs.evaluate(model_dir, validation)
    assert metrics["photos_that_fitted_the_temperature"] == 6 and "reads low" in caplog.text
    # refitted on other photos (calibrate RUN DATA): calibration.json's list is the one that counts
    (model_dir / "calibration.json").write_text(json.dumps({
        "temperature": 1.5, "fitted_files": [str(validation / "cats" / Path(c).name) for c in cats[:3]]}))
    assert catsdogs.evaluate(model_dir, validation)["photos_that_fitted_the_temperature"] == 3
    assert "3 fitted the model's temperature (its run's calibration.json)" in caplog.text
    (model_dir / "calibration.json").unlink()
    # calibrate on the test split: allowed, and said
    (model_dir / "photos.json").write_text(json.dumps({"tested_once": {"files": cats}}))
    caplog.clear()
    held_out_photos(model_dir, load(model_dir), validation)
    assert "6 are the model's test split" in caplog.text


def test_evaluate_on_a_folder_of_splits_names_its_validation_folder(model_dir, binary_folders,
                                                                    capsys):
    from catsdogs.commands.evaluate import main as evaluate_main

    line = one_error_line(capsys, evaluate_main, [str(model_dir), str(binary_folders)])
    assert "['train', 'validation'] are not classes" in line
    assert f"pass its validation/ folder, {binary_folders / 'validation'}" in line


def test_evaluate_measures_a_folder_of_one_class(model_dir, binary_folders, tmp_path, capsys):
    """A test folder of cats only: its accuracy is the cats' recall; no ROC AUC."""
    from catsdogs.commands.evaluate import main as evaluate_main

    shutil.copytree(binary_folders / "validation" / "cats", tmp_path / "only" / "cats")
    out = tmp_path / "report"
    assert evaluate_main([str(model_dir), str(tmp_path / "only"), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 6 and metrics.get("roc_auc") is None
    assert metrics["accuracy"] == metrics["per_class"]["cats"]["recall"]
    assert metrics["per_class"]["dogs"]["support"] == 0
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    line = one_error_line(capsys, evaluate_main, [str(model_dir), str(tmp_path / "empty")])
    assert "need at least one class sub-folder, found none" in line


def test_evaluate_command_takes_the_tta_mode(model_dir, binary_folders, tmp_path, capsys):
    from catsdogs.commands.evaluate import main as evaluate_main
    assert evaluate_main([str(model_dir), str(binary_folders / "validation"), "--tta", "shift",
                          "--out", str(tmp_path / "report")]) == 0
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["tta"] == "shift"
    # the views reach the model: each image's probability is the six views' average
    shifted, _ = predict_paths(load(model_dir), [binary_folders / "validation"], tta="shift")
    plain, _ = predict_paths(load(model_dir), [binary_folders / "validation"])
    with open(tmp_path / "report" / "predictions.csv", newline="") as handle:
        reported = {Path(row["path"]).name: float(row["probability"])
                    for row in csv.DictReader(handle)}
    assert reported == pytest.approx({Path(r.path).name: r.probability for r in shifted},
                                     abs=1e-5)
    assert reported != pytest.approx({Path(r.path).name: r.probability for r in plain}, abs=1e-5)
    assert evaluate(model_dir, binary_folders / "validation", out=tmp_path / "r2", tta=True)["tta"] == "flip"
    with pytest.raises(CatsDogsError, match="unknown test-time augmentation"):  # before any reading
        evaluate(model_dir, tmp_path / "no such folder", tta="rotate")


def test_multiclass_metrics_by_hand():
    labels = np.array([0, 1, 2, 2])
    probabilities = np.array([[.8, .1, .1], [.2, .5, .3], [.1, .6, .3], [.2, .2, .6]])
    metrics = compute_metrics(labels, probabilities, ["a", "b", "c"])
    assert metrics["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    assert metrics["per_class"]["b"]["precision"] == pytest.approx(0.5)
    assert metrics["per_class"]["c"]["recall"] == pytest.approx(0.5)
    assert "roc_auc" not in metrics


def test_tta_applies_the_temperature_fitted_for_its_views_else_the_plain_one(tmp_path):
    from catsdogs.inference.calibrate import apply_temperature, rejection_threshold
    from catsdogs.inference.classifier import read_calibration
    from catsdogs.inference.tta import predict_arrays

    clf = Classifier(lambda x: x[:, 0, 0, :1] / 255.0 * 0.8 + 0.1, ["l", "r"], (2, 2), source=None,
                     calibration={"temperature": 2.0, "min_confidence_auto": {"threshold": 0.7},
                                  "tta": {"flip": {"temperature": 0.5,
                                                   "min_confidence_auto": {"threshold": 0.6}}}})
    pixels = np.zeros((1, 2, 2, 3), np.float32)
    pixels[0, :, 0] = 255  # plain view 0.9 for the second class, the mirror 0.1
    for tta, temperature in ((None, 2.0), ("flip", 0.5), ("shift", 2.0)):  # shift: none of its own
        raw = predict_arrays(clf, pixels, tta=tta, calibrated=False)
        np.testing.assert_allclose(predict_arrays(clf, pixels, tta=tta),
                                   apply_temperature(raw, temperature), rtol=1e-6)
    assert clf.temperature_for(True) == 0.5  # True: the flip, as predict_arrays reads it
    assert [rejection_threshold(clf, "auto", tta) for tta in (None, "flip", "shift")] == [0.7, 0.6, 0.7]
    (tmp_path / "model.keras").write_bytes(b"")
    for broken in ('{"temperature": 1.0, "tta": {"flip": {}}}', '[1]', '{"temperature": 1, "tta": [1]}',
                   '{"temperature": 0}', '{"temperature": -2.0}', '{"temperature": NaN}',
                   '{"temperature": 1, "tta": {"flip": {"temperature": Infinity}}}',
                   '{"temperature": 1, "min_confidence_auto": {"threshold": 1.5}}',
                   '{"temperature": 1, "min_confidence_auto": {"threshold": "high"}}',
                   # NaN or a tie in float32 graphs; a string or true that float() would take
                   '{"temperature": 1e-300}', '{"temperature": 1e30}', '{"temperature": "2"}',
                   '{"temperature": 1, "min_confidence_auto": {"threshold": "0.5"}}',
                   '{"temperature": 1, "min_confidence_auto": {"threshold": true}}',
                   '{"temperature": ' + "[" * 100_000 + "]" * 100_000 + "}"):
        (tmp_path / "calibration.json").write_text(broken)
        with pytest.raises(CatsDogsError, match="cannot read the calibration"):
            read_calibration(tmp_path / "model.keras")


def test_calibration_fits_each_set_of_views_on_their_averaged_predictions(tmp_path):
    """A model reading the left column, calibrated on its own view, where the mirrored view
    reads half its logit: the flip's average is too unsure and needs a temperature of its
    own."""
    from catsdogs.inference.calibrate import (apply_temperature, calibrate_run,
                                              checked_temperature, confidence_threshold)
    from catsdogs.inference.runtimes import keras_probabilities
    from catsdogs.inference.tta import TTA_MODES, averaged_views

    inputs = keras.Input((4, 4, 3))
    left = keras.layers.Lambda(lambda x: x[:, :, 0, 0:1])(inputs)
    logit = keras.layers.Dense(1, kernel_initializer=keras.initializers.Constant(3.0),
                               bias_initializer=keras.initializers.Constant(-6.0))(
        keras.layers.Flatten()(left))
    model = keras.Model(inputs, keras.layers.Activation("sigmoid")(logit))
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 1, (400, 4, 4, 3)).astype(np.float32)
    pixels[:, :, 3, 0] = pixels[:, :, 0, 0] / 2 + 0.25  # the mirror's logit: half the plain one
    labels = (rng.uniform(size=400) < keras_probabilities(model, pixels)[:, 1]).astype(int)  # T = 1 fits
    report = calibrate_run(tmp_path, model, pixels, labels, ["a", "b"], fitted_on="test photos")
    assert set(report["tta"]) == set(TTA_MODES)
    for mode in TTA_MODES:
        raw = averaged_views(lambda batch: keras_probabilities(model, batch), pixels, mode)
        assert report["tta"][mode]["temperature"] == pytest.approx(
            checked_temperature(raw, labels)[0], rel=1e-6)
        assert report["tta"][mode]["decision"] == checked_temperature(raw, labels)[2]
        kept = apply_temperature(raw, report["tta"][mode]["temperature"])
        assert report["tta"][mode]["min_confidence_auto"]["threshold"] == pytest.approx(
            confidence_threshold(kept))  # --min-confidence auto with --tta: its own
    assert report["tta"]["flip"]["temperature"] < 0.8 * report["temperature"]
    assert json.loads((tmp_path / "calibration.json").read_text())["tta"] == report["tta"]


def test_a_file_or_folder_that_is_no_model_is_said_so_before_its_class_names(capsys, tmp_path):
    """Arguments swapped (the photos first), or a text file: "not a model", not a missing
    class_names.json."""
    write_class_images(tmp_path / "photos", {"cats": (200, 120, 60)}, 1)
    (tmp_path / "notes.md").write_text("# notes")
    for wrong in (tmp_path / "photos", tmp_path / "notes.md"):
        line = one_error_line(capsys, predict_main, [str(wrong), str(tmp_path / "photos")])
        assert "not a model" in line and str(wrong) in line, line


def test_roc_auc_counts_tied_scores_half_as_scikit_learn_does():
    from sklearn.metrics import roc_auc_score

    from catsdogs.inference.evaluate import roc_auc

    rng = np.random.default_rng(3)
    labels, scores = rng.integers(0, 2, 300), np.round(rng.random(300), 1)  # many ties
    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert roc_auc([1, 1], [0.2, 0.9]) is None  # one class only: no curve


def test_a_file_made_at_the_output_name_while_predicting_is_left_as_it_is(
        model_dir, binary_folders, tmp_path, capsys, monkeypatch):
    """--output is checked before the work and again just before the write: a file another
    program wrote at that name meanwhile is not predict's to write over."""
    from catsdogs.commands import predict as predict_command

    output = tmp_path / "rows.csv"
    original = predict_command.predict_paths

    def while_predicting(*args, **kwargs):
        output.write_text("someone else's\n")
        return original(*args, **kwargs)

    monkeypatch.setattr(predict_command, "predict_paths", while_predicting)
    line = one_error_line(capsys, predict_command.main, [
        str(model_dir), str(binary_folders / "validation"), "--output", str(output)], alone=False)
    assert "not an earlier output of predict" in line and output.read_text() == "someone else's\n"
