"""Transfer learning: starting from a weights file or an earlier run, two stages, resume."""

import json
import warnings

import h5py
import keras
import numpy as np
import pytest

import catsdogs
from catsdogs import runs
from catsdogs.commands.train import main
from catsdogs.config import TrainConfig
from catsdogs.errors import CatsDogsError
from catsdogs.models.presets import WHITENING_LAYER, get_preset
from catsdogs.models.transfer import body_layers, head_of, start_model
from catsdogs.training.stages import set_stage

from conftest import Interrupt, crash_when_epoch_starts, one_error_line, write_binary_folders


def small_config(folder, run_dir, **overrides):
    return TrainConfig(**{"data": str(folder), "preset": "fast-cifar10", "epochs": 1,
                          "batch_size": 8, "run_dir": str(run_dir), **overrides})


def body_weights(model):
    return [w for layer in body_layers(model) for w in layer.get_weights()]


def assert_same(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def random_batch(classes, count=16, side=32):
    rng = np.random.default_rng(0)
    return (rng.uniform(0, 255, (count, side, side, 3)).astype(np.float32),
            (np.arange(count) % classes).astype(np.float32))


def fit_once(model, rate=1e-2):
    model.compile(optimizer=keras.optimizers.Adam(rate), loss="binary_crossentropy")
    model.fit(*random_batch(2), batch_size=8, epochs=1, verbose=0)


# ---------------------------------------------------------------- weights from a file


@pytest.mark.parametrize("name", ["seed-cifar10", "fast-cifar10"])
def test_a_weights_file_round_trips_into_a_fresh_model(name, tmp_path):
    trained = get_preset(name).build(2)
    fit_once(trained)
    trained.save_weights(tmp_path / "trained.weights.h5")
    keras.utils.set_random_seed(1)
    fresh, note = start_model(get_preset(name), ["a", "b"], str(tmp_path / "trained.weights.h5"))
    assert_same(body_weights(fresh), body_weights(trained))
    assert not np.array_equal(head_of(fresh).get_weights()[0], head_of(trained).get_weights()[0])
    assert "a new head" in note


def test_a_keras_applications_notop_file_loads_into_the_backbone(tmp_path):
    """keras.applications' own *_notop.h5 layout (Keras 2's h5, layer_names in order)."""
    from keras.src.legacy.saving import legacy_h5_format

    reference = keras.applications.MobileNetV3Small(include_top=False, weights=None,
                                                    input_shape=(224, 224, 3), pooling="avg")
    path = tmp_path / "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, reference)
    model, _ = start_model(get_preset("mobilenetv3-catsdogs"), ["cats", "dogs"], str(path))
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    assert_same(backbone.get_weights(), reference.get_weights())


def test_a_file_that_does_not_fit_is_one_line_naming_the_first_layer(binary_folders, tmp_path,
                                                                     capsys):
    other = get_preset("fast-cifar10").build(2)  # its first layer is a 2x2 whitening conv
    other.save_weights(tmp_path / "other.weights.h5")
    line = one_error_line(capsys, main, [
        "--data", str(binary_folders), "--preset", "seed-cifar10", "--epochs", "1",
        "--weights", str(tmp_path / "other.weights.h5"), "--run-dir", str(tmp_path / "run")],
        alone=False)
    assert "does not match" in line and "layer 'conv2d" in line and "(2, 2, 3, 24)" in line
    # refused before its first epoch: no folder left to refuse the command with the file fixed
    assert not (tmp_path / "run").exists()
    (tmp_path / "mine" / ".git").mkdir(parents=True)  # a folder the user made stays, with
    (tmp_path / "mine" / ".gitkeep").write_text("")  # the hidden files it held ("empty")
    one_error_line(capsys, main, [
        "--data", str(binary_folders), "--preset", "seed-cifar10", "--epochs", "1",
        "--weights", str(tmp_path / "other.weights.h5"), "--run-dir", str(tmp_path / "mine")],
        alone=False)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == [".git", ".gitkeep", ".lock"]


def test_a_weights_file_that_is_not_hdf5_is_one_line_before_decoding(binary_folders, tmp_path,
                                                                     capsys):
    (tmp_path / "page.weights.h5").write_text("<html>Sign in to download</html>")
    line = one_error_line(capsys, main, ["--data", str(binary_folders), "--preset", "seed-cifar10",
                                         "--weights", str(tmp_path / "page.weights.h5")])
    assert "no HDF5 signature" in line


def test_a_weights_path_that_is_neither_file_nor_run_is_one_line_before_decoding(
        binary_folders, tmp_path, capsys):
    line = one_error_line(capsys, main, ["--data", str(binary_folders), "--preset", "seed-cifar10",
                                         "--weights", str(tmp_path / "missing.h5")])
    assert "no such weights file or run folder" in line
    (tmp_path / "empty").mkdir()
    line = one_error_line(capsys, main, ["--data", str(binary_folders), "--preset", "seed-cifar10",
                                         "--weights", str(tmp_path / "empty")])
    assert "not a catsdogs run folder" in line


def test_a_damaged_run_model_or_a_foreign_h5_file_is_one_line(binary_folders, tmp_path,
                                                              capsys):
    """The start's files are read like any model a user hands over: a torn model.keras or an
    HDF5 file that holds no Keras weights is named, with no traceback."""
    import h5py

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.keras").write_bytes(b"PK\x03\x04 torn")
    (tmp_path / "run" / "class_names.json").write_text('["cats", "dogs"]')
    with h5py.File(tmp_path / "other.h5", "w") as file:
        file.attrs["layer_names"] = [b"dense"]  # Keras' legacy layout, without its groups
    for start, expected in ((tmp_path / "run", "cannot load the model"),
                            (tmp_path / "other.h5", "cannot read the weights file (KeyError")):
        line = one_error_line(capsys, main, [
            "--data", str(binary_folders), "--preset", "seed-cifar10", "--epochs", "1",
            "--weights", str(start), "--run-dir", str(tmp_path / f"to-{start.stem}")],
            alone=False)
        assert expected in line and str(start) in line


def test_offline_imagenet_names_the_file_and_where_keras_looks(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(CatsDogsError) as raised:
        get_preset("mobilenetv3-catsdogs").build(2, weights="imagenet")
    line = str(raised.value)
    assert "~/.keras/models/weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5" in line
    assert "catsdogs weights fetch mobilenetv3-catsdogs" in line



def test_offline_imagenet_start_leaves_no_run_folder(monkeypatch, capsys, binary_folders, tmp_path):
    """Without the weights, train says so before it writes a run folder, so the same
    --run-dir is free for the next try (not "already holds a run")."""
    from catsdogs.models.imagenet import ImagenetWeights

    def offline(self, into=None):
        raise CatsDogsError("could not download it (network unreachable)")

    monkeypatch.setattr(ImagenetWeights, "fetch", offline)
    run_dir = tmp_path / "run"
    line = one_error_line(capsys, main, ["--data", str(binary_folders), "--preset",
                                         "mobilenetv3-catsdogs", "--weights", "imagenet",
                                         "--run-dir", str(run_dir)], alone=False,
                          exit_code=1)  # the settings were fine: the network was not
    assert "catsdogs weights fetch mobilenetv3-catsdogs" in line and "--weights" in line
    assert not run_dir.exists()

# ---------------------------------------------------------------- the two stages


def test_stage_one_changes_only_the_head():
    model = get_preset("fast-cifar10").build(2)
    set_stage(model, 1)
    body, head = body_weights(model), head_of(model).get_weights()
    fit_once(model)
    assert_same(body_weights(model), body)  # BatchNorm statistics included
    assert not np.array_equal(head_of(model).get_weights()[0], head[0])


def test_stage_two_changes_the_body_but_no_batchnorm_statistic():
    model = get_preset("fast-cifar10").build(2)
    set_stage(model, 2)
    norms = [layer for layer in body_layers(model)
             if isinstance(layer, keras.layers.BatchNormalization)]
    convolutions = [layer for layer in body_layers(model) if isinstance(layer, keras.layers.Conv2D)
                    and layer.name != WHITENING_LAYER]
    assert norms and convolutions
    statistics = [layer.get_weights() for layer in norms]
    kernels = [layer.get_weights()[0] for layer in convolutions]
    whitening = model.get_layer(WHITENING_LAYER).get_weights()[0]
    fit_once(model)
    for layer, before in zip(norms, statistics):
        assert_same(layer.get_weights(), before)
    for layer, before in zip(convolutions, kernels):
        assert not np.array_equal(layer.get_weights()[0], before), layer.name
    np.testing.assert_array_equal(model.get_layer(WHITENING_LAYER).get_weights()[0], whitening)


def test_unfreeze_k_leaves_the_earlier_layers_untouched():
    model = get_preset("seed-cifar10").build(2)
    set_stage(model, 2, "2")  # seed-cifar10's body: 3 convolutions, then Dense 128
    layers = body_layers(model)
    before = [layer.get_weights()[0] for layer in layers]
    fit_once(model)
    changed = [not np.array_equal(layer.get_weights()[0], b) for layer, b in zip(layers, before)]
    assert changed == [False, False, True, True]


def test_a_keras_applications_backbone_unfreezes_inside(tmp_path):
    """A frozen nested backbone (ImageNet start) trains in stage two, its BatchNorm not."""
    model = get_preset("mobilenetv3-catsdogs").build(2)
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    backbone.trainable = False
    set_stage(model, 1)
    assert [w.path for w in model.trainable_weights] == ["probability/kernel", "probability/bias"]
    set_stage(model, 2, "3")
    trainable = {w.path.split("/")[0] for w in model.trainable_weights}
    assert len(trainable) == 4 and "probability" in trainable
    assert not any("bn" in name or "batch" in name for name in trainable)


# ---------------------------------------------------------------- runs started from runs


def test_weights_from_a_run_with_other_classes_get_a_new_head_and_the_same_body(
        three_class_folder, binary_folders, tmp_path):
    source = catsdogs.train(small_config(three_class_folder, tmp_path / "source"))
    source_model = keras.saving.load_model(source.model_path, compile=False)
    run = catsdogs.train(small_config(binary_folders, tmp_path / "target",
                                      weights=str(source.dir), keep_epoch="last"))
    model = keras.saving.load_model(run.model_path, compile=False)
    assert model.output_shape == (None, 1)
    assert_same(body_weights(model), body_weights(source_model))  # frozen: stage one only

    same, note = start_model(get_preset("fast-cifar10"), ["apples", "grapes", "limes"],
                             str(source.dir))
    assert "the same classes" in note
    assert_same(head_of(same).get_weights(), head_of(source_model).get_weights())


@pytest.fixture(scope="module")
def started(tmp_path_factory):
    """(photos, a one-epoch fast-cifar10 run on them): where the two-stage runs below start."""
    root = tmp_path_factory.mktemp("transfer")
    folders = write_binary_folders(root / "images")
    return folders, catsdogs.train(small_config(folders, root / "source"))


@pytest.mark.parametrize("crash_epoch", [1, 2])
def test_a_kill_in_stage_two_resumes_in_stage_two(started, tmp_path, monkeypatch, crash_epoch):
    """Two stages are one run (a stage column in its history); killed as stage two's first
    epoch starts (its backup just written) or later, it resumes with the body unfrozen and
    the second stage's optimizer state, not the first's."""
    folders, source = started
    begun = crash_when_epoch_starts(monkeypatch, crash_epoch)
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupt):
        catsdogs.train(small_config(folders, run_dir, weights=str(source.dir),
                                    fine_tune_epochs=2, keep_epoch="last", learning_rate=1e-3))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["fine_tune_epochs"] == 2 and config["fine_tune_learning_rate"] == pytest.approx(1e-4)
    assert config["weights"] == str(source.dir)
    metadata = json.loads((run_dir / "checkpoints" / "backup" / "training_metadata.json").read_text())
    assert metadata["stage"] == 2 and metadata["head_epochs"] == 1

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = catsdogs.resume(run_dir)
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    assert begun == [0, 1, 2][:crash_epoch + 1] + list(range(crash_epoch, 3))
    rows = runs.read_csv(run_dir / "history.csv")
    assert [(int(r["epoch"]), int(float(r["stage"]))) for r in rows] == [(1, 1), (2, 2), (3, 2)]
    model = keras.saving.load_model(run.model_path, compile=False)  # the last epoch: stage two
    assert any(layer.trainable for layer in body_layers(model))


def test_a_start_whose_training_photos_the_new_run_holds_out_is_said(started, tmp_path, caplog):
    """The source trained on all of train/; a selection split carved from train/ then chooses
    the new run's epoch on photos its starting weights learned."""
    folders, source = started
    caplog.clear()
    catsdogs.train(small_config(folders, tmp_path / "run", weights=str(source.dir),
                                selection_split=0.25))
    assert "6 of this run's held-out photos trained the model it starts from" in caplog.text
    caplog.clear()
    catsdogs.train(small_config(folders, tmp_path / "same", weights=str(source.dir)))
    assert "trained the model it starts from" not in caplog.text  # validation/: held out by both
