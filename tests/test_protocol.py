"""Accuracy that holds on new photos: the epoch is chosen on a split carved from the
training images, and the data's own validation split is a test split, used once."""

import json

import pytest

import catsdogs
from catsdogs.config import TrainConfig
from catsdogs.data.datasets import load_image_data
from catsdogs.errors import CatsDogsError

from conftest import TWO_CLASSES, Interrupt, crash_when_epoch_starts, write_class_images


@pytest.fixture
def folders(protocol_folders):
    return protocol_folders


def test_the_selection_split_is_disjoint_stratified_and_stable(folders):
    config = TrainConfig(data=str(folders), preset="seed-cifar10", selection_split=0.25, seed=3,
                         keep_epoch="last")  # nothing set aside from the selection split
    data = load_image_data(config, (32, 32))
    again = load_image_data(config, (32, 32))
    other_seed = load_image_data(TrainConfig(data=str(folders), preset="seed-cifar10",
                                             selection_split=0.25, seed=4, keep_epoch="last"), (32, 32))
    assert not set(data.train.paths) & set(data.val.paths)  # disjoint from training
    assert sorted(data.train.paths + data.val.paths) == sorted(
        str(p) for p in (folders / "train").rglob("*.*"))  # carved from the training images
    assert data.val.counts(data.class_names) == {"cats": 5, "dogs": 5}  # 25 % of each class
    assert data.val.paths == again.val.paths  # stable for a seed
    assert data.val.paths != other_seed.val.paths
    assert sorted(data.test.paths) == sorted(str(p) for p in (folders / "validation").rglob("*.*"))
    assert "selection split" in data.sources["validation"]


@pytest.mark.usefixtures("calibration_at_test_scale")
def test_metrics_record_what_chose_the_epoch_final_and_test_accuracy(folders, tmp_path):
    run = catsdogs.train(TrainConfig(data=str(folders), preset="seed-cifar10", epochs=2,
                                     batch_size=8, selection_split=0.2,
                                     run_dir=str(tmp_path / "run")))
    metrics = json.loads((run.dir / "metrics.json").read_text())
    assert "selection split: 20%" in metrics["best_epoch_chosen_on"]
    assert metrics["final_val_accuracy"] == pytest.approx(float(run.history[-1]["val_accuracy"]))
    assert metrics["test_images"] == 12 and 0 <= metrics["test_accuracy"] <= 1
    # the 8 selection photos: 4 choose the epoch, 4 are set aside to fit the temperature
    assert metrics["train_images"] == 32 and metrics["validation_images"] == 4
    assert metrics["calibration_images"] == 4
    classifier = catsdogs.load(run.dir)
    report = catsdogs.evaluate(classifier, folders / "validation", out=tmp_path / "eval")
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"])  # the same measurement


def test_without_a_selection_split_the_validation_split_chooses(folders, tmp_path):
    run = catsdogs.train(TrainConfig(data=str(folders), preset="seed-cifar10", epochs=1,
                                     batch_size=8, run_dir=str(tmp_path / "run")))
    assert run.metrics["best_epoch_chosen_on"].startswith(str(folders / "validation"))
    assert "test_accuracy" not in run.metrics


def test_a_selection_split_too_small_for_a_class_is_one_clear_error(tmp_path):
    write_class_images(tmp_path / "d" / "train", TWO_CLASSES, 1, size=(32, 32))
    write_class_images(tmp_path / "d" / "val", TWO_CLASSES, 1, size=(32, 32))
    with pytest.raises(CatsDogsError, match="--selection-split"):
        load_image_data(TrainConfig(data=str(tmp_path / "d"), selection_split=0.5), (32, 32))


@pytest.mark.usefixtures("calibration_at_test_scale")
def test_photos_added_before_a_resume_or_a_calibration_are_refused_not_dealt_anew(
        folders, tmp_path, monkeypatch):
    """The seeded cut deals a changed folder out anew: the epoch would be chosen, and the
    temperature fitted, on photos the model trained on."""
    import types

    from catsdogs.inference.calibrate import held_out_photos

    config = TrainConfig(data=str(folders), preset="seed-cifar10", epochs=2, batch_size=8,
                         selection_split=0.25, run_dir=str(tmp_path / "run"))
    crash_when_epoch_starts(monkeypatch, 1)
    with pytest.raises(Interrupt):
        catsdogs.train(config)
    roles = json.loads((tmp_path / "run" / "photos.json").read_text())
    assert roles["fitted_the_temperature"]["count"] > 0
    records = {name: (tmp_path / "run" / name).read_bytes() for name in ("dataset.json", "skipped.csv")}
    write_class_images(tmp_path / "more", {"cats": TWO_CLASSES["cats"]}, 1, size=(32, 32))
    (tmp_path / "more" / "cats" / "cats_0.png").rename(folders / "train" / "cats" / "added.png")
    with pytest.raises(CatsDogsError, match="photos differ from those the run started with"):
        catsdogs.resume(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "photos.json").read_text()) == roles  # kept
    assert {name: (tmp_path / "run" / name).read_bytes() for name in records} == records  # and these
    model = types.SimpleNamespace(image_size=(32, 32), class_names=list(TWO_CLASSES),
                                  source=tmp_path / "run")
    with pytest.raises(CatsDogsError, match="fitted_the_temperature photos are new or gone"):
        held_out_photos(tmp_path / "run", model)
