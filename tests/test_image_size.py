"""`train --image-size`: any preset trained and saved at another side, resumed at it, and a
side its layers cannot take refused in one line before anything is decoded."""

import pytest

import catsdogs
from catsdogs import config as cfg
from catsdogs.commands.train import main
from catsdogs.models.presets import get_preset

from conftest import TWO_CLASSES, killed_then_resumed, one_error_line, write_class_images


@pytest.fixture(scope="module")
def pets(tmp_path_factory):
    return write_class_images(tmp_path_factory.mktemp("size") / "pets", TWO_CLASSES, 12,
                              size=(48, 48), seed=5)


def test_a_run_at_another_size_trains_saves_and_resumes_at_it(pets, tmp_path, monkeypatch):
    config = cfg.TrainConfig(data=str(pets), preset="seed-cifar10", epochs=2, batch_size=8,
                             image_size=40, run_dir=str(tmp_path / "r"))
    run, _ = killed_then_resumed(config, monkeypatch)
    assert cfg.read_run_config(run.dir / "config.json").image_size == 40
    classifier = catsdogs.load(run.dir)
    assert tuple(classifier.image_size) == (40, 40) and run.metrics["epochs_run"] == 2
    # the published preset's Dense after Flatten is sized for 32x32: this one is another model
    assert classifier.model.count_params() != get_preset("seed-cifar10").build(2).count_params()
    rows, _ = classifier.predict_folder(pets)
    assert len(rows) == 24


def test_a_pretrained_backbone_preset_builds_at_another_size():
    model = get_preset("mobilenetv3-catsdogs").at_size(96).build(2)
    assert tuple(model.input_shape[1:3]) == (96, 96)


def test_the_published_size_is_the_preset_itself():
    preset = get_preset("fast-catsdogs")
    assert preset.at_size(None) is preset and preset.at_size(96) is preset


@pytest.mark.parametrize("flags, expected", [
    (["--image-size", "8"], "bad value for --image-size"),
    # four 3x3 convolutions and poolings take 150 px to 7, and 20 px to nothing
    (["--preset", "seed-catsdogs", "--image-size", "20"], "cannot take 20x20 images"),
    # 16 px builds, but progressive resizing's first epoch trains at 8 px
    (["--preset", "resnet-catsdogs", "--image-size", "16", "--epochs", "8"],
     "cannot take 8x8 images"),
])
def test_a_side_that_cannot_work_is_one_line_before_any_work(flags, expected, pets, tmp_path,
                                                             capsys):
    run_dir = tmp_path / "never"
    line = one_error_line(capsys, main, ["--data", str(pets), "--epochs", "1", *flags,
                                         "--run-dir", str(run_dir)])
    assert expected in line
    assert not run_dir.exists()


def test_cifar10s_downloaded_arrays_keep_their_size(capsys):
    line = one_error_line(capsys, main, ["--dataset", "cifar10", "--image-size", "64"])
    assert "CIFAR-10 images are 32x32 arrays" in line and "download cifar10" in line


def test_folds_continued_with_another_size_name_the_flag_to_repeat():
    from catsdogs.training.kfold import _as_flag

    assert _as_flag("image_size", None) == "without --image-size"
    assert _as_flag("image_size", 128) == "--image-size 128"


def test_a_config_of_before_the_setting_is_upgraded_to_the_presets_size():
    assert cfg.upgrade({"preset": "seed-cifar10"})["image_size"] is None
