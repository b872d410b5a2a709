"""tf.distribute: MirroredStrategy on one CPU replica; multi-worker training with two processes
on 127.0.0.1, and the Keras code its two patches stand on."""

import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from catsdogs.commands.train import main
from catsdogs.training.distribute import free_ports

from conftest import REPO, TWO_CLASSES, one_error_line, write_class_images

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
DRIVER = REPO / "tests" / "multiworker_driver.py"


def test_mirrored_strategy_runs_with_one_cpu_replica(binary_folders, tmp_path):
    code = main(["--data", str(binary_folders), "--preset", "seed-cifar10", "--epochs", "1",
                 "--strategy", "mirrored", "--run-dir", str(tmp_path / "run")])
    assert code == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["strategy"] == "mirrored"
    assert (tmp_path / "run" / "metrics.json").is_file()


def test_multiworker_without_tf_config_says_how(binary_folders, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    line = one_error_line(capsys, main, ["--data", str(binary_folders), "--strategy",
                                         "multiworker", "--run-dir", str(tmp_path / "run")])
    assert "TF_CONFIG" in line and "--local-workers" in line
    assert not (tmp_path / "run").exists()


@pytest.fixture
def shards(tmp_path):
    root = tmp_path / "images"
    write_class_images(root / "train", TWO_CLASSES, 12, size=(32, 32), seed=1)
    write_class_images(root / "validation", TWO_CLASSES, 4, size=(32, 32), seed=2)
    return root


def flags(data, run_dir, batch_size, learning_rate, strategy):
    return ["--data", str(data), "--preset", "seed-cifar10", "--epochs", "2", "--batch-size",
            str(batch_size), "--learning-rate", str(learning_rate), "--strategy", strategy,
            "--run-dir", str(run_dir)]


def test_calibrate_cuts_a_multiworker_runs_photos_again_as_its_chief_did(shards, tmp_path):
    """Each worker read every n-th file and photos.json lists worker 0's share: cut as by one
    process, the photos its temperature was fitted on were refused as "new or gone"."""
    import dataclasses
    import types

    from catsdogs import config as cfg
    from catsdogs import runs
    from catsdogs.data.datasets import load_image_data
    from catsdogs.errors import CatsDogsError
    from catsdogs.inference.calibrate import held_out_photos
    from catsdogs.training.train import resolve_config

    run = tmp_path / "run"
    config = resolve_config(cfg.TrainConfig(data=str(shards), preset="seed-cifar10",
                                            strategy="multiworker", workers=2, run_dir=str(run)))
    chiefs = load_image_data(config, (32, 32), (0, 2))
    runs.write_json(run / runs.CONFIG_FILE, cfg.run_config_dict(config))
    runs.write_json(run / runs.PHOTOS_FILE, chiefs.photo_roles(False))
    model = types.SimpleNamespace(image_size=(32, 32), class_names=list(TWO_CLASSES), source=run)
    split, _, _ = held_out_photos(run, model)
    assert list(split.paths) == list(chiefs.calibration.paths) and len(split) == 2  # of 4
    older = dataclasses.replace(config, workers=None)  # config.json before workers were recorded
    runs.write_json(run / runs.CONFIG_FILE, cfg.run_config_dict(older))
    with pytest.raises(CatsDogsError, match="does not say how many"):
        held_out_photos(run, model)


def test_a_multiworker_run_resumes_only_with_as_many_workers_as_it_started_with(tmp_path, capsys,
                                                                                 monkeypatch):
    """Each worker's share of the photos is every n-th file: with another n the splits would
    be cut anew (and the chief's resume state would not fit the others' steps)."""
    from catsdogs import config as cfg
    from catsdogs import runs

    run = tmp_path / "run"
    runs.write_json(run / runs.CONFIG_FILE, cfg.run_config_dict(cfg.TrainConfig(
        preset="seed-cifar10", strategy="multiworker", workers=2, run_dir=str(run))))
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": [
        "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]}, "task": {"type": "worker", "index": 0}}))
    line = one_error_line(capsys, main, ["--resume", str(run)])
    assert "trained by 2 workers and would continue with 3" in line and "resume it with 2" in line


@pytest.mark.slow
def test_two_workers_equal_one_process_on_the_global_batches(shards, tmp_path, capsys):
    ports = ",".join(map(str, free_ports(2)))
    run = tmp_path / "run"
    workers = [subprocess.Popen([sys.executable, str(DRIVER), str(tmp_path / f"w{i}.npy"), str(i),
                                 ports, "--", *flags(shards, run, 4, 1e-3, "multiworker")],
                                cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [o[1][-1500:] for o in outputs]
    # one process, global batches of 8 (the two workers' 4 + 4, the same images each step),
    # and the learning rate the two replicas scale to (1e-3 x 2)
    alone = subprocess.run([sys.executable, str(DRIVER), str(tmp_path / "alone.npy"), "--",
                            *flags(shards, tmp_path / "alone", 8, 2e-3, "default")],
                           cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr[-1500:]
    w0, w1, reference = (np.load(tmp_path / name) for name in ("w0.npy", "w1.npy", "alone.npy"))
    np.testing.assert_array_equal(w0, w1)  # both workers end with identical weights
    np.testing.assert_allclose(w0, reference, atol=1e-5)
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == sorted(
        ["calibration.json", "class_names.json", "config.json", "dataset.json", "history.csv",
         "logs", "metrics.json", "model.keras", "photos.json", "plots", "saved_model",
         "skipped.csv"])
    assert "Decoding 12 training images" in outputs[0][1]  # each worker decoded its shard only
    assert json.loads((run / "config.json").read_text())["workers"] == 2
    from catsdogs import cli

    capsys.readouterr()
    assert cli.main(["predict", str(run), str(shards / "validation")]) == 0
    assert "8 classified" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_workers_resume_with_local_workers(shards, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "catsdogs", "train", "--data", str(shards), "--preset",
               "seed-cifar10", "--epochs", "3", "--batch-size", "2", "--run-dir", str(run),
               "--local-workers", "2"]
    launcher = subprocess.Popen(command, cwd=tmp_path, env=ENV, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (run / "history.csv").exists():
        time.sleep(0.1)
    os.killpg(launcher.pid, signal.SIGKILL)  # every worker, mid-run
    launcher.wait(timeout=30)
    assert (run / "history.csv").exists() and not (run / "metrics.json").exists()
    # the worker's own resume state lost (or an epoch behind the chief's: a kill between the
    # two workers' backups): it resumes from the chief's, or the two would run different
    # numbers of steps and the first to finish would leave the other waiting on collectives
    shutil.rmtree(run / "workers", ignore_errors=True)
    resume = [sys.executable, "-m", "catsdogs", "train", "--resume", str(run), "--local-workers", "2"]
    resumed = subprocess.run(resume, cwd=tmp_path, env=ENV, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    history = [int(r) for r in (line.split(",")[0] for line in
                                (run / "history.csv").read_text().splitlines()[1:])]
    assert history == [1, 2, 3]
    assert not (run / "workers").exists()
    import catsdogs

    assert catsdogs.load(run).class_names == ["cats", "dogs"]


def test_the_keras_code_the_patches_stand_on_is_still_there():
    """Fails loudly the day Keras changes what training/distribute.py patches."""
    from keras.src.backend.tensorflow import trainer

    assert "strategy.reduce(\"MEAN\", v, axis=0)" in inspect.getsource(trainer.reduce_per_replica)
    assert "distribute_strategy.reduce(" in inspect.getsource(
        trainer.TensorFlowTrainer._maybe_symbolic_build)
    assert "data_batch" in inspect.signature(trainer.TensorFlowTrainer._symbolic_build).parameters
    assert callable(trainer._collective_all_reduce_multi_worker)


EXPERIMENT = """
import json, os, sys
os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in sys.argv[2].split(",")]},
                                      "task": {"type": "worker", "index": int(sys.argv[1])}})
import tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
import keras, numpy as np
with strategy.scope():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["accuracy"])
data = tf.data.Dataset.from_tensor_slices((np.ones((8, 4), "float32"), np.ones(8, "float32"))).batch(4)
try:
    model.fit(strategy.distribute_datasets_from_function(lambda context: data), epochs=1, verbose=0)
    print("fit worked")
except ValueError as error:
    print("fit failed:", str(error)[:80])
"""


def test_unpatched_keras_still_fails_under_multiworker(tmp_path):
    """keras-team/keras#20585: when this starts passing, Keras has fixed it; drop the patches."""
    script = tmp_path / "experiment.py"
    script.write_text(EXPERIMENT)
    ports = ",".join(map(str, free_ports(2)))
    workers = [subprocess.Popen([sys.executable, str(script), str(i), ports], env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
               for i in range(2)]
    outputs = [w.communicate(timeout=180)[0] for w in workers]
    assert all("fit failed: Attempt to convert a value (PerReplica" in out for out in outputs), outputs


def test_a_worker_that_fails_to_start_stops_those_started(monkeypatch):
    """The second worker's Popen raising (no memory, no such executable) leaves no first
    worker running behind the error."""
    from catsdogs.training import distribute

    class Started:
        def __init__(self):
            self.stopped = self.reaped = False

        def poll(self):
            return 0 if self.stopped else None

        def terminate(self):
            self.stopped = True

        def wait(self, timeout=None):
            self.reaped = True
            return 0

    started = []

    def popen(command, **options):
        if started:
            raise OSError(12, "Cannot allocate memory")
        started.append(Started())
        return started[-1]

    monkeypatch.setattr(distribute, "inside_private_network", lambda: False)
    monkeypatch.setattr(distribute, "private_network_prefix", lambda: None)
    monkeypatch.setattr(subprocess, "Popen", popen)
    with pytest.raises(OSError, match="allocate"):
        distribute.run_local_workers(["--epochs", "1"], 2)
    assert len(started) == 1 and started[0].stopped and started[0].reaped
