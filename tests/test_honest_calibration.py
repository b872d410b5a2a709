"""Probabilities that mean what they say on photos nobody chose on: the temperature is fitted on
photos that chose nothing, kept only where it can be trusted, and an ensemble averages its
members' calibrated probabilities in Keras and in every export."""

import dataclasses
import json

import numpy as np
import pytest

import catsdogs
from catsdogs import config as cfg
from catsdogs.inference import calibrate

from conftest import (THREE_CLASSES, TWO_CLASSES, Interrupt, crash_when_epoch_starts,
                      one_error_line, write_class_images)

QUICK = dict(preset="seed-cifar10", epochs=1, batch_size=8)
pytestmark = pytest.mark.usefixtures("calibration_at_test_scale")


@pytest.fixture
def folders(protocol_folders):
    return protocol_folders


def files(roles, role):
    return set(roles[role]["files"]) if roles[role] else set()


def test_the_temperature_is_never_fitted_on_the_photos_that_chose_the_epoch(folders, tmp_path):
    run = catsdogs.train(catsdogs.TrainConfig(data=str(folders), selection_split=0.25,
                                              keep_epoch="best", run_dir=str(tmp_path / "run"), **QUICK))
    roles = json.loads((run.dir / "photos.json").read_text())
    chose, fitted = files(roles, "chose_the_model"), files(roles, "fitted_the_temperature")
    trained, tested = files(roles, "trained_on"), files(roles, "tested_once")
    assert chose and fitted and not chose & fitted
    assert not (chose | fitted) & trained and not (chose | fitted | trained) & tested
    assert len(chose) + len(fitted) == 10  # the selection split's 25 % of 40, in two halves
    stored = json.loads((run.dir / "calibration.json").read_text())
    assert stored["images"] == len(fitted) and stored["fitted_on"].startswith("calibration")


def test_keeping_the_last_epoch_calibrates_on_the_whole_selection_split(folders, tmp_path):
    run = catsdogs.train(catsdogs.TrainConfig(data=str(folders), selection_split=0.25,
                                              keep_epoch="last", epochs=2, preset="seed-cifar10",
                                              batch_size=8, run_dir=str(tmp_path / "run")))
    roles = json.loads((run.dir / "photos.json").read_text())
    assert roles["chose_the_model"] is None  # the last epoch: nothing chosen on held-out photos
    assert files(roles, "fitted_the_temperature") == files(roles, "monitored_only")
    assert len(files(roles, "fitted_the_temperature")) == 10
    assert run.metrics["kept"] == "last" and run.metrics["kept_epoch"] == 2
    assert run.metrics["kept_val_accuracy"] == pytest.approx(
        float(run.history[-1]["val_accuracy"]))


def test_patience_chooses_the_stop_so_photos_are_set_aside_even_when_keeping_the_last(folders):
    from catsdogs.data.datasets import load_image_data

    config = catsdogs.TrainConfig(data=str(folders), selection_split=0.25, keep_epoch="last",
                                  patience=2, preset="seed-cifar10")
    data = load_image_data(config, (32, 32))
    assert len(data.val) + len(data.calibration) == 10 and len(data.calibration) == 4
    assert not set(data.val.paths) & set(data.calibration.paths)


def test_too_few_held_out_photos_for_a_temperature_are_all_left_to_choose_the_model(
        folders, monkeypatch, capsys):
    """Setting aside photos for a temperature that would be refused (too few) would only halve
    the photos that choose the epoch: below the minimum none are set aside."""
    from catsdogs.data import datasets

    config = catsdogs.TrainConfig(data=str(folders), selection_split=0.25, keep_epoch="best",
                                  preset="seed-cifar10")
    monkeypatch.setattr(datasets, "MIN_CALIBRATION_IMAGES", 6)  # half of 10 is 5 photos
    data = datasets.load_image_data(config, (32, 32))
    assert data.calibration is None and len(data.val) == 10
    assert "fewer than the 6 a temperature needs: none set aside" in capsys.readouterr().err
    monkeypatch.setattr(datasets, "MIN_CALIBRATION_IMAGES", 5)
    data = datasets.load_image_data(config, (32, 32))
    assert (len(data.val), len(data.calibration)) == (6, 4)  # 2 of each class's 5
    # a run started before the minimum (config.json: 0) keeps setting its share aside
    old = datasets.load_image_data(dataclasses.replace(config, calibration_minimum=0), (32, 32))
    assert len(old.calibration) == 4


def test_a_refit_with_too_few_held_out_photos_is_refused_before_training(folders, tmp_path,
                                                                          capsys, monkeypatch):
    from catsdogs.commands.train import main
    from catsdogs.data import datasets

    monkeypatch.setattr(datasets, "MIN_CALIBRATION_IMAGES", 100)  # the real minimum

    line = one_error_line(capsys, main, [
        "--data", str(folders), "--selection-split", "0.25", "--keep-epoch", "best",
        "--refit", "--preset", "seed-cifar10", "--epochs", "1", "--run-dir", str(tmp_path / "r")],
        alone=False)
    assert "--refit" in line and "at least 100 photos set aside" in line and "of the 10" in line
    assert not (tmp_path / "r" / "model.keras").exists()


def well_calibrated(n, seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, (n, 1))
    return p, (rng.uniform(size=n) < p[:, 0]).astype(int)


def test_too_few_photos_keep_t_1_and_say_why():
    p, labels = well_calibrated(calibrate.MIN_CALIBRATION_IMAGES - 1, seed=0)
    report = calibrate.calibration_report(p ** 3, labels)  # over-confident, but too few photos
    assert report["temperature"] == 1.0 and report["fitted_temperature"] is None
    assert f"fewer than the {calibrate.MIN_CALIBRATION_IMAGES}" in report["decision"]


def test_a_fit_at_the_search_bound_keeps_t_1_and_says_why():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    confident = np.where(rng.uniform(size=(300, 1)) < 0.5, 0.99, 0.01)  # sure, and random
    report = calibrate.calibration_report(confident, labels)
    assert report["fitted_temperature"] == pytest.approx(calibrate.TEMPERATURE_BOUNDS[1], rel=0.02)
    assert report["temperature"] == 1.0 and "bound" in report["decision"]
    assert report["ece_after"] == report["ece_before"]


def test_a_temperature_that_raises_held_out_nll_is_dropped():
    p, labels = well_calibrated(120, seed=5)  # calibrated already: any T fits noise
    report = calibrate.calibration_report(p, labels)
    assert report["fitted_temperature"] == pytest.approx(0.74, abs=0.01)  # far from 1, yet
    check = report["cross_check"]
    assert check["nll_cross_fitted"] >= check["nll_raw"]
    assert report["temperature"] == 1.0 and "raised" in report["decision"]
    assert report["ece_after_cross_fitted"] == report["ece_before"]  # T = 1 fitted nothing


def test_a_temperature_that_lowers_held_out_nll_is_kept():
    p, labels = well_calibrated(400, seed=1)
    sharp = calibrate.apply_temperature(p, 0.4)  # over-confident: T near 2.5 undoes it
    report = calibrate.calibration_report(sharp, labels)
    assert report["temperature"] == pytest.approx(2.5, rel=0.25)
    assert report["cross_check"]["nll_cross_fitted"] < report["cross_check"]["nll_raw"]
    assert report["nll_after"] < report["nll_before"]
    # the ECE after, on photos T was not fitted on: lower than before, and no lower than on
    # the photos that fitted it (which flatter it)
    assert report["ece_after"] <= report["ece_after_cross_fitted"] < report["ece_before"]


def test_an_old_run_folder_without_the_new_settings_resumes_and_predicts(folders, tmp_path,
                                                                          monkeypatch):
    run_dir = tmp_path / "old"
    crash_when_epoch_starts(monkeypatch, 1)
    with pytest.raises(Interrupt):
        catsdogs.train(catsdogs.TrainConfig(data=str(folders), selection_split=0.25,
                                            preset="seed-cifar10", epochs=2, batch_size=8,
                                            run_dir=str(run_dir)))
    config = json.loads((run_dir / "config.json").read_text())
    for key in ("keep_epoch", "calibration_split"):  # as a catsdogs before them wrote it
        del config[key]
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "photos.json").unlink()  # written since, by a catsdogs that had both settings
    assert cfg.read_run_config(run_dir / "config.json").calibration_split == 0.0
    monkeypatch.undo()
    run = catsdogs.resume(run_dir)
    assert run.metrics["kept"] == "best" and run.metrics["calibration_images"] == 0
    assert "no held-out photos were set aside" in run.metrics["temperature_decision"]
    rows, _ = catsdogs.load(run_dir).predict_folder(folders / "validation")
    assert len(rows) == 12
    report = catsdogs.evaluate(catsdogs.load(run_dir), folders / "validation",
                               out=tmp_path / "eval")
    assert 0 <= report["accuracy"] <= 1


# ---------------------------------------------------------------- ensembles


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two one-epoch runs of different seeds, each given its own temperature."""
    root = tmp_path_factory.mktemp("ensemble")
    data = root / "images"
    write_class_images(data / "train", TWO_CLASSES, 12, size=(32, 32), seed=1)
    write_class_images(data / "validation", TWO_CLASSES, 6, size=(32, 32), seed=2)
    dirs = []
    for seed, temperature in ((1, 0.6), (2, 1.7)):
        run = catsdogs.train(catsdogs.TrainConfig(data=str(data), seed=seed,
                                                  run_dir=str(root / f"seed{seed}"), **QUICK))
        (run.dir / "calibration.json").write_text(json.dumps({"temperature": temperature}))
        dirs.append(run.dir)
    return data, dirs


def test_an_ensemble_is_the_mean_of_its_members_calibrated_probabilities(members, tmp_path):
    from catsdogs.inference.ensemble import write_ensemble
    from catsdogs.data.datasets import load_labelled_folder

    data, dirs = members
    out = write_ensemble(dirs, tmp_path / "ensemble")
    _, split = load_labelled_folder(data / "validation", (32, 32))
    pixels = split.pixels.astype(np.float32)
    loaded = [catsdogs.load(d) for d in dirs]
    assert sorted(m.temperature for m in loaded) == [0.6, 1.7]
    expected = np.mean([m.probabilities(pixels) for m in loaded], axis=0)
    ensemble = catsdogs.load(out)
    assert ensemble.temperature == 1.0  # the members' temperatures are inside
    assert np.abs(ensemble.probabilities(pixels) - expected).max() < 1e-4
    written = catsdogs.export(ensemble, ["saved_model", "tflite", "onnx"], tmp_path / "exports")
    for path in written.values():
        exported = catsdogs.load(path)
        assert np.abs(exported.probabilities(pixels) - expected).max() < 1e-4, path


def test_an_ensemble_explains_with_its_members_mean_heatmap(members, tmp_path):
    from catsdogs.inference.ensemble import write_ensemble
    from catsdogs.inference.explain import ensemble_members, gradcam

    data, dirs = members
    ensemble = catsdogs.load(write_ensemble(dirs, tmp_path / "ensemble"))
    assert len(ensemble_members(ensemble.model)) == 2
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    heatmaps, explained = gradcam(ensemble.model, pixels)
    assert heatmaps.shape[0] == 3 and np.isfinite(heatmaps).all()
    assert list(explained) == list(ensemble.probabilities(pixels).argmax(axis=1))
    each = [gradcam(member, pixels, explained)[0] for member in ensemble_members(ensemble.model)]
    assert not np.allclose(each[0], each[1])  # two members that see differently
    np.testing.assert_allclose(heatmaps, np.mean(each, axis=0), rtol=1e-5, atol=1e-6)


def test_an_ensemble_of_runs_with_other_classes_is_one_error_line(members, tmp_path, capsys):
    from catsdogs.commands.ensemble import main

    data, dirs = members
    fruit = write_class_images(tmp_path / "fruit", THREE_CLASSES, 6, size=(32, 32))
    other = catsdogs.train(catsdogs.TrainConfig(data=str(fruit), run_dir=str(tmp_path / "fruit-run"),
                                                **QUICK))
    capsys.readouterr()
    line = one_error_line(capsys, main, [str(dirs[0]), str(other.dir), "--out",
                                         str(tmp_path / "mixed")], alone=False)
    assert "classes" in line and "fruit-run" in line
    assert not (tmp_path / "mixed").exists()



def test_an_ensemble_naming_a_run_twice_is_one_error_line(members, tmp_path, capsys):
    from catsdogs.commands.ensemble import main

    _, dirs = members
    line = one_error_line(capsys, main, [str(dirs[0]), str(dirs[1]), f"{dirs[0]}/", "--out",
                                         str(tmp_path / "twice")])
    assert "the same run is named twice" in line
    assert not (tmp_path / "twice").exists()


def test_train_seeds_killed_in_a_seeds_first_epoch_continues_with_the_same_command(
        folders, tmp_path, monkeypatch, capsys):
    """The second seed's folder holds config.json and no finished epoch: the same command
    trains that seed again instead of refusing its folder."""
    from catsdogs.commands.train import main

    out = tmp_path / "seeds"
    argv = ["--data", str(folders), "--preset", "seed-cifar10", "--epochs", "1",
            "--batch-size", "8", "--selection-split", "0.25", "--seeds", "2", "--run-dir",
            str(out), "--quiet"]
    from catsdogs.training import callbacks

    original, begun = callbacks.HistoryCSV.on_epoch_begin, []

    def begin(self, epoch, logs=None):  # the second seed's first epoch: killed
        begun.append(epoch)
        if len(begun) == 2:
            raise Interrupt("killed in the second seed's first epoch")
        original(self, epoch, logs)

    mine = tmp_path / "mine"  # a user's folder: --seeds would replace its ensemble/ whole
    (mine / "ensemble").mkdir(parents=True)
    (mine / "ensemble" / "notes.txt").write_text("mine")
    line = one_error_line(capsys, main, [*argv[:-2], str(mine)])
    assert "not empty (it holds ensemble)" in line and "--run-dir" in line
    monkeypatch.setattr(callbacks.HistoryCSV, "on_epoch_begin", begin)
    assert main(argv) != 0  # the command's internal-error line, as for any crash
    assert (out / "seed-43" / "config.json").exists()
    assert not (out / "seed-43" / "history.csv").exists() or not (
        (out / "seed-43" / "history.csv").read_text().count("\n") > 1)
    assert main(argv) == 0
    result = json.loads((out / "seeds.json").read_text())
    assert [row["seed"] for row in result["runs"]] == [42, 43] and len(begun) == 3


@pytest.mark.slow
def test_train_seeds_leaves_the_members_their_spread_and_their_ensemble(folders, tmp_path, capsys):
    from catsdogs.commands.train import main

    out = tmp_path / "seeds"
    argv = ["--data", str(folders), "--preset", "seed-cifar10", "--epochs", "1",
            "--batch-size", "8", "--selection-split", "0.25", "--seeds", "2", "--run-dir", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "seeds.json").read_text())
    assert [row["seed"] for row in result["runs"]] == [42, 43]
    tests = [row["test_accuracy"] for row in result["runs"]]
    assert result["test_accuracy_mean"] == pytest.approx(np.mean(tests))
    assert result["test_accuracy_std"] == pytest.approx(np.std(tests, ddof=1))
    assert "± " in printed and (out / "ensemble" / "model.keras").exists()
    ensemble = catsdogs.load(out / "ensemble")
    assert len(ensemble.class_names) == 2
    # one split seed for every member: the same photos held out, so the ensemble calibrates
    # on photos none of them trained or chose on (here too few to keep a temperature)
    roles = [json.loads((out / f"seed-{seed}" / "photos.json").read_text()) for seed in (42, 43)]
    assert files(roles[0], "fitted_the_temperature") == files(roles[1], "fitted_the_temperature")
    assert [json.loads((out / f"seed-{seed}" / "config.json").read_text())["split_seed"]
            for seed in (42, 43)] == [42, 42]
    calibration = json.loads((out / "ensemble" / "calibration.json").read_text())
    assert "held out by every member" in calibration["fitted_on"]
    assert calibration["images"] == len(files(roles[0], "fitted_the_temperature")) > 0
    assert "fewer than the 100" in calibration["decision"]
    # the ensemble's own photos.json: what its members trained and chose on, what fitted its T
    kept = json.loads((out / "ensemble" / "photos.json").read_text())
    assert files(kept, "trained_on") == files(roles[0], "trained_on") | files(roles[1], "trained_on")
    assert files(kept, "fitted_the_temperature") == files(roles[0], "fitted_the_temperature")
    assert files(kept, "tested_once") == files(roles[0], "tested_once")
    capsys.readouterr()
    catsdogs.evaluate(ensemble, folders / "train", out=tmp_path / "on-train")
    assert "trained it" in capsys.readouterr().err  # figures on photos the members trained on
    # photos added to the folder since: the split moves, so the held-out photos are not found
    # again as they were, and the ensemble keeps T = 1 rather than fit on photos members saw
    from catsdogs.inference.ensemble import write_ensemble

    write_class_images(folders / "train", TWO_CLASSES, 24, size=(32, 32), seed=9)
    moved = write_ensemble(sorted(out.glob("seed-*")), tmp_path / "after-a-change")
    decision = json.loads((moved / "calibration.json").read_text())["decision"]
    assert decision.startswith("kept T = 1: the data folder changed"), decision
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/model.keras")}
    assert main(argv) == 0  # again: every seed finished, nothing trains, the ensemble is kept
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/model.keras")} == mtimes
    (out / "ensemble" / "photos.json").unlink()  # as an older catsdogs wrote it: written again
    assert main(argv) == 0 and (out / "ensemble" / "photos.json").exists()
    # one seed more: the ensemble is written again with the three, as seeds.json says
    assert main([*argv[:-4], "--seeds", "3", *argv[-2:]]) == 0
    members = json.loads((out / "ensemble" / "ensemble.json").read_text())["members"]
    assert members == [str(out / f"seed-{seed}") for seed in (42, 43, 44)]
    assert [row["seed"] for row in json.loads((out / "seeds.json").read_text())["runs"]] == [
        42, 43, 44]


def test_an_ensemble_calibrates_only_on_photos_every_member_held_out_and_none_used(tmp_path):
    from catsdogs.inference.ensemble import shared_held_out_photos

    def member(name, trained, fitted, chose=None):
        folder = tmp_path / name
        folder.mkdir()
        role = lambda paths: {"files": paths} if paths else None  # noqa: E731
        (folder / "photos.json").write_text(json.dumps({
            "trained_on": role(trained), "chose_the_model": role(chose),
            "fitted_the_temperature": role(fitted)}))
        return folder

    a = member("a", ["t1", "t2"], ["h1", "h2"])
    b = member("b", ["t2", "t1"], ["h2", "h1"], chose=["c1"])
    assert shared_held_out_photos([a, b]) == (["h1", "h2"], None)
    other_split = member("c", ["t1", "h1"], ["t2", "h2"])
    held, why = shared_held_out_photos([a, other_split])
    assert held is None and "different photos" in why
    chose_on_them = member("d", ["t1", "t2"], ["h1", "h2"], chose=["h1"])
    held, why = shared_held_out_photos([a, chose_on_them])
    assert held is None and "trained or chose" in why
    (tmp_path / "old").mkdir()
    held, why = shared_held_out_photos([a, tmp_path / "old"])
    assert held is None and "older run" in why


def test_an_ensembles_photo_roles_are_its_members_and_none_where_one_records_none(tmp_path):
    from catsdogs.inference.ensemble import ensemble_photo_roles

    def member(name, roles):
        (tmp_path / name).mkdir()
        (tmp_path / name / "photos.json").write_text(json.dumps(
            {role: {"files": paths} for role, paths in roles.items()}))
        return tmp_path / name

    a = member("a", {"trained_on": ["t1", "t2"], "fitted_the_temperature": ["h1"],
                     "tested_once": ["x1"]})
    b = member("b", {"trained_on": ["t3"], "chose_the_model": ["c1"],
                     "fitted_the_temperature": ["h1"], "tested_once": ["x1"]})
    roles = ensemble_photo_roles([a, b], fitted=["h1"])
    assert {role: files(roles, role) for role in roles} == {
        "trained_on": {"t1", "t2", "t3"}, "chose_the_model": {"c1"},
        "fitted_the_temperature": {"h1"}, "tested_once": {"x1"}}
    assert files(ensemble_photo_roles([a, b], fitted=[]), "fitted_the_temperature") == set()
    (tmp_path / "old").mkdir()  # a member of a version before photos.json
    assert ensemble_photo_roles([a, tmp_path / "old"], fitted=[]) is None


def test_refit_trains_on_the_union_for_the_chosen_epochs_and_keeps_the_temperatures_photos_out(
        folders, tmp_path):
    run = catsdogs.train(catsdogs.TrainConfig(data=str(folders), selection_split=0.25,
                                              keep_epoch="best", refit=True, epochs=2,
                                              preset="seed-cifar10", batch_size=8,
                                              run_dir=str(tmp_path / "run")))
    parent = json.loads((run.dir / "photos.json").read_text())
    refit_dir = run.dir / "refit"
    child = json.loads((refit_dir / "photos.json").read_text())
    assert files(child, "trained_on") == files(parent, "trained_on") | files(parent, "chose_the_model")
    assert files(child, "fitted_the_temperature") == files(parent, "fitted_the_temperature")
    assert not files(child, "trained_on") & files(child, "fitted_the_temperature")
    assert child["chose_the_model"] is None  # the refit keeps its last epoch
    assert not files(child, "trained_on") & files(parent, "tested_once")
    refit_metrics = json.loads((refit_dir / "metrics.json").read_text())
    assert refit_metrics["epochs_run"] == run.metrics["kept_epoch"]
    assert json.loads((run.dir / "metrics.json").read_text())["refit"] == str(refit_dir)
    assert refit_metrics["train_images"] == len(files(child, "trained_on")) == 36
    assert refit_metrics["validation_images"] == parent["fitted_the_temperature"]["count"]


@pytest.mark.parametrize("kept, head, fine_tune", [(4, 2, 2), (1, 1, 0), (2, 2, 0)])
def test_a_two_stage_runs_refit_trains_both_stages_up_to_the_kept_epoch(
        tmp_path, monkeypatch, kept, head, fine_tune):
    """Kept epoch 4 of 2 head + 3 fine-tuning epochs: the refit trains 2 + 2; kept in stage
    one: that stage alone."""
    import types

    from catsdogs.training import train

    trained = []
    monkeypatch.setattr(train, "train", lambda config: trained.append(config) or
                        types.SimpleNamespace(dir=tmp_path / "refit"))
    run = types.SimpleNamespace(
        config=catsdogs.TrainConfig(epochs=2, fine_tune_epochs=3, refit=True, keep_epoch="best"),
        metrics={"kept_epoch": kept}, dir=tmp_path)
    train._refit(run)
    assert (trained[0].epochs, trained[0].fine_tune_epochs) == (head, fine_tune)
    assert trained[0].total_epochs == kept and not trained[0].refit


def test_serve_answers_with_an_ensemble_as_with_one_run(members, tmp_path):
    import base64

    from fastapi.testclient import TestClient

    from catsdogs.inference.ensemble import write_ensemble
    from catsdogs.serve.app import ServeConfig, create_app

    data, dirs = members
    ensemble = catsdogs.load(write_ensemble(dirs, tmp_path / "ensemble"))
    photo = next((data / "validation" / "cats").glob("*.png"))
    client = TestClient(create_app(ensemble, ServeConfig()))
    answer = client.post("/v1/models/catsdogs:predict", json={"instances": [
        {"b64": base64.b64encode(photo.read_bytes()).decode()}]})
    assert answer.status_code == 200
    served = answer.json()["predictions"][0]
    rows, _ = ensemble.predict_folder(photo)
    assert served["class_name"] == rows[0].predicted
    assert max(served["probabilities"]) == pytest.approx(rows[0].probability, abs=1e-5)


def test_finish_run_keeps_finished_runs_and_never_empties_a_folder_it_did_not_start(
        tmp_path, monkeypatch):
    """The three states a command's own run can be left in, without training: finished (a
    kill between metrics.json and the backup's removal included), started with no epoch
    ended (emptied, then trained), and a folder with no run in it (trained into, its files
    kept)."""
    from catsdogs.training import train

    trained, resumed = [], []
    monkeypatch.setattr(train, "train", lambda config, **kwargs: trained.append(config.run_dir))
    monkeypatch.setattr(train, "resume", lambda run_dir, **kwargs: resumed.append(run_dir))
    finished, started, users = (tmp_path / name for name in ("finished", "started", "users"))
    (finished / "checkpoints").mkdir(parents=True)
    (finished / "metrics.json").write_text("{}")
    (started / "logs").mkdir(parents=True)
    (started / "config.json").write_text("{}")
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    for folder in (finished, started, users):
        train.finish_run(cfg.TrainConfig(run_dir=str(folder)))
    assert not (finished / "checkpoints").exists() and (finished / "metrics.json").exists()
    assert not (started / "config.json").exists() and not (started / "logs").exists()
    assert (users / "notes.txt").read_text() == "mine"
    assert trained == [str(started), str(users)] and resumed == []


def test_calibrate_without_photos_of_its_own_on_a_run_that_set_none_aside_is_one_line(
        folders, tmp_path, capsys, monkeypatch):
    """Its held-out photos all chose the epoch (too few to set any aside): a temperature fitted
    on them would be too sharp, so calibrate asks for other photos rather than use them."""
    from catsdogs.commands.calibrate import main as calibrate_main
    from catsdogs.data import datasets

    monkeypatch.setattr(datasets, "MIN_CALIBRATION_IMAGES", 100)  # the real minimum
    run = catsdogs.train(catsdogs.TrainConfig(data=str(folders), selection_split=0.25,
                                              keep_epoch="best", run_dir=str(tmp_path / "run"),
                                              **QUICK))
    assert run.config.calibration_minimum == 100
    capsys.readouterr()
    line = one_error_line(capsys, calibrate_main, [str(run.dir)], alone=False)
    assert "every held-out photo of this run chose its epoch" in line and "DATA_DIR" in line
