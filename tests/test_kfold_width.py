"""`train --folds K` (k-fold accuracy for any preset) and `train --width` (a width
sweep's models)."""

import contextlib
import io
import json

import keras
import numpy as np
import pytest

import catsdogs
from catsdogs import config as cfg
from catsdogs.commands import prune as prune_command
from catsdogs.commands.train import main
from catsdogs.models.presets import WHITENING_LAYER, get_preset
from catsdogs.training import kfold
from catsdogs.training.prune import channel_groups, scale_widths

from conftest import TWO_CLASSES, killed_then_resumed, one_error_line, write_class_images

QUICK = ["--preset", "seed-cifar10", "--epochs", "2", "--batch-size", "16"]


@pytest.fixture(scope="module")
def pets(tmp_path_factory):
    return write_class_images(tmp_path_factory.mktemp("kfold") / "pets", TWO_CLASSES, 15,
                              size=(32, 32), seed=3)


@pytest.fixture(scope="module")
def folds(pets, tmp_path_factory):
    """One 3-fold cross-validation, with what it printed."""
    folder = tmp_path_factory.mktemp("cv") / "cv"
    argv = ["--data", str(pets), *QUICK, "--folds", "3", "--run-dir", str(folder)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(argv) == 0
    return argv, folder, out.getvalue(), err.getvalue()


def test_folds_print_each_fold_and_the_mean(folds):
    _, folder, out, err = folds
    summary = [line for line in out.splitlines() if line.startswith("k-fold accuracy")]
    assert len(summary) == 1 and "(3 folds, 30 images)" in summary[0]
    assert sum(f"Fold {k}/3: accuracy" in err for k in (1, 2, 3)) == 3
    record = json.loads((folder / kfold.RECORD_FILE).read_text())
    per_fold = record["accuracy"]["per_fold"]
    assert len(per_fold) == 3 and record["accuracy"]["mean"] == pytest.approx(np.mean(per_fold))
    # the colours separate: every fold learns them on the other two
    assert min(per_fold) >= 0.8, per_fold
    settings = record["settings"]
    assert settings["preset"] == "seed-cifar10" and settings["epochs"] == 2
    assert settings["selection_split"] == cfg.SELECTION_SPLIT and "data" not in settings
    for k in (1, 2, 3):  # each fold is a normal run folder that held out its fold
        run = folder / f"fold-{k}" / "run"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["test_accuracy"] == pytest.approx(per_fold[k - 1])
        assert (run / "model.keras").is_file()


def test_folds_run_again_skip_every_finished_fold(folds, capsys):
    argv, folder, _, _ = folds
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("finished before") == 3 and "epoch 1/" not in err


def test_folds_with_other_settings_in_the_same_folder_is_one_error_line(folds, capsys):
    argv = [*folds[0], "--label-smoothing", "0.1"]
    line = one_error_line(capsys, main, argv)
    assert "other settings" in line and "label_smoothing 0.0 -> 0.1" in line


@pytest.mark.parametrize("flags, expected", [
    (["--folds", "1"], "bad value for --folds: expected an integer >= 2, received 1"),
    (["--folds", "3", "--resume", "x"], "--folds does not take --resume"),
    (["--folds", "3", "--train-dir", "a", "--val-dir", "b"], "pools the images of one --data"),
    (["--folds", "3", "--local-workers", "2"], "--folds does not take --local-workers"),
    (["--folds", "3", "--teacher", "runs/t"], "--folds does not take --teacher"),
    (["--folds", "3", "--val-split", "0.3"], "--folds does not take --val-split"),
    (["--folds", "3", "--seeds", "2"], "--folds does not take --seeds"),
])
def test_bad_folds_are_one_error_line(flags, expected, capsys):
    assert expected in one_error_line(capsys, main, flags)


# ---------------------------------------------------------------- widths


def conv_widths(model):
    return [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


@pytest.mark.parametrize("factor", [0.5, 2])
def test_scale_widths_multiplies_every_hidden_width_and_keeps_the_rest(factor):
    model = get_preset("seed-cifar10").build(10)
    scaled = scale_widths(model, factor)
    assert conv_widths(scaled) == [round(w * factor) for w in conv_widths(model)]
    hidden = [layer.units for layer in scaled.layers if isinstance(layer, keras.layers.Dense)]
    assert hidden == [round(128 * factor), 10]  # the head keeps its classes
    assert [layer.name for layer in scaled.layers] == [layer.name for layer in model.layers]


def test_scale_widths_leaves_the_whitening_stem_whole():
    model = get_preset("fast-cifar10").build(10)
    frozen = {name for group in channel_groups(model)[0] if not group.prunable
              for name in group.producers}
    assert WHITENING_LAYER in frozen  # the stem is one of the layers left whole
    scaled = scale_widths(model, 0.5)
    for name in frozen:
        assert scaled.get_layer(name).get_config() == model.get_layer(name).get_config()
    assert scaled.get_layer(WHITENING_LAYER).filters == model.get_layer(WHITENING_LAYER).filters
    assert scaled.count_params() < model.count_params()


def test_a_narrower_run_is_a_normal_run_folder_and_resumes_as_narrow(pets, tmp_path,
                                                                     monkeypatch):
    config = cfg.TrainConfig(data=str(pets), preset="seed-cifar10", epochs=2, batch_size=16,
                             width=0.5, run_dir=str(tmp_path / "r"))
    run, _ = killed_then_resumed(config, monkeypatch)
    assert run.metrics["epochs_run"] == 2
    assert json.loads((run.dir / "config.json").read_text())["width"] == 0.5
    model = keras.saving.load_model(run.model_path, safe_mode=True, compile=False)
    assert conv_widths(model) == [16, 32, 64]
    assert model.count_params() == run.metrics["parameters"]
    rows, _ = catsdogs.load(run.dir).predict_folder(pets)
    assert len(rows) == 30
    # pruned at its own widths (a --width run's settings carry no --width into prune)
    code = prune_command.main([str(run.dir), "--keep", "0.5", "--epochs", "1",
                               "--run-dir", str(tmp_path / "pruned")])
    assert code == 0
    pruned = keras.saving.load_model(tmp_path / "pruned" / "model.keras", compile=False)
    assert conv_widths(pruned) == [8, 16, 32]


@pytest.mark.parametrize("flags, expected", [
    (["--width", "0"], "bad value for --width"),
    (["--width", "0.5", "--prune-from", "run", "--prune-keep", "0.5"],
     "--width and --prune-from both given"),
    (["--width", "2", "--preset", "mobilenetv3-catsdogs"], "widths catsdogs cannot change"),
])
def test_bad_widths_are_one_error_line(flags, expected, capsys):
    assert expected in one_error_line(capsys, main, flags)


def test_a_config_without_width_is_upgraded_to_width_1():
    assert cfg.upgrade({"config_version": 1, "preset": "seed-cifar10"})["width"] == 1.0


def test_folds_of_older_settings_name_the_flags_that_continue_them(tmp_path):
    """A record written before a setting existed ran it as SETTINGS_ADDED_LATER says; where the
    preset's default has changed since, the fix names the flag to repeat."""
    from catsdogs.errors import CatsDogsError
    from catsdogs.training import kfold

    (tmp_path / kfold.RECORD_FILE).write_text(json.dumps({"settings": {"epochs": 3}}))
    with pytest.raises(CatsDogsError) as refused:
        kfold._read_record(tmp_path, {"epochs": 3, "precise_bn": True})
    assert "precise_bn False -> True" in str(refused.value)
    assert "--no-precise-bn" in refused.value.fix
