"""Smaller models: distillation and structured pruning write normal run folders that
load, predict, export and resume; the distillation losses and the pruning are exact."""

import json
import shutil

import keras
import numpy as np
import pytest

import catsdogs
from catsdogs import config as cfg
from catsdogs import runs
from catsdogs.commands import distill as distill_command
from catsdogs.commands import prune as prune_command
from catsdogs.errors import CatsDogsError
from catsdogs.models.presets import get_preset
from catsdogs.training.distill import ProbabilityDistillation
from catsdogs.training.prune import channel_groups, prune_model

from conftest import (Interrupt, crash_when_epoch_starts, killed_then_resumed, one_error_line,
                      write_binary_folders)

RUN_FILES = ["config.json", "class_names.json", "history.csv", "model.keras",
             "saved_model/saved_model.pb", "metrics.json", "calibration.json"]
SMALL = ["--epochs", "2", "--batch-size", "8"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A finished seed-cifar10 run (one epoch) on generated cats and dogs."""
    root = tmp_path_factory.mktemp("teacher")
    images = write_binary_folders(root / "images")
    run = catsdogs.train(cfg.TrainConfig(data=str(images), preset="seed-cifar10", epochs=1,
                                         batch_size=8, run_dir=str(root / "run")))
    return run.dir


def command_config(command, argv):
    """The TrainConfig a command would train with."""
    return command.config_from_args(command.build_parser().parse_args(argv))


def assert_a_normal_run(run_dir, image_size, tmp_path):
    """Every file train writes; the model loads safely, alone, and predicts and exports."""
    for name in RUN_FILES:
        assert (run_dir / name).exists(), name
    assert not (run_dir / "checkpoints").exists()
    model = keras.saving.load_model(run_dir / "model.keras", safe_mode=True, compile=False)
    assert type(model).__name__ == "Functional" and model.input_shape[1:3] == image_size
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["parameters"] == model.count_params()
    classifier = catsdogs.load(run_dir)
    data = json.loads((run_dir / "config.json").read_text())["data"]
    rows, skipped = classifier.predict_folder(f"{data}/validation")
    assert len(rows) == 12 and not skipped
    written = catsdogs.export(classifier, ["keras", "tflite"], out=tmp_path / "exports")
    from catsdogs.inference.export import check

    results = check(written, f"{data}/validation")
    assert [r["format"] for r in results] == ["keras", "tflite"]
    assert results[1]["agreement"] >= 0.9  # float TFLite: ties at p = 0.5 may go either way
    return model


# ---------------------------------------------------------------- distillation


def test_distilled_student_is_a_normal_run_folder(teacher, tmp_path, capsys):
    """A fast-cifar10 student of the seed-cifar10 teacher: everything train writes, on the
    teacher's data and split, with the teacher and the settings in config.json."""
    run_dir = tmp_path / "student"
    code = distill_command.main([str(teacher), "--preset", "fast-cifar10", *SMALL,
                                 "--distill-temperature", "4", "--run-dir", str(run_dir)])
    assert code == 0, capsys.readouterr().err
    config = json.loads((run_dir / "config.json").read_text())
    teacher_config = json.loads((teacher / "config.json").read_text())
    assert config["teacher"] == str(teacher.resolve())
    assert (config["distill_temperature"], config["distill_alpha"]) == (4.0, 0.5)
    assert config["data"] == teacher_config["data"] and config["seed"] == teacher_config["seed"]
    assert config["preset"] == "fast-cifar10"
    history = runs.read_csv(run_dir / "history.csv")
    assert [int(r["epoch"]) for r in history] == [1, 2] and "distillation_loss" in history[0]
    assert_a_normal_run(run_dir, (32, 32), tmp_path)


def test_a_student_holds_out_the_photos_its_teacher_held_out(teacher, tmp_path):
    import shutil

    copied = tmp_path / "teacher"
    shutil.copytree(teacher, copied)
    settings = json.loads((copied / "config.json").read_text())
    (copied / "config.json").write_text(json.dumps({**settings, "split_seed": 7}))
    config = command_config(distill_command, [str(copied), *SMALL])
    assert (config.split_seed, config.seed) == (7, settings["seed"])


@pytest.mark.parametrize("command", [distill_command, prune_command])
def test_a_val_split_the_runs_data_would_ignore_is_one_line(command, teacher, tmp_path, capsys):
    """The teacher's (or pruned run's) data has its own validation/ folder: a typed --val-split
    would be ignored, so it is refused before anything trains."""
    keep = ["--keep", "0.5"] if command is prune_command else []
    line = one_error_line(capsys, command.main, [str(teacher), *keep, "--val-split", "0.3",
                                                  "--run-dir", str(tmp_path / "run")])
    assert "--val-split is not used" in line and "validation/" in line
    assert not (tmp_path / "run").exists()


def test_distillation_resumes_after_a_crash(teacher, tmp_path, monkeypatch):
    run_dir = tmp_path / "student"
    config = command_config(distill_command, [str(teacher), "--preset", "seed-cifar10", *SMALL,
                                              "--run-dir", str(run_dir)])
    started = crash_when_epoch_starts(monkeypatch, 1)
    with pytest.raises(Interrupt):
        catsdogs.train(config)
    assert (run_dir / "checkpoints" / "backup").is_dir()
    run = catsdogs.resume(run_dir)
    assert started == [0, 1, 1]
    assert [int(r["epoch"]) for r in run.history] == [1, 2] and run.metrics["epochs_run"] == 2
    model = keras.saving.load_model(run.model_path, safe_mode=True)
    assert model.count_params() == get_preset("seed-cifar10").build(2).count_params()


def test_teacher_of_another_image_size_sees_the_batch_resized(teacher, tmp_path):
    """A 32x32 teacher distils into a 96x96 student: the teacher model takes the student's
    batch through a Resizing layer to its own size."""
    from catsdogs.training.distill import make_distiller

    config = command_config(distill_command, [str(teacher), "--preset", "fast-catsdogs"])
    student = get_preset("fast-catsdogs").build(2)
    distiller = make_distiller(student, config, ["cats", "dogs"])
    pixels = np.random.default_rng(0).uniform(0, 255, (2, 96, 96, 3)).astype(np.float32)
    resized = keras.ops.convert_to_numpy(keras.layers.Resizing(32, 32, antialias=True)(pixels))
    expected = catsdogs.load(teacher).model(resized)
    np.testing.assert_allclose(distiller.teacher(pixels), expected, atol=1e-5)
    assert distiller.student is student and not distiller.teacher.trainable


def test_teacher_of_other_classes_is_one_error_line(teacher, three_class_folder, capsys):
    line = one_error_line(capsys, distill_command.main,
                          [str(teacher), "--data", str(three_class_folder), *SMALL], alone=False)
    assert "the teacher run classifies ['cats', 'dogs']" in line


def test_a_missing_teacher_is_one_error_line(tmp_path, capsys):
    line = one_error_line(capsys, distill_command.main, [str(tmp_path / "nowhere")])
    assert "the teacher run has no config.json" in line


def softmax(logits):
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_multiclass_distillation_loss_is_t_squared_kl_of_softened_softmaxes():
    teacher_logits = np.array([[2.0, 0.5, -1.0], [0.0, 1.5, 0.3]])
    student_logits = np.array([[1.0, 1.0, 0.0], [-0.5, 0.2, 2.0]])
    temperature = 2.0
    loss = ProbabilityDistillation(temperature).compute_loss(
        softmax(teacher_logits).astype(np.float32), softmax(student_logits).astype(np.float32))
    t, s = softmax(teacher_logits / temperature), softmax(student_logits / temperature)
    expected = temperature ** 2 * np.mean(np.sum(t * np.log(t / s), axis=-1))
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_binary_distillation_loss_is_t_squared_bce_of_tempered_sigmoids_less_entropy():
    """One sigmoid unit: T^2 x (BCE(sigmoid(a/T), sigmoid(b/T)) - H(sigmoid(a/T))), the
    binary KL; the teacher's entropy is a constant, so the gradients are BCE's."""
    def sigmoid(x):
        return 1 / (1 + np.exp(-x))

    a, b = np.array([[2.5], [-1.0], [0.3]]), np.array([[0.5], [1.5], [-2.0]])
    temperature = 3.0
    loss = ProbabilityDistillation(temperature).compute_loss(
        sigmoid(a).astype(np.float32), sigmoid(b).astype(np.float32))
    t, s = sigmoid(a / temperature), sigmoid(b / temperature)
    bce = -(t * np.log(s) + (1 - t) * np.log(1 - s))
    entropy = -(t * np.log(t) + (1 - t) * np.log(1 - t))
    assert float(loss) == pytest.approx(temperature ** 2 * np.mean(bce - entropy), rel=1e-5)
    assert float(loss) > 0
    same = ProbabilityDistillation(temperature).compute_loss(sigmoid(a).astype(np.float32),
                                                             sigmoid(a).astype(np.float32))
    assert float(same) == pytest.approx(0.0, abs=1e-6)


def test_keras_default_kl_string_would_skip_the_softmax_and_the_scaling():
    """The trap ProbabilityDistillation avoids: LogitsDistillation's default "kl_divergence"
    is the plain function, applied to the tempered logits as if they were probabilities."""
    logits = np.log(softmax(np.array([[2.0, 0.5, -1.0]]))).astype(np.float32)
    other = np.log(softmax(np.array([[1.0, 1.0, 0.0]]))).astype(np.float32)
    default = keras.distillation.LogitsDistillation(temperature=2.0).compute_loss(logits, other)
    ours = ProbabilityDistillation(2.0).compute_loss(np.exp(logits), np.exp(other))
    assert float(default) != pytest.approx(float(ours), rel=1e-2)


# ---------------------------------------------------------------- pruning


def _batchnorm_of(model):
    """conv layer name -> the BatchNormalization that reads it directly."""
    found = {}
    for spec in model.get_config()["layers"]:
        if spec["class_name"] == "BatchNormalization":
            source = spec["inbound_nodes"][0]["args"][0]["config"]["keras_history"][0]
            found[source] = model.get_layer(spec["name"])
    return found


@pytest.mark.parametrize("preset", ["seed-cifar10", "fast-cifar10", "resnet-cifar10"])
def test_pruning_channels_that_are_already_zero_keeps_the_output(preset):
    """A quarter of every prunable group's channels are dead (zero filters and biases, or a
    zero BatchNorm after them; a residual Add's channels dead on both sides): keep 0.75
    removes exactly them, and the narrower model computes the same function."""
    rng = np.random.default_rng(0)
    model = get_preset(preset).build(3)
    for layer in model.layers:  # BatchNorm statistics that are not the identity
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.get_weights()])
    norms = _batchnorm_of(model)
    groups, _ = channel_groups(model)
    dead = {}
    for group in [g for g in groups if g.prunable]:
        channels = rng.choice(group.width, group.width // 4, replace=False)
        for name in group.producers:
            dead[name] = channels
            weights = model.get_layer(name).get_weights()
            weights[0][..., channels] = 0
            if len(weights) > 1:
                weights[1][channels] = 0
            model.get_layer(name).set_weights(weights)
            if name in norms:
                weights = norms[name].get_weights()
                weights[0][channels] = weights[1][channels] = 0  # gamma, beta
                norms[name].set_weights(weights)
    assert dead, "nothing to prune"

    pruned, rows = prune_model(model, 0.75)
    widths = {name: model.get_layer(name).kernel.shape[-1] for name in dead}
    assert {name: (before, after) for name, before, after in rows} == {
        name: (width, width * 3 // 4) for name, width in widths.items()}
    pixels = rng.uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(pruned(pixels, training=False), model(pixels, training=False),
                               atol=1e-5)


def test_residual_add_prunes_the_same_channels_on_both_sides():
    groups, _ = channel_groups(get_preset("resnet-cifar10").build(10))
    shared = [g for g in groups if len(g.producers) == 2]
    assert len(shared) == 3 and all(g.prunable for g in shared)  # one per residual stage
    whitening = [g for g in groups if "patch_whitening" in g.producers]
    assert whitening and not whitening[0].prunable  # the frozen stem stays whole


def test_a_model_with_nothing_to_prune_is_a_clear_error():
    pixels = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(pixels)
    x = keras.layers.Concatenate()([x, x])  # moves channels about: not pruned through
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalMaxPooling2D()(x))
    with pytest.raises(CatsDogsError, match="no channels catsdogs can prune"):
        prune_model(keras.Model(pixels, outputs), 0.5)


def test_pruned_run_is_a_normal_run_folder(teacher, tmp_path, capsys):
    run_dir = tmp_path / "pruned"
    code = prune_command.main([str(teacher), "--keep", "0.5", "--run-dir", str(run_dir)])
    assert code == 0, capsys.readouterr().err
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["prune_from"], config["prune_keep"]) == (str(teacher.resolve()), 0.5)
    assert config["teacher"] is None and config["epochs"] == 1  # a third of 1, rounded up
    assert config["learning_rate"] == pytest.approx(1e-4)  # a tenth of the run's
    model = assert_a_normal_run(run_dir, (32, 32), tmp_path)
    widths = [layer.kernel.shape[-1] for layer in model.layers if hasattr(layer, "kernel")]
    assert widths == [16, 32, 64, 64, 1]  # seed-cifar10's 32-64-128 convs and Dense 128, halved


def test_a_run_started_from_weights_in_two_stages_is_pruned_whole_in_one(teacher, tmp_path):
    """The pruned model starts from the run's trained weights: the run's own start (--weights)
    and its stages are not taken over (they were refused beside --prune-from, and prune has no
    flag to drop them); the epochs are a third of both stages'."""
    run = tmp_path / "fine-tuned"
    shutil.copytree(teacher, run)
    settings = json.loads((run / "config.json").read_text())
    settings.update(weights=str(teacher), fine_tune_epochs=5, fine_tune_learning_rate=1e-4,
                    unfreeze="2", run_dir=str(run))
    (run / "config.json").write_text(json.dumps(settings))
    config = command_config(prune_command, [str(run), "--keep", "0.5"])
    assert (config.weights, config.fine_tune_epochs, config.unfreeze) == ("none", 0, "all")
    assert config.epochs == 2 and config.prune_from == str(run.resolve())  # ceil((1 + 5) / 3)
    # its config.json given as --config (a copy of a run's settings) prunes this run all the same
    config = command_config(prune_command, [str(run), "--keep", "0.5", "--config",
                                            str(run / "config.json"), "--fine-tune-epochs", "2"])
    assert (config.prune_from, config.prune_keep, config.weights) == (str(run.resolve()), 0.5,
                                                                     "none")
    assert config.fine_tune_epochs == 2  # two stages when asked
    from catsdogs.training.train import run_label

    assert run_label(config) == "seed-cifar10-pruned"  # its default folder in runs/
    config = command_config(distill_command, [str(run), "--config", str(teacher / "config.json")])
    assert config.teacher == str(run.resolve())  # the teacher's own config.json says null
    assert run_label(config) == "seed-cifar10-distilled"


def test_pruning_with_distillation_resumes_after_a_crash(teacher, tmp_path, monkeypatch):
    run_dir = tmp_path / "pruned"
    config = command_config(prune_command, [str(teacher), "--keep", "0.25", "--distill",
                                            *SMALL, "--run-dir", str(run_dir)])
    assert config.teacher == config.prune_from == str(teacher.resolve())
    run, started = killed_then_resumed(config, monkeypatch)
    assert started == [0, 1, 1] and [int(r["epoch"]) for r in run.history] == [1, 2]
    model = catsdogs.load(run_dir).model
    assert [layer.kernel.shape[-1] for layer in model.layers if hasattr(layer, "kernel")] == \
        [8, 16, 32, 32, 1]


@pytest.mark.parametrize("keep", ["0", "1.5", "-0.5", "half"])
def test_keep_outside_zero_to_one_is_one_error_line(keep, tmp_path, capsys):
    line = one_error_line(capsys, prune_command.main, [str(tmp_path), "--keep", keep])
    assert "--keep" in line and "(0, 1]" in line
