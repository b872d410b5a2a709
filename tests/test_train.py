"""End-to-end training, run folders, resume, and saves that never tear."""

import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest

import catsdogs
from catsdogs import runs
from catsdogs.training import callbacks
from catsdogs.config import TrainConfig
from catsdogs.errors import CatsDogsError
from catsdogs.models.presets import get_preset
from catsdogs.commands.train import main

from conftest import SAMPLE_DATA, Interrupt, crash_when_epoch_starts, one_error_line

RUN_FILES = ["config.json", "class_names.json", "dataset.json", "history.csv", "skipped.csv",
             "model.keras", "saved_model/saved_model.pb", "plots/training_curves.png",
             "metrics.json"]


def small_config(folder, run_dir, **overrides):
    return TrainConfig(**{"data": str(folder), "preset": "seed-cifar10", "epochs": 2,
                          "batch_size": 8, "run_dir": str(run_dir), **overrides})


def test_end_to_end_on_generated_images(binary_folders, tmp_path):
    run = catsdogs.train(small_config(binary_folders, tmp_path / "run"))
    for name in RUN_FILES:
        assert (run.dir / name).exists(), name
    assert list((run.dir / "logs").rglob("events.out.tfevents.*"))
    assert not (run.dir / "checkpoints").exists()  # the resume backup is gone after a clean finish
    assert [int(r["epoch"]) for r in run.history] == [1, 2]
    assert json.loads((run.dir / "class_names.json").read_text()) == ["cats", "dogs"]
    config = json.loads((run.dir / "config.json").read_text())
    assert config["epochs"] == 2 and config["augment"]["zoom_range"] == [1.0, 1.0]
    metrics = json.loads((run.dir / "metrics.json").read_text())
    best = max(float(r["val_accuracy"]) for r in run.history)
    assert metrics["best_val_accuracy"] == pytest.approx(best)

    model = keras.saving.load_model(run.dir / "model.keras")
    pixels = np.full((1, 32, 32, 3), 128, np.float32)
    import tensorflow as tf
    saved_model = tf.saved_model.load(str(run.dir / "saved_model"))
    served = saved_model.signatures["serving_pixels"](pixels=tf.constant(pixels))
    # saved_model/ carries the run's temperature (calibration.json); model.keras is the raw model
    from catsdogs.inference.calibrate import apply_temperature

    temperature = json.loads((run.dir / "calibration.json").read_text())["temperature"]
    np.testing.assert_allclose(served["probabilities"].numpy()[:, 1:],
                               apply_temperature(model(pixels).numpy(), temperature), atol=1e-5)


def test_cli_trains_seed_catsdogs_on_the_shipped_sample(tmp_path, capsys):
    code = main(["--data", str(SAMPLE_DATA / "cats_and_dogs"), "--epochs", "1",
                 "--run-dir", str(tmp_path / "run")])
    assert code == 0
    captured = capsys.readouterr()  # progress and logs on stderr, results on stdout
    assert "train: cats 60, dogs 60" in captured.err and "validation: cats 20, dogs 20" in captured.err
    # half of 40 photos is too few for a temperature: all 40 choose the epoch, T stays 1
    assert "fewer than the 100 a temperature needs: none set aside" in captured.err
    assert "calibration:" not in captured.err
    assert f"tensorboard --logdir {tmp_path / 'run' / 'logs'}" in captured.out
    assert "Settings:" not in captured.out and "epoch 1/1" in captured.err
    assert keras.saving.load_model(tmp_path / "run" / "model.keras").input_shape == (None, 150, 150, 3)


def test_steps_per_execution_still_trains_on_every_batch(binary_folders, tmp_path):
    """24 images in batches of 5 are 5 steps: run 4 at a time, the last call runs the one
    left over (not none, not a padded 4), so schedules that count steps stay right."""
    run = catsdogs.train(small_config(binary_folders, tmp_path / "run", epochs=1, batch_size=5,
                                      steps_per_execution=4))
    assert json.loads((run.dir / "config.json").read_text())["steps_per_execution"] == 4
    model = keras.saving.load_model(run.model_path)
    assert int(model.optimizer.iterations) == math.ceil(24 / 5)


def test_multiclass_folder_uses_softmax_and_sparse_crossentropy(three_class_folder, tmp_path):
    run = catsdogs.train(small_config(three_class_folder, tmp_path / "run", epochs=1))
    model = keras.saving.load_model(run.model_path)
    assert model.output_shape == (None, 3)
    assert type(model.loss).__name__ == "SparseCategoricalCrossentropy"


def test_resume_continues_at_the_interrupted_epoch(binary_folders, tmp_path, monkeypatch):
    started = crash_when_epoch_starts(monkeypatch, 1)
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupt):
        catsdogs.train(small_config(binary_folders, run_dir, epochs=3))
    assert [r["epoch"] for r in runs.read_csv(run_dir / "history.csv")] == ["1"]
    assert (run_dir / "checkpoints" / "backup").is_dir()

    run = catsdogs.resume(run_dir)
    assert started == [0, 1, 1, 2]  # the resumed fit starts at epoch 2 (index 1), not 1
    assert [int(r["epoch"]) for r in run.history] == [1, 2, 3]
    assert run.metrics["epochs_run"] == 3


def test_a_run_given_relative_paths_resumes_from_another_folder(binary_folders, tmp_path,
                                                                monkeypatch):
    """config.json stores the folders absolute: relative, they named a folder under the one
    the run was trained from, and the resume the interruption suggests failed elsewhere."""
    crash_when_epoch_starts(monkeypatch, 1)
    monkeypatch.chdir(binary_folders.parent)
    with pytest.raises(Interrupt):
        catsdogs.train(small_config(Path(binary_folders.name), Path("run"), epochs=2))
    stored = json.loads((binary_folders.parent / "run" / "config.json").read_text())
    assert stored["data"] == str(binary_folders) and stored["run_dir"] == "run"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = catsdogs.resume(binary_folders.parent / "run")
    assert [int(r["epoch"]) for r in run.history] == [1, 2]


def test_stored_paths_expand_the_home_folder_and_leave_named_starts(monkeypatch, tmp_path):
    from catsdogs import config as cfg

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert cfg.absolute_setting("cache_dir", "~/caches") == str(tmp_path / "caches")
    assert cfg.absolute_setting("prune_from", "runs/big") == str(tmp_path / "runs" / "big")
    assert cfg.absolute_setting("weights", "imagenet") == "imagenet"
    assert cfg.absolute_setting("weights", None) is None
    assert cfg.absolute_setting("preset", "runs/big") == "runs/big"  # not a path setting


def test_an_old_run_with_a_relative_folder_says_where_it_was_looked_for(tmp_path, capsys):
    from catsdogs.data.datasets import list_class_folders

    with pytest.raises(CatsDogsError, match="relative to where it was trained"):
        list_class_folders(Path("no-such-folder-here"))


def test_resume_of_a_run_killed_before_its_first_model_save_keeps_a_model(
        binary_folders, tmp_path, monkeypatch):
    """history.csv names a best epoch but model.keras was never written (an older catsdogs
    wrote the backup and history first, and a kill came before the model): the resumed run
    keeps its next model whatever its accuracy, and finishes with a model, not an error."""
    crash_when_epoch_starts(monkeypatch, 1)
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupt):
        catsdogs.train(small_config(binary_folders, run_dir, epochs=3))
    (run_dir / "model.keras").unlink()
    rows = runs.read_csv(run_dir / "history.csv")
    rows[0]["val_accuracy"] = "1.0"  # no later epoch can beat it
    runs.write_csv(run_dir / "history.csv", list(rows[0]), [list(r.values()) for r in rows])

    run = catsdogs.resume(run_dir)
    assert (run_dir / "model.keras").exists() and run.metrics["epochs_run"] == 3


def test_resume_restores_weights_and_optimizer_state(binary_folders, tmp_path):
    model = get_preset("seed-cifar10").build(2)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    x, y = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)), np.arange(16) % 2
    backup = callbacks.AtomicBackupAndRestore(tmp_path / "backup")
    model.fit(x, y, epochs=2, callbacks=[backup], verbose=0)
    fresh = get_preset("seed-cifar10").build(2)
    fresh.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    restore = callbacks.AtomicBackupAndRestore(tmp_path / "backup")
    restore.set_model(fresh)
    restore.on_train_begin()
    assert fresh._initial_epoch == 2
    assert int(fresh.optimizer.iterations) == int(model.optimizer.iterations) == 2 * 1
    for a, b in zip(fresh.weights, model.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# Keras warns of each mismatched part as it tries the backup; the mismatch is the point here
@pytest.mark.filterwarnings("ignore:Skipping:UserWarning")
def test_resume_state_of_another_network_is_one_clear_error(tmp_path):
    """A run begun when its preset had another network (an older catsdogs) cannot resume into
    today's: one error naming the backup and the fix, not Keras' traceback."""
    x, y = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)), np.arange(16) % 2
    old = get_preset("seed-cifar10").build(2)
    old.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    old.fit(x, y, epochs=1, verbose=0,
            callbacks=[callbacks.AtomicBackupAndRestore(tmp_path / "backup")])
    new = get_preset("fast-cifar10").build(2)
    new.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    restore = callbacks.AtomicBackupAndRestore(tmp_path / "backup")
    restore.set_model(new)
    with pytest.raises(CatsDogsError, match="does not fit") as raised:
        restore.on_train_begin()
    assert "start a new run" in str(raised.value)


def test_failed_save_leaves_the_previous_best_model(tmp_path, monkeypatch):
    model = get_preset("seed-cifar10").build(2)
    checkpoint = callbacks.BestModelCheckpoint(tmp_path / "model.keras")
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"loss": 0.6, "val_accuracy": 0.6})
    good = (tmp_path / "model.keras").read_bytes()

    def killed_mid_write(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PK\x03\x04 half a zip")
        raise OSError("simulated kill during the save")

    monkeypatch.setattr(keras.Model, "save", killed_mid_write)
    with pytest.raises(OSError):
        checkpoint.on_epoch_end(1, {"loss": 0.5, "val_accuracy": 0.7})
    assert (tmp_path / "model.keras").read_bytes() == good
    keras.saving.load_model(tmp_path / "model.keras")
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]  # no temp file left


def test_nan_loss_never_replaces_the_best_model(tmp_path):
    model = get_preset("seed-cifar10").build(2)
    checkpoint = callbacks.BestModelCheckpoint(tmp_path / "model.keras")
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"loss": math.nan, "val_accuracy": 0.9})
    assert not (tmp_path / "model.keras").exists()


def test_nan_loss_stops_training_with_one_clear_line(binary_folders, tmp_path, capsys):
    code = main(["--data", str(binary_folders), "--preset", "seed-cifar10", "--epochs", "3",
                 "--learning-rate", "1e30", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1  # a failed run, not a usage error
    assert err[-1].startswith("error: training loss became NaN")  # after the run's progress lines
    assert sum(line.startswith("error") for line in err) == 1 and "Traceback" not in "".join(err)
    assert "--learning-rate" in err[-1]


def test_preview_augmentation_writes_a_grid_and_trains_nothing(binary_folders, tmp_path):
    code = main(["--data", str(binary_folders), "--preset", "seed-cifar10", "--rotation-range", "30",
                 "--preview-augmentation", "--run-dir", str(tmp_path / "run")])
    assert code == 0
    assert (tmp_path / "run" / "plots" / "augmentation.png").stat().st_size > 1000
    assert not (tmp_path / "run" / "model.keras").exists()
    # its folder takes another preview, then the run it previewed
    argv = ["--data", str(binary_folders), "--preset", "seed-cifar10", "--batch-size", "8",
            "--run-dir", str(tmp_path / "run")]
    assert main([*argv, "--preview-augmentation"]) == 0
    assert main([*argv, "--epochs", "1"]) == 0 and (tmp_path / "run" / "model.keras").exists()


FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("dropped", [(), ("progressive_start", "steps_per_execution",
                                          "optimizer", "lookahead")])
def test_a_run_folder_from_before_config_versions_resumes(binary_folders, tmp_path, monkeypatch,
                                                          capsys, dropped):
    """tests/fixtures/config-v0.json is a config.json as catsdogs 0.1 (66e7bb4, before the stage
    packages) wrote it: no config_version. Such a run, interrupted, resumes and finishes; with
    the settings an even older catsdogs lacked, they take the values those runs used."""
    run_dir = tmp_path / "run"
    stored = json.loads((FIXTURES / "config-v0.json").read_text())
    assert "config_version" not in stored
    stored.update(data=str(binary_folders), run_dir=str(run_dir))
    crash_when_epoch_starts(monkeypatch, 1)
    with pytest.raises(Interrupt):
        catsdogs.train(TrainConfig(**{**stored, "augment": None}))
    for key in dropped:
        del stored[key]
    (run_dir / "config.json").write_text(json.dumps(stored))
    (run_dir / "photos.json").unlink()  # catsdogs 0.1 wrote none

    assert main(["--resume", str(run_dir)]) == 0
    assert [int(r["epoch"]) for r in runs.read_csv(run_dir / "history.csv")] == [1, 2, 3]
    assert keras.saving.load_model(run_dir / "model.keras", compile=False).input_shape[1:3] == (32, 32)


def test_upgrade_refuses_a_config_from_a_newer_catsdogs():
    from catsdogs.config import CONFIG_VERSION, upgrade

    upgraded = upgrade({"config_version": CONFIG_VERSION, "epochs": 3})
    assert upgraded["epochs"] == 3 and "config_version" not in upgraded
    with pytest.raises(CatsDogsError, match="config_version 99"):
        upgrade({"config_version": 99})


def test_new_run_folders_record_the_config_version(binary_folders, tmp_path):
    from catsdogs.config import CONFIG_VERSION

    run = catsdogs.train(small_config(binary_folders, tmp_path / "run", epochs=1))
    assert json.loads((run.dir / "config.json").read_text())["config_version"] == CONFIG_VERSION


def test_a_damaged_history_stops_a_resume_in_one_line_before_the_data_is_read(
        binary_folders, tmp_path, monkeypatch, capsys):
    config = small_config(binary_folders, tmp_path / "run")
    crash_when_epoch_starts(monkeypatch, 1)
    with pytest.raises(Interrupt):
        catsdogs.train(config)
    history = tmp_path / "run" / "history.csv"
    rows = history.read_text().splitlines()
    history.write_text("\n".join([rows[0], rows[1].replace(rows[1].split(",")[1], "abc", 1)]))
    photos_before = (tmp_path / "run" / "photos.json").read_bytes()
    line = one_error_line(capsys, main, ["--resume", str(tmp_path / "run")], alone=False)
    assert "line 2 of the history" in line and "'abc', not a number" in line
    assert (tmp_path / "run" / "photos.json").read_bytes() == photos_before
