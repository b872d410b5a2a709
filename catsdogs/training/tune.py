"""`catsdogs tune`: search a preset's recipe on the user's own photos, with KerasTuner.

KerasTuner's oracles (random, Bayesian optimisation, Hyperband) choose each trial's settings;
`RecipeTuner.run_trial` trains it as an ordinary catsdogs run folder (TUNE_DIR/trial-<id>/)
and returns its accuracy on the selection split, the only photos any choice is made on. The
test split is read once, at the end, for the best trial (tune.json: test_accuracy).

A killed search continues with the same command and --run-dir: KerasTuner reloads its
project (TUNE_DIR/keras_tuner/, overwrite=False), keeps the finished trials, and offers the
running one again, which resumes from its run folder's backup. A time budget is a budget:
no trial starts after it, and the running one stops at the end of the epoch that passes it
(its run folder then records fewer epochs than planned: "partial" in the table).

With a final step (`final` minutes) the best trial's recipe is trained again in
TUNE_DIR/final/ for as many epochs as fit in those minutes at the speed its trial trained (a
search's trials are short, and on cats/dogs the number of epochs outweighed every other
setting: bench/RESULTS.md); the test split is then read for that model instead.

Hyperband's per-trial epochs are `epochs`; a trial it promotes trains again from the start
for its new epoch count (the schedule anneals over the epochs a run plans, so continuing an
annealed run for more epochs would not be that recipe).
"""

import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path

import keras
import keras_tuner

from catsdogs import config as cfg
from catsdogs import runs
from catsdogs.console import log, quiet_retracing
from catsdogs.data.datasets import DecodedSources
from catsdogs.errors import CatsDogsError, RunFailed
from catsdogs.training import space
from catsdogs.training import train as training

OBJECTIVE = "selection_accuracy"  # the kept model's accuracy on the selection split
TUNER_DIR = "keras_tuner"  # KerasTuner's project folder inside the tune folder
TUNE_FILE = "tune.json"  # the search: its trials, the best, its test accuracy
TRIALS_FILE = "trials.csv"  # the table, as it prints
BEST_FILE = "best.json"  # the best trial's settings: a --config file for catsdogs train
ENSEMBLE_DIR = "ensemble"
FINAL_DIR = "final"  # the best recipe trained again for the final step's minutes

clock = time.monotonic  # the budget's clock (a test moves it)


@dataclasses.dataclass(frozen=True)
class Search:
    """One search: its settings, its space and where it lives."""

    base: cfg.TrainConfig  # resolved; every trial is it plus the trial's values
    ranges: dict  # space.preset_ranges
    folder: Path
    search: str = "bayesian"  # one of cfg.SEARCHES
    trials: int | None = None  # at most this many trials
    budget: float | None = None  # minutes, across resumed sessions
    ensemble: int = 0  # write the ensemble of the best this many trials
    final: float | None = None  # minutes: then train the best recipe for as many epochs as fit


class StopAtDeadline(keras.callbacks.Callback):
    """End training at the end of the epoch that passes `deadline` (on `clock`)."""

    def __init__(self, deadline):
        super().__init__()
        self.deadline = deadline

    def on_epoch_end(self, epoch, logs=None):
        if clock() >= self.deadline:
            self.model.stop_training = True


def _write_state(path, stateful):
    """A KerasTuner object's state file, written whole or not at all (runs.write_json).
    KerasTuner 1.4 writes oracle.json, each trial.json and tuner0.json in place
    (Stateful.save -> keras_tuner/src/utils.py save_json), so a kill during a write left a
    torn file, and the search that resumes reloads every one of them."""
    runs.write_json(Path(path), stateful.get_state())


def check_state_files(folder):
    """KerasTuner's state files of an earlier session, each read before KerasTuner reloads
    them: one torn by a kill (catsdogs wrote them in place before _write_state) is named, where
    KerasTuner's reload fails with a JSONDecodeError that names no file. What a kill left of a
    whole write (a hidden temporary file) is removed first: the file it was to replace is whole.
    """
    runs.remove_stale_temporaries(folder / TUNER_DIR)
    state = folder / TUNER_DIR
    for path in sorted([state / "oracle.json", *state.glob("tuner*.json"),
                        *state.glob("trial_*/trial.json")]):
        if not path.is_file():
            continue
        try:
            json.loads(path.read_bytes())
        except ValueError:  # UnicodeDecodeError and JSONDecodeError both
            raise CatsDogsError("KerasTuner's state file is torn (a search killed while it was "
                                "written)", where=path,
                                fix="continue the search in a new --run-dir; the run folders "
                                    "of the trials it finished stay usable") from None


class StateWrittenWhole:
    """An oracle whose oracle.json and trial.json are written whole (_write_state)."""

    def save(self):
        _write_state(self._get_oracle_fname(), self)

    def _save_trial(self, trial):
        _write_state(Path(self._get_trial_dir(trial.trial_id)) / "trial.json", trial)


class RecipeTuner(keras_tuner.Tuner):
    """A KerasTuner Tuner whose trial is a catsdogs run: the oracle decides, catsdogs trains."""

    def __init__(self, oracle, search, deadline, progress):
        self.plan, self.deadline, self.progress = search, deadline, progress
        self.decoded = DecodedSources()  # the photos decoded once for every trial
        with contextlib.redirect_stdout(sys.stderr):  # its "Reloading Tuner" is progress
            super().__init__(oracle=oracle, directory=str(search.folder), project_name=TUNER_DIR,
                             overwrite=False)

    def run_trial(self, trial, *args, **kwargs):
        run_dir = self.plan.folder / f"trial-{trial.trial_id}"
        config = space.trial_config(self.plan.base, trial.hyperparameters.values, run_dir)
        stop = [] if self.deadline is None else [StopAtDeadline(self.deadline)]
        try:
            metrics = _finished_metrics(config, stop, self.decoded)
        except RunFailed as error:  # a recipe that diverged: a failed trial, the search goes on
            raise keras_tuner.errors.FailedTrialError(str(error)) from error
        except Exception as error:  # anything else stops the search, to be resumed
            raise keras_tuner.errors.FatalError(str(error)) from error
        return {OBJECTIVE: metrics["kept_val_accuracy"]}

    def save(self):  # BaseTuner.save, its state files written whole (a single-process search)
        self.oracle.save()
        _write_state(self._get_tuner_fname(), self)

    def pre_create_trial(self):
        if self.deadline is not None and clock() >= self.deadline:
            self.oracle.max_trials = len(self.oracle.trials)  # the oracle's own way to stop

    def on_search_begin(self):
        print(TABLE_HEADER)
        for row in trial_rows(self.oracle, self.plan.folder):  # those of an earlier session
            print(table_line(row))

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        rows = trial_rows(self.oracle, self.plan.folder)
        runs.write_csv(self.plan.folder / TRIALS_FILE, list(rows[0]), [list(r.values()) for r in rows])
        print(table_line(rows[-1]), flush=True)
        self.progress(rows)


def _finished_metrics(config, callbacks, decoded):
    """The metrics.json of a trial (or the final step), finished however it was left (on the
    search's `decoded` photos), never measuring the test split. What training prints of its
    run ("Best val_accuracy ...", "Model: ...") goes to stderr: stdout holds the search's
    table and results."""
    with contextlib.redirect_stdout(sys.stderr):
        training.finish_run(config, callbacks=callbacks, test=False, decoded=decoded)
    return cfg.load_json(Path(config.run_dir) / runs.METRICS_FILE)


# ---------------------------------------------------------------- the table


def trial_rows(oracle, folder):
    """One row per ended trial, in the order they ended: its settings, selection accuracy,
    minutes of training, and whether it finished, stopped at the budget or failed."""
    rows = []
    for trial_id in oracle.end_order:
        trial = oracle.trials[trial_id]
        metrics_file = folder / f"trial-{trial_id}" / runs.METRICS_FILE
        metrics = cfg.load_json(metrics_file) if metrics_file.exists() else {}
        partial = metrics and metrics["epochs_run"] < metrics["epochs_planned"]
        rows.append({"trial": trial_id,
                     "status": "failed" if trial.score is None else
                     "partial" if partial else "complete",
                     OBJECTIVE: trial.score,
                     "minutes": round(metrics.get("train_seconds", 0) / 60, 2),
                     **{name: value for name, value in trial.hyperparameters.values.items()
                        if not name.startswith("tuner/")}})
    return rows


def _short(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


TABLE_HEADER = f"{'trial':>6} {'status':>8} {'selection':>9} {'minutes':>7}  settings"


def table_line(row):
    settings = " ".join(f"{name}={_short(value)}" for name, value in list(row.items())[4:])
    score = "-" if row[OBJECTIVE] is None else f"{row[OBJECTIVE]:.4f}"
    return f"{row['trial']:>6} {row['status']:>8} {score:>9} {row['minutes']:>7.2f}  {settings}"


# ---------------------------------------------------------------- the search


class PresetFirst:
    """A KerasTuner oracle whose first trial is the hyperparameters' defaults, the preset's own
    recipe (space.hyperparameters), before its random or Bayesian points: its random start
    never tries the preset's recipe, so a short search could return one worse than the preset
    on the very photos it chooses on (a 20-minute search on CIFAR-10 did: bench/RESULTS.md,
    "`catsdogs tune` on CIFAR-10"). KerasTuner has no way to queue a trial of chosen values."""

    def populate_space(self, trial_id):
        if not self.trials:  # the search's first trial (a resumed one has its trials)
            return {"status": "RUNNING", "values": self.hyperparameters.values}
        return super().populate_space(trial_id)


def make_oracle(plan):
    """KerasTuner's oracle for `plan.search`, over `plan.ranges`, its state files written
    whole (StateWrittenWhole); random and Bayesian searches try the preset's recipe first
    (PresetFirst)."""
    hyperband = plan.search == "hyperband"
    common = dict(objective=keras_tuner.Objective(OBJECTIVE, direction="max"),
                  hyperparameters=space.hyperparameters(plan.ranges, hyperband, plan.base),
                  tune_new_entries=False, allow_new_entries=False, seed=plan.base.seed)
    if hyperband:
        oracle = type("HyperbandOracleWrittenWhole",
                      (StateWrittenWhole, keras_tuner.oracles.HyperbandOracle), {})(
            max_epochs=space.epochs_range(plan.ranges, plan.base)[1], factor=3, **common)
        oracle.max_trials = plan.trials
        return oracle
    kind = (keras_tuner.oracles.BayesianOptimizationOracle if plan.search == "bayesian"
            else keras_tuner.oracles.RandomSearchOracle)
    return type(f"PresetFirst{kind.__name__}", (StateWrittenWhole, PresetFirst, kind), {})(
        max_trials=plan.trials, **common)


def tune(plan):
    """Run (or continue) the search `plan`; write tune.json, trials.csv, best.json and, with
    `plan.ensemble`, the ensemble of the best trials.

    Returns:
        dict: what tune.json holds.

    Raises:
        CatsDogsError: bad data or settings (found in the first trial), or no trial finished.

    Example:
        >>> tune(Search(base, ranges, Path("runs/tune-x"), trials=20))  # doctest: +SKIP
    """
    folder = plan.folder
    with runs.run_folder_lock(folder):
        summary_file = folder / TUNE_FILE
        before = cfg.load_json(summary_file) if summary_file.exists() else {}
        spent = before.get("seconds_spent", 0.0)
        started = clock()
        deadline = None if plan.budget is None else started + plan.budget * 60 - spent

        def progress(rows):  # after each trial: a killed search still counts its time
            runs.write_json(summary_file, {**before, "seconds_spent": spent + clock() - started,
                                           "trials": rows})

        check_state_files(folder)
        tuner = RecipeTuner(make_oracle(plan), plan, deadline, progress)
        with quiet_retracing():  # every trial (and the final step) compiles a new model
            try:
                tuner.search(verbose=0)
            except keras_tuner.errors.FatalError as error:  # the trial's own error, as raised
                raise (error.__cause__ or error) from None
            except RuntimeError as error:  # KerasTuner: too many trials failed in a row
                raise CatsDogsError("trials failed in a row", where=folder,
                                    fix=f"see their run folders; {str(error).splitlines()[0]}"
                                    ) from None
            summary = _summarise(plan, tuner, before, spent + clock() - started)
        runs.write_json(summary_file, summary)
    return summary


def _summarise(plan, tuner, before, seconds):
    """best.json, the final step (`plan.final`), the test split read once for the best trial
    or the final model, the ensemble; tune.json's dict."""
    # ties broken by trial id, so a second run of the same command names the same best trial
    # (and reads the test split no second time)
    sign = -1 if tuner.oracle.objective.direction == "max" else 1
    scored = [t for t in tuner.oracle.trials.values() if t.score is not None]
    best_trials = sorted(scored, key=lambda t: (sign * t.score, len(t.trial_id), t.trial_id)
                         )[:max(1, plan.ensemble)]
    if not best_trials:
        raise CatsDogsError("no trial finished", where=plan.folder,
                            fix="raise --budget or --trials, or see the trials' run folders")
    best_dir = plan.folder / f"trial-{best_trials[0].trial_id}"
    kept_dir, kept_config = best_dir, cfg.read_run_config(best_dir / runs.CONFIG_FILE)
    final = {}
    if plan.final:
        kept_dir, kept_config = plan.folder / FINAL_DIR, final_config(plan, best_dir, kept_config)
        earlier = kept_dir / runs.CONFIG_FILE
        if earlier.exists() and cfg.read_run_config(earlier) != kept_config:
            raise CatsDogsError("the final step here trained another recipe or epoch count (the "
                                "best trial or --final changed since)", where=kept_dir,
                                fix="move that folder elsewhere to train this one, or tune into "
                                    "a new --run-dir")
        metrics = _finished_metrics(kept_config, [], tuner.decoded)
        final = {"final_run": str(kept_dir), "final_epochs": kept_config.epochs,
                 "final_selection_accuracy": metrics["kept_val_accuracy"],
                 "final_minutes": round(metrics["train_seconds"] / 60, 2)}
    settings = {k: v for k, v in cfg.to_dict(kept_config).items()
                if k not in ("run_dir", "selection_chooses_runs")}  # a train --config file
    runs.write_json(plan.folder / BEST_FILE, settings)
    # tune.json before tested_run (an older version) names the tested run best_run
    tested_before = before.get("tested_run", before.get("best_run"))
    test = ({k: before[k] for k in ("test_accuracy", "test_images", "test_split")}
            if tested_before == str(kept_dir) and "test_accuracy" in before
            else measure_test(kept_dir, kept_config, tuner.decoded))
    summary = {"search": plan.search, "preset": plan.base.preset, "data": plan.base.data,
               "seconds_spent": round(seconds, 1), "trials": trial_rows(tuner.oracle, plan.folder),
               "best_trial": best_trials[0].trial_id, "best_run": str(best_dir),
               OBJECTIVE: best_trials[0].score, **final, "tested_run": str(kept_dir), **test,
               "best_settings": str(plan.folder / BEST_FILE)}
    preset = preset_trial(plan, tuner.oracle)
    if preset is not None and preset.score is not None:
        summary.update(preset_trial=preset.trial_id, preset_selection_accuracy=preset.score)
    if plan.ensemble > 1:
        summary["ensemble"] = str(_ensemble(plan, best_trials))
    return summary


def final_config(plan, best_dir, best_config):
    """The best trial's settings with as many epochs as fit in `plan.final` minutes at the
    seconds per epoch its trial trained (never fewer epochs than it planned), in TUNE_DIR/final;
    a two-stage recipe keeps its fine-tuning epochs and gives the head the rest."""
    metrics = cfg.load_json(best_dir / runs.METRICS_FILE)
    per_epoch = metrics["train_seconds"] / max(1, metrics["epochs_run"])
    fitting = int(plan.final * 60 // max(per_epoch, 1e-9))
    epochs = max(best_config.epochs, fitting - best_config.fine_tune_epochs)
    return dataclasses.replace(best_config, epochs=epochs, run_dir=str(plan.folder / FINAL_DIR))


def preset_trial(plan, oracle):
    """The trial that ran the preset's own recipe (PresetFirst: a random or Bayesian search's
    first), or None for Hyperband, whose trials all come from its brackets."""
    if plan.search == "hyperband" or not oracle.trials:
        return None
    return min(oracle.trials.values(), key=lambda t: (len(t.trial_id), t.trial_id))


def measure_test(run_dir, config, decoded=None):
    """The test split's accuracy for the run in `run_dir` (read here, once per search; the
    search's `decoded` photos, when given, hold it already)."""
    from catsdogs.data.datasets import load_image_data
    from catsdogs.models.presets import preset_of

    data = load_image_data(config, preset_of(config).image_size, decoded=decoded)
    model = keras.saving.load_model(run_dir / runs.MODEL_FILE, safe_mode=True, compile=False)
    return training.test_once(model, data)


def _ensemble(plan, best_trials):
    """The best `plan.ensemble` trials as one model (inference/ensemble.py)."""
    from catsdogs.inference.ensemble import ensemble_of

    out = plan.folder / ENSEMBLE_DIR
    if len(best_trials) < plan.ensemble:
        log().warning(f"--ensemble {plan.ensemble}: only {len(best_trials)} trials finished; "
                      "the ensemble has them all")
    return ensemble_of([plan.folder / f"trial-{t.trial_id}" for t in best_trials], out)


def summary_lines(summary):
    """What the command prints at the end."""
    tested = (f", test accuracy {summary['test_accuracy']:.4f} on {summary['test_images']} "
              "images (read once, now)" if "test_accuracy" in summary else "")
    final = "final_run" in summary
    lines = [f"Best trial {summary['best_trial']}: selection accuracy "
             f"{summary[OBJECTIVE]:.4f}" + ("" if final else tested)]
    if final:
        lines.append(f"Final:       its recipe for {summary['final_epochs']} epochs "
                     f"({summary['final_minutes']:.1f} min) in {summary['final_run']}: selection "
                     f"accuracy {summary['final_selection_accuracy']:.4f}" + tested)
    if "preset_trial" in summary:
        gain = summary[OBJECTIVE] - summary["preset_selection_accuracy"]
        lines.append(f"The preset's recipe (trial {summary['preset_trial']}): selection accuracy "
                     f"{summary['preset_selection_accuracy']:.4f}; the best is {gain * 100:+.1f} points on "
                     "those photos (a few points on a few hundred photos can be noise: "
                     "compare on the test split with 2 seeds or more)")
    lines.append(f"Settings:    {summary['best_settings']}  (catsdogs train --config "
                 f"{summary['best_settings']})")
    if "ensemble" in summary:
        lines.append(f"Ensemble:    {summary['ensemble']}")
    folder = Path(summary["best_run"]).parent
    lines.append(f"TensorBoard: tensorboard --logdir {folder}  (HParams: every trial)")
    return lines
