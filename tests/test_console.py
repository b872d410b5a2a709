"""A well-made tool: quick quiet errors, results on stdout and progress on stderr,
plain logs in files, documented exit codes, models from the tutorials."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from catsdogs import cli

from conftest import REPO, SAMPLE_DATA, TWO_CLASSES, one_error_line, write_class_images

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def test_a_missing_folder_is_one_line_in_under_two_seconds(tmp_path):
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "catsdogs.train", "--data",
                             str(tmp_path / "nonexistent-folder")], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=60)
    seconds = time.perf_counter() - started
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [f"error: folder not found "
                                          f"(--data {tmp_path / 'nonexistent-folder'}): check the path"]
    assert seconds < 2, f"{seconds:.1f} s: TensorFlow was imported before the check"


@pytest.mark.parametrize("argv", [["train", "--preset", "seed-catdogs"],
                                  ["train", "--epochs", "0"],
                                  ["predict", "nowhere.keras", "photos/"],
                                  ["evaluate", "nowhere.keras", "nowhere/"]])
def test_user_errors_need_no_tensorflow(argv, tmp_path):
    code = (f"import sys\nfrom catsdogs import cli\ncode = cli.main({argv!r})\n"
            "print('tensorflow loaded:', 'tensorflow' in sys.modules)\nsys.exit(code)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=ENV,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stdout.strip().endswith("tensorflow loaded: False")


def test_no_command_is_the_list_on_stderr_and_a_failure_help_is_the_list_and_success(capsys):
    assert cli.main([]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == cli.usage().strip()
    assert cli.main(["--help"]) == 0 and capsys.readouterr().out.strip() == cli.usage().strip()


def test_training_into_a_file_is_plain_lines_one_per_epoch(tmp_path):
    with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
        code = subprocess.run([sys.executable, "-m", "catsdogs", "train", "--data",
                               str(SAMPLE_DATA / "cats_and_dogs"), "--preset", "seed-cifar10",
                               "--epochs", "2", "--run-dir", str(tmp_path / "run")],
                              cwd=tmp_path, env=ENV, stdout=out, stderr=err, timeout=300).returncode
    out, err = (tmp_path / "out.txt").read_text(), (tmp_path / "err.txt").read_text()
    assert code == 0, err[-2000:]
    for text in (out, err):
        assert "\x1b" not in text and "\r" not in text  # no colour codes, no redrawn bars
    epochs = [line for line in err.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/2", "2/2"]
    assert "val_accuracy" in epochs[0]
    assert "Settings:" in err and "Settings:" not in out  # logs on stderr
    assert out.splitlines()[0].startswith("Best val_accuracy")  # results on stdout


def test_quiet_leaves_results_and_errors_only(tmp_path, capsys):
    from catsdogs.commands.doctor import main

    write_class_images(tmp_path / "d", TWO_CLASSES, 2)
    assert main([str(tmp_path / "d"), "--quiet", "--out", str(tmp_path / "doctor.json")]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "readable images" in captured.out


def test_retracing_warnings_are_quiet_while_several_models_train_then_back(caplog):
    """k folds, seeds and a search's trials each compile a new model: TensorFlow's warning
    that counts retracings would blame that loop, so it is kept off stderr while they run."""
    import logging

    from catsdogs.console import quiet_retracing

    logger = logging.getLogger("tensorflow")
    message = "5 out of the last 7 calls to <function f> triggered tf.function retracing."
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        with quiet_retracing():
            logger.warning(message)
            logger.warning("another warning still shows")
        logger.warning(message)
    assert [r.getMessage() for r in caplog.records] == ["another warning still shows", message]


def test_live_progress_only_on_a_terminal_without_no_color(monkeypatch):
    from catsdogs import console

    console.setup()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert console.live_progress()
    monkeypatch.setenv("NO_COLOR", "1")
    assert not console.live_progress()
    monkeypatch.delenv("NO_COLOR")
    console.setup(quiet=True)
    assert not console.live_progress()
    console.setup()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert not console.live_progress()


def test_ctrl_c_exits_130_with_the_way_to_resume(tmp_path):
    process = subprocess.Popen([sys.executable, "-m", "catsdogs", "train", "--data",
                                str(SAMPLE_DATA / "cats_and_dogs"), "--preset", "seed-cifar10",
                                "--epochs", "200", "--run-dir", str(tmp_path / "run")],
                               cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (tmp_path / "run" / "history.csv").exists() and time.monotonic() < deadline:
        time.sleep(0.2)  # an epoch has finished: training is under way
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    # the folder itself, not a placeholder
    resume = f"catsdogs train --resume {shlex.quote(str(tmp_path / 'run'))}"
    assert err.strip().splitlines()[-1] == f"interrupted: continue with {resume}"
    assert "Traceback" not in err


def test_ctrl_c_in_fit_is_raised_at_the_batch_end_and_the_handler_given_back():
    """InterruptAtBatchEnd: Ctrl-C is held until the batch ends (not raised wherever Python
    was, where a destructor could swallow it), a second one is the old handler's again."""
    from catsdogs.training.callbacks import InterruptAtBatchEnd

    before = signal.getsignal(signal.SIGINT)
    callback = InterruptAtBatchEnd()
    callback.on_train_begin()
    assert signal.getsignal(signal.SIGINT) != before
    callback.on_train_batch_end(0, logs={})  # nothing asked: nothing raised
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.1)  # the handler ran (it raised nothing) ...
    assert signal.getsignal(signal.SIGINT) == before  # ... and gave the next Ctrl-C back
    with pytest.raises(KeyboardInterrupt):
        callback.on_train_batch_end(1, logs={})
    callback.on_train_batch_end(2, logs={})  # raised once
    callback.on_train_end()
    assert signal.getsignal(signal.SIGINT) == before
    with pytest.raises(RuntimeError), InterruptAtBatchEnd() as held:  # fit failed: no on_train_end
        held.on_train_begin()
        raise RuntimeError
    assert signal.getsignal(signal.SIGINT) == before


def test_doctor_names_five_files_per_finding_then_how_many_more(tmp_path, capsys):
    from catsdogs.commands.doctor import main

    write_class_images(tmp_path / "d", TWO_CLASSES, 2)
    for i in range(7):
        (tmp_path / "d" / "cats" / f"broken{i}.jpg").write_bytes(b"not a jpeg")
    assert main([str(tmp_path / "d"), "--out", str(tmp_path / "doctor.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if "7 unreadable" in line)
    named = lines[start + 1:start + 7]
    assert all("broken" in line and "not an image" in line for line in named[:5])
    assert named[5].strip() == "and 2 more"


# ---------------------------------------------------------------- models from the tutorials


def tutorial_model(size=64):
    """The cats/dogs tutorial's network, as its script builds it (no Rescaling: the script's
    ImageDataGenerator(rescale=1./255) scales the pixels), at a small size for speed."""
    from keras import layers
    from keras.models import Sequential

    model = Sequential([
        layers.Input((size, size, 3)),
        layers.Conv2D(32, (3, 3), activation="relu"), layers.MaxPooling2D(2, 2),
        layers.Conv2D(64, (3, 3), activation="relu"), layers.MaxPooling2D(2, 2),
        layers.Flatten(), layers.Dense(64, activation="relu"),
        layers.Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


@pytest.mark.slow
def test_a_tutorial_h5_model_is_predicted_evaluated_and_exported(tmp_path, capsys):
    from catsdogs import cli
    from catsdogs.data.images import decode_image

    model = tutorial_model()
    model.save(tmp_path / "image_classification_model.h5")  # what the tutorial script does
    data = write_class_images(tmp_path / "val", TWO_CLASSES, 4, size=(64, 64))
    h5 = tmp_path / "image_classification_model.h5"

    assert cli.main(["predict", str(h5), str(data), "--class-names", "cats,dogs", "--output",
                     str(tmp_path / "rows.json")]) == 0
    err = capsys.readouterr().err
    assert "divided" in err or "multiplied by 0.00392157" in err
    rows = json.loads((tmp_path / "rows.json").read_text())["predictions"]
    first = rows[0]
    pixels = decode_image(first["path"], (64, 64)).astype(np.float32)[None] / 255.0
    dog = float(model.predict(pixels, verbose=0)[0, 0])  # the tutorial's own preprocessing
    expected = dog if first["class"] == "dogs" else 1 - dog
    assert first["probability"] == pytest.approx(expected, abs=1e-5)

    assert cli.main(["evaluate", str(h5), str(data), "--class-names", "cats,dogs", "--out",
                     str(tmp_path / "report")]) == 0
    assert "accuracy" in capsys.readouterr().out

    names = tmp_path / "names.json"
    names.write_text('["cats", "dogs"]')
    assert cli.main(["export", str(h5), "--class-names", str(names), "--format", "keras",
                     "tflite", "--out", str(tmp_path / "exports"), "--check", str(data)]) == 0
    table = capsys.readouterr().out.splitlines()[-2:]
    assert all("100.0%" in line for line in table), table  # every format agrees with Keras
    assert json.loads((tmp_path / "exports" / "class_names.json").read_text()) == ["cats", "dogs"]


def test_a_lambda_h5_model_is_refused_in_one_line(tmp_path, capsys):
    import keras

    from catsdogs.commands.predict import main

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(1, activation="sigmoid")(
        keras.layers.Flatten()(keras.layers.Lambda(lambda x: x * 2)(inputs)))
    keras.Model(inputs, outputs).save(tmp_path / "lambda.h5")
    write_class_images(tmp_path / "photos", TWO_CLASSES, 1, size=(8, 8))
    line = one_error_line(capsys, main, [str(tmp_path / "lambda.h5"), str(tmp_path / "photos"),
                                         "--class-names", "cats,dogs"])
    assert "refused to load" in line and "Lambda" in line


def test_bad_class_names_are_one_line(tmp_path, capsys):
    from catsdogs.commands.predict import main

    (tmp_path / "photos").mkdir()
    line = one_error_line(capsys, main, ["model.h5", str(tmp_path / "photos"),
                                         "--class-names", "cats"])
    assert "--class-names" in line and "two or more" in line
