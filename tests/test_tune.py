"""catsdogs tune: KerasTuner's oracles choose, each trial is an ordinary run folder scored on
its selection split, the test split is read once, a killed search resumes, a budget stops it."""

import csv
import dataclasses
import json

import keras_tuner
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from catsdogs import cli
from catsdogs import config as cfg
from catsdogs.errors import CatsDogsError
from conftest import Interrupt, one_error_line

# seed-cifar10 at 32x32, one or two epochs, small batches: a trial takes seconds
SPACE = {"epochs": ["int", 1, 2], "batch_size": ["choice", 8, 16], "width": ["choice", 0.5, 1.0]}


def tune_argv(data, folder, space_file, *more):
    return ["tune", "--data", str(data), "--preset", "seed-cifar10", "--search", "random",
            "--space", str(space_file), "--run-dir", str(folder), "--quiet", *more]


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps(SPACE))
    return path


def hparams_of(log_dir):
    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    for content in events.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            return {name: getattr(value, value.WhichOneof("kind"))
                    for name, value in data.session_start_info.hparams.items()}
    return None


def count_test_reads(monkeypatch):
    from catsdogs.training import train

    reads = []
    original = train.test_once

    def counted(model, data):
        reads.append(len(data.test))
        return original(model, data)

    monkeypatch.setattr(train, "test_once", counted)
    return reads


def count_decodes(monkeypatch):
    from catsdogs.data import datasets

    loads = []
    original = datasets._load_sources

    def counted(*args):
        loads.append(args[1])
        return original(*args)

    monkeypatch.setattr(datasets, "_load_sources", counted)
    return loads


@pytest.mark.slow
def test_three_trials_write_run_folders_table_hparams_and_a_best_json_train_accepts(
        protocol_folders, space_file, tmp_path, capsys, monkeypatch):
    reads = count_test_reads(monkeypatch)
    decodes = count_decodes(monkeypatch)
    folder = tmp_path / "tune"
    assert cli.main(tune_argv(protocol_folders, folder, space_file, "--trials", "3")) == 0
    out = capsys.readouterr().out
    trials = sorted(folder.glob("trial-*"))
    assert [t.name for t in trials] == ["trial-0", "trial-1", "trial-2"]
    for trial in trials:
        config = cfg.read_run_config(trial / "config.json")
        metrics = json.loads((trial / "metrics.json").read_text())
        assert config.selection_split == 0.15 and config.epochs in (1, 2)
        assert "test_accuracy" not in metrics  # scored on the selection split only
        assert hparams_of(trial / "logs")["batch_size"] == config.batch_size
    rows = list(csv.DictReader((folder / "trials.csv").open()))
    assert [r["trial"] for r in rows] == ["0", "1", "2"]
    assert all(r["status"] == "complete" and 0 <= float(r["selection_accuracy"]) <= 1
               for r in rows)
    table = [line.split()[0] for line in out.splitlines() if line.split()[:1] in (["0"], ["1"], ["2"])]
    assert table == ["0", "1", "2"] and "selection" in out  # printed as the trials finished
    assert "Best val_accuracy" not in out and out.count("TensorBoard:") == 1  # trials: stderr
    summary = json.loads((folder / "tune.json").read_text())
    assert reads == [12] and summary["test_images"] == 12  # the test split, once, at the end
    assert len(decodes) == 1  # the photos decoded for the first trial, reused by the others
    preset_row = next(r for r in rows if r["trial"] == summary["preset_trial"])
    assert summary["preset_trial"] == "0"  # the first trial ran the preset's recipe
    assert summary["preset_selection_accuracy"] == float(preset_row["selection_accuracy"])
    assert f"The preset's recipe (trial 0): selection accuracy" in out
    best = summary["best_run"]
    assert summary["selection_accuracy"] == max(float(r["selection_accuracy"]) for r in rows)
    # the same command again: nothing is trained, and the test split is not read again
    assert cli.main(tune_argv(protocol_folders, folder, space_file, "--trials", "3")) == 0
    assert reads == [12] and json.loads((folder / "tune.json").read_text())["best_run"] == best
    # best.json is a settings file train takes as it is: the best trial's settings
    from catsdogs.commands import train as train_command

    args = train_command.build_parser().parse_args(["--config", str(folder / "best.json")])
    again = train_command.config_from_args(args)
    assert again == dataclasses.replace(cfg.read_run_config(f"{best}/config.json"), run_dir=None,
                                        selection_chooses_runs=False)  # a run of its own


@pytest.mark.slow
def test_a_search_killed_in_its_second_trial_resumes_it_and_ends_with_three(
        protocol_folders, tmp_path, monkeypatch, capsys):
    from catsdogs.training import callbacks

    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps({**SPACE, "epochs": 2}))
    started = []
    original = callbacks.HistoryCSV.on_epoch_begin

    def begin(self, epoch, logs=None):  # the second trial's second epoch crashes, once
        started.append((self.path.parent.name, epoch))
        if started[-1] == ("trial-1", 1) and started.count(started[-1]) == 1:
            raise Interrupt("simulated crash in the second trial")
        original(self, epoch, logs)

    monkeypatch.setattr(callbacks.HistoryCSV, "on_epoch_begin", begin)

    def in_place(path, obj):  # KerasTuner's own writer, which a kill can leave torn
        pytest.fail(f"{path} written in place")

    monkeypatch.setattr(keras_tuner.src.utils, "save_json", in_place)
    folder = tmp_path / "tune"
    argv = tune_argv(protocol_folders, folder, space_file, "--trials", "3")
    assert cli.main(argv) == 1  # the crash stops the search
    assert not (folder / "trial-1" / "metrics.json").exists() and not (folder / "trial-2").exists()
    state = folder / "keras_tuner" / "trial_0" / "trial.json"
    whole = state.read_bytes()
    state.write_bytes(whole[:len(whole) // 2])  # as a kill left it before they were written whole
    capsys.readouterr()
    line = one_error_line(capsys, cli.main, argv, exit_code=2)
    assert "state file is torn" in line and str(state) in line and "new --run-dir" in line
    state.write_bytes(whole)
    leftover = state.parent.parent / ".oracle.json.tmp-99999.json"  # a whole write, killed
    leftover.write_text('{"ongoing_trials": ')
    assert cli.main(argv) == 0
    assert not leftover.exists()
    assert [s for s in started if s[0] == "trial-1"] == [("trial-1", 0), ("trial-1", 1),
                                                          ("trial-1", 1)]  # resumed, not redone
    assert [s for s in started if s[0] == "trial-0"] == [("trial-0", 0), ("trial-0", 1)]
    rows = list(csv.DictReader((folder / "trials.csv").open()))
    assert sorted(r["trial"] for r in rows) == ["0", "1", "2"]
    assert all((folder / f"trial-{i}" / "metrics.json").exists() for i in range(3))
    assert len(list(csv.DictReader((folder / "trial-1" / "history.csv").open()))) == 2
    assert json.loads((folder / "keras_tuner" / "trial_1" / "trial.json").read_text())[
        "status"] == "COMPLETED"  # the state files, written whole, still KerasTuner's


@pytest.mark.usefixtures("calibration_at_test_scale")
def test_a_trial_that_keeps_its_last_epoch_fits_its_temperature_on_photos_that_chose_no_trial(
        protocol_folders, space_file, tmp_path):
    """The selection split chooses the trial even where the run keeps its last epoch: the
    temperature's photos are set aside from it, as when it chooses the epoch."""
    folder = tmp_path / "tune"
    assert cli.main(tune_argv(protocol_folders, folder, space_file, "--trials", "1",
                              "--keep-epoch", "last")) == 0
    roles = json.loads((folder / "trial-0" / "photos.json").read_text())
    chose, fitted = (set(roles[role]["files"]) for role in ("chose_the_model",
                                                            "fitted_the_temperature"))
    assert chose and fitted and not chose & fitted and roles["monitored_only"] is None
    assert "selection_chooses_runs" not in json.loads((folder / "best.json").read_text())


def test_the_budget_stops_the_search_on_time(protocol_folders, tmp_path, monkeypatch):
    from catsdogs.training import tune

    now = [0.0]

    def clock():  # every look at the clock: 10 s later
        now[0] += 10
        return now[0]

    monkeypatch.setattr(tune, "clock", clock)
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps({**SPACE, "epochs": 3}))
    folder = tmp_path / "tune"
    # 0.5 minutes: the first trial starts, its first epochs pass the deadline, nothing follows
    assert cli.main(tune_argv(protocol_folders, folder, space_file, "--budget", "0.5")) == 0
    assert [t.name for t in folder.glob("trial-*")] == ["trial-0000"]
    metrics = json.loads((folder / "trial-0000" / "metrics.json").read_text())
    assert metrics["epochs_run"] < metrics["epochs_planned"] == 3
    rows = list(csv.DictReader((folder / "trials.csv").open()))
    assert [r["status"] for r in rows] == ["partial"]
    assert json.loads((folder / "tune.json").read_text())["seconds_spent"] >= 30


def test_the_final_step_trains_the_best_recipe_for_its_minutes_and_is_the_one_tested(
        protocol_folders, space_file, tmp_path, capsys, monkeypatch):
    reads = count_test_reads(monkeypatch)
    folder = tmp_path / "tune"
    argv = tune_argv(protocol_folders, folder, space_file, "--trials", "1", "--final", "0.05")
    assert cli.main(argv) == 0
    summary = json.loads((folder / "tune.json").read_text())
    best = cfg.read_run_config(folder / "trial-0" / "config.json")
    trial = json.loads((folder / "trial-0" / "metrics.json").read_text())
    epochs = max(best.epochs, int(0.05 * 60 // (trial["train_seconds"] / trial["epochs_run"])))
    final = cfg.read_run_config(folder / "final" / "config.json")
    assert final == dataclasses.replace(best, epochs=epochs, run_dir=str(folder / "final"))
    assert len(list(csv.DictReader((folder / "final" / "history.csv").open()))) == epochs
    assert summary["final_epochs"] == epochs and summary["tested_run"] == str(folder / "final")
    assert reads == [12]  # the test split once, for the final model, not for the trial
    assert "test_accuracy" not in json.loads((folder / "final" / "metrics.json").read_text())
    assert json.loads((folder / "best.json").read_text())["epochs"] == epochs
    assert "Final:       its recipe for" in capsys.readouterr().out
    assert cli.main(argv) == 0 and reads == [12]  # finished: nothing trained or read again
    argv[-1] = "0.2"  # another --final: its folder holds the other one, which is not overwritten
    assert "final" in one_error_line(capsys, cli.main, argv, alone=False)  # after progress lines
    assert json.loads((folder / "tune.json").read_text())["final_epochs"] == epochs


def test_a_searched_image_size_is_the_size_each_trial_trains_and_saves_at(protocol_folders,
                                                                            tmp_path):
    import keras

    space = tmp_path / "space.json"  # fast-cifar10 takes any size: 32 px, 40 or 48 searched
    space.write_text(json.dumps({"epochs": 1, "batch_size": 8, "width": 0.5,
                                 "image_size": ["choice", 40, 48]}))
    folder = tmp_path / "tune"
    argv = tune_argv(protocol_folders, folder, space, "--trials", "2")
    argv[argv.index("seed-cifar10")] = "fast-cifar10"
    assert cli.main(argv) == 0
    for trial in ("trial-0", "trial-1"):
        side = json.loads((folder / trial / "config.json").read_text())["image_size"]
        model = keras.saving.load_model(folder / trial / "model.keras", compile=False)
        assert side in (40, 48) and model.input_shape == (None, side, side, 3)
    # the first trial is the preset's recipe, brought into the range: its 32 px is not there
    assert json.loads((folder / "trial-0" / "config.json").read_text())["image_size"] == 40


def test_the_final_steps_epochs_fill_its_minutes_at_the_trials_speed(tmp_path):
    import types

    from catsdogs.training import tune

    (tmp_path / "metrics.json").write_text(json.dumps({"train_seconds": 20.0, "epochs_run": 10}))
    best = cfg.TrainConfig(epochs=12, run_dir=str(tmp_path))
    plan = types.SimpleNamespace(final=1.0, folder=tmp_path / "tune")
    assert tune.final_config(plan, tmp_path, best).epochs == 30  # 60 s at 2 s an epoch
    assert tune.final_config(plan, tmp_path, best).run_dir == str(tmp_path / "tune" / "final")
    plan.final = 0.1  # 3 epochs fit: never fewer than the trial planned
    assert tune.final_config(plan, tmp_path, best).epochs == 12
    plan.final = 1.0  # a two-stage recipe keeps its 8 fine-tuning epochs: the head gets 22
    two_stage = tune.final_config(plan, tmp_path, cfg.TrainConfig(epochs=2, fine_tune_epochs=8))
    assert (two_stage.epochs, two_stage.fine_tune_epochs) == (22, 8)


def test_the_range_declared_beside_a_setting_is_the_one_searched():
    from catsdogs.models.presets import get_preset
    from catsdogs.training import space, tune
    from catsdogs.training.train import resolve_config

    base = resolve_config(cfg.TrainConfig(preset="fast-catsdogs", selection_split=0.15))
    plan = tune.Search(base, space.preset_ranges(base, get_preset(base.preset)), None,
                       search="random", trials=2)
    searched = {hp.name: hp for hp in tune.make_oracle(plan).get_space().space}
    declared = {f.name: f.metadata["search"]
                for cls in (cfg.TrainConfig, cfg.AugmentConfig) for f in dataclasses.fields(cls)
                if f.metadata.get("search")}
    one_stage = set(declared) - {"fine_tune_learning_rate"}  # no second stage, no rate of its own
    assert set(searched) == one_stage - {"ema"} or set(searched) == one_stage
    for name, (kind, *values) in declared.items():
        if name not in searched:
            continue
        hp = searched[name]
        if kind == "choice" and all(isinstance(v, bool) for v in values):
            assert type(hp).__name__ == "Boolean", name  # True and False, not 1 and 0
        elif kind == "choice":
            assert list(hp.values) == values, name
        elif kind == "scale":
            preset_value = space.setting_value(base, name)
            lo, hi = preset_value * values[0], preset_value * values[1]
            if isinstance(preset_value, int):
                lo, hi = round(lo), round(hi)
            assert (hp.min_value, hp.max_value) == pytest.approx((lo, hi)), name
        elif kind == "scales":  # the image size: the preset's 96 px times each factor
            preset_value = space.setting_value(base, name)
            assert list(hp.values) == [round(preset_value * f) for f in values], name
        else:
            assert (hp.min_value, hp.max_value) == (values[0], values[1]), name
    # --space narrows, fixes and drops; a trial's values land in the run's settings
    ranges = space.preset_ranges(base, get_preset(base.preset), fixed={"batch_size"},
                                 overrides={"label_smoothing": ["linear", 0.0, 0.05],
                                            "mixup": None, "rotation_range": 5})
    assert ranges["label_smoothing"] == ("linear", 0.0, 0.05)
    assert "mixup" not in ranges and "batch_size" not in ranges
    assert ranges["rotation_range"] == ("fixed", 5)
    assert list(searched["image_size"].values) == [96, 120, 144]
    pretrained = dataclasses.replace(base, weights="body.weights.h5")  # a body of its width
    assert "width" not in space.preset_ranges(pretrained, get_preset(base.preset))
    # two stages: the body's rate a tenth (the default), half or the whole of the head's
    two_stage = dataclasses.replace(pretrained, fine_tune_epochs=4,  # as resolve_config sets it
                                    fine_tune_learning_rate=base.learning_rate / 10)
    rates = space.preset_ranges(two_stage, get_preset(base.preset))["fine_tune_learning_rate"]
    assert rates[0] == "choice" and list(rates[1:]) == pytest.approx(
        [two_stage.learning_rate * f for f in (0.1, 0.5, 1.0)])
    download = resolve_config(cfg.TrainConfig(dataset="cifar10", preset="fast-cifar10"))
    assert "image_size" not in space.preset_ranges(download, get_preset("fast-cifar10"))
    config = space.trial_config(base, {"rotation_range": 5.0, "zoom_range": 0.1,
                                       "tuner/epochs": 4, "learning_rate": 1e-3,
                                       "image_size": 120}, "r")
    assert config.image_size == 120
    assert config.augment.rotation_range == 5 and config.augment.zoom_range == (0.9, 1.1)
    assert config.epochs == 4 and config.learning_rate == 1e-3 and config.run_dir == "r"


def test_bad_searches_are_one_error_line(protocol_folders, tmp_path, capsys):
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps({"learning_rate": ["log", 0, 1]}))
    line = one_error_line(capsys, cli.main, tune_argv(protocol_folders, tmp_path / "t",
                                                      space_file, "--trials", "2"))
    assert "learning_rate" in line and "0 < LO" in line
    space_file.write_text(json.dumps({"learnin_rate": ["log", 1e-4, 1e-2]}))
    assert "did you mean 'learning_rate'" in one_error_line(
        capsys, cli.main, tune_argv(protocol_folders, tmp_path / "t", space_file, "--trials", "2"))
    for bad, said in (({"learning_rate": ["lin", 1e-4, 1e-2]}, "KIND one of log, linear"),
                      ({"selection_split": ["choice", 0.0, 0.2]}, "selection_split can be 0"),
                      ({"batch_size": -4}, "batch_size -4 in the search space"),
                      ({"batch_size": ["int", -4, 8]}, "batch_size -4 in the search space")):
        space_file.write_text(json.dumps(bad))  # refused before the tune folder or a trial
        line = one_error_line(capsys, cli.main, tune_argv(protocol_folders, tmp_path / "t",
                                                          space_file, "--trials", "2"))
        assert said in line and not (tmp_path / "t").exists(), line
    assert "--budget" in one_error_line(capsys, cli.main, ["tune", "--data", str(protocol_folders)])
    (tmp_path / "mine" / "ensemble").mkdir(parents=True)  # a user's: a search would replace it
    space_file.write_text(json.dumps({"learning_rate": ["log", 1e-4, 1e-2]}))
    assert "not empty (it holds ensemble)" in one_error_line(capsys, cli.main, tune_argv(
        protocol_folders, tmp_path / "mine", space_file, "--trials", "2"))
    assert "chosen on the test photos" in one_error_line(capsys, cli.main, tune_argv(
        protocol_folders, tmp_path / "t", space_file, "--trials", "2", "--selection-split", "0"))
    assert "at most --trials" in one_error_line(capsys, cli.main, tune_argv(
        protocol_folders, tmp_path / "t", space_file, "--trials", "2", "--ensemble", "3"))
    assert "--final" in one_error_line(capsys, cli.main, tune_argv(
        protocol_folders, tmp_path / "t", space_file, "--trials", "2", "--final", "0"))


def test_the_first_trial_is_the_presets_recipe_brought_into_the_ranges():
    """KerasTuner starts at random points; the search starts at the preset's own recipe, so
    it never returns one worse than the preset on the photos it chooses on."""
    import types

    from catsdogs.models.presets import get_preset
    from catsdogs.training import space, train, tune

    base = train.resolve_config(cfg.TrainConfig(preset="seed-cifar10", data="x"))
    ranges = space.preset_ranges(base, get_preset("seed-cifar10"), overrides={
        "epochs": ["int", 1, 2], "learning_rate": ["log", 1e-5, 1.0], "width": ["choice", 0.5, 1.0]})
    plan = types.SimpleNamespace(search="random", ranges=ranges, base=base, trials=3)
    oracle = tune.make_oracle(plan)
    first = oracle.populate_space("0")["values"]
    assert first["learning_rate"] == base.learning_rate and first["width"] == base.width
    assert first["epochs"] == min(max(base.epochs, 1), 2)  # the preset's, brought into range
    oracle.trials["0"] = object()  # once a trial exists, the oracle's own points follow
    assert oracle.populate_space("1")["values"] != first


def test_tune_help_speaks_of_the_search_not_of_a_single_run():
    """Shared settings read differently here: the folder is the search's, the selection split
    has tune's default, and distillation's knobs (no teacher in a search) are no flags."""
    from catsdogs.commands import tune as tune_command

    parser = tune_command.build_parser()
    helps = {action.dest: action.help for action in parser._actions}
    assert "runs/tune-<preset>-<time>" in helps["run_dir"]
    assert f"default: {cfg.SELECTION_SPLIT}" in helps["selection_split"]
    assert "distill_alpha" not in helps and "distill_temperature" not in helps
    with pytest.raises(CatsDogsError, match="--distill-alpha"):
        parser.parse_args(["--distill-alpha", "0.5"])
