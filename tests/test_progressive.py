"""Progressive resizing: smaller training images first, full size for everything users see."""

import json

import keras
import numpy as np
import pytest

import catsdogs
from catsdogs.config import TrainConfig
from catsdogs.data.datasets import Split
from catsdogs.data.tf_pipeline import make_dataset
from catsdogs.training.progressive import side_for_epoch
from catsdogs.commands.train import main

from conftest import Interrupt, crash_when_epoch_starts


@pytest.mark.parametrize("epochs", [1, 2, 7, 50])
def test_sides_grow_from_the_start_fraction_to_full_size(epochs):
    sides = [side_for_epoch(e, epochs, 0.57, 112) for e in range(epochs)]
    assert sides[0] == (64 if epochs > 1 else 112)  # 0.57 x 112, to a multiple of 8
    assert sides == sorted(sides) and all(s % 8 == 0 for s in sides)
    assert sides[-1] == 112
    assert all(s == 112 for s in sides[round(0.75 * epochs):])  # the last quarter at full size


def test_start_of_one_never_resizes():
    assert {side_for_epoch(e, 10, 1.0, 96) for e in range(10)} == {96}


def test_pipeline_batches_take_the_size_the_variable_holds():
    import tensorflow as tf

    split = Split(np.zeros((10, 32, 32, 3), np.uint8), np.zeros(10, np.int32), [])
    size = tf.Variable([16, 24])
    dataset = make_dataset(split, 4, resize_to=size)
    assert {tuple(x.shape[1:3]) for x, _ in dataset} == {(16, 24)}
    size.assign([32, 32])
    assert {tuple(x.shape[1:3]) for x, _ in dataset} == {(32, 32)}


def test_the_size_schedule_spans_both_stages_of_a_two_stage_run(binary_folders, tmp_path):
    run = catsdogs.train(TrainConfig(data=str(binary_folders), preset="fast-cifar10", epochs=1,
                                     fine_tune_epochs=3, batch_size=8, progressive_start=0.5,
                                     run_dir=str(tmp_path / "run")))
    assert [int(float(r["stage"])) for r in run.history] == [1, 2, 2, 2]
    assert [int(float(r["image_side"])) for r in run.history] == [16, 24, 24, 32]


def test_a_fixed_size_preset_refuses_progressive_resizing_in_one_line(binary_folders, capsys):
    code = main(["--data", str(binary_folders), "--preset", "seed-cifar10",
                 "--progressive-start", "0.5"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--progressive-start" in err[0] and "seed-cifar10" in err[0]


@pytest.mark.parametrize("written_before_progressive_resizing", [False, True])
def test_training_grows_the_images_keeps_the_full_size_model_and_resumes_the_schedule(
        binary_folders, tmp_path, monkeypatch, written_before_progressive_resizing):
    from catsdogs import runs

    crash_when_epoch_starts(monkeypatch, 2)
    run_dir = tmp_path / "run"
    config = TrainConfig(data=str(binary_folders), preset="fast-cifar10", epochs=4, batch_size=8,
                         progressive_start=0.5 if not written_before_progressive_resizing else 1.0,
                         run_dir=str(run_dir))
    with pytest.raises(Interrupt):
        catsdogs.train(config)
    if written_before_progressive_resizing:  # config.json without the key: resumes at full size
        saved = json.loads((run_dir / "config.json").read_text())
        del saved["progressive_start"], saved["steps_per_execution"]  # both came later
        (run_dir / "config.json").write_text(json.dumps(saved))
    run = catsdogs.resume(run_dir)
    sides = [int(float(r.get("image_side") or 32)) for r in runs.read_csv(run_dir / "history.csv")]
    assert sides == ([32, 32, 32, 32] if written_before_progressive_resizing else [16, 24, 24, 32])
    assert [int(r["epoch"]) for r in run.history] == [1, 2, 3, 4]
    assert keras.saving.load_model(run_dir / "model.keras").input_shape == (None, 32, 32, 3)
    if not written_before_progressive_resizing:
        assert json.loads((run_dir / "config.json").read_text())["progressive_start"] == 0.5
