"""Train a CNN on class folders or CIFAR-10 and write a run folder (the library of `catsdogs train`).

The run folder (runs/<preset>-<time>/) gets config.json, class_names.json, dataset.json,
history.csv, skipped.csv, logs/ (TensorBoard), model.keras (the kept epoch: --keep-epoch),
saved_model/, plots/training_curves.png and metrics.json.

A run goes through named steps: `_prepare` (decoded data and pipelines; nothing written yet),
`_start_run_folder` (class names, dataset.json, skipped.csv), `_build_model`, `_callbacks`,
Keras' `fit`, `_raise_if_nan` and `_finish` (SavedModel, plots, metrics.json).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import shlex
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from catsdogs import config as cfg
from catsdogs import console, runs
from catsdogs.console import display, log, name_some
from catsdogs.data import datasets
from catsdogs.data.datasets import chooses_on_validation
from catsdogs.errors import CatsDogsError, RunFailed, continue_hint
from catsdogs.inference.photo_roles import (check_same_photos,
                                           warn_if_the_start_trained_on_held_out)
from catsdogs.training import features
from catsdogs.training.distribute import (WORKERS_DIR, cluster_from_environment,
                                          remove_worker_folder, take_chief_resume_state,
                                          worker_folder)

if TYPE_CHECKING:  # Keras and TensorFlow load only once a run starts, after its flags are checked
    import keras
    import tensorflow as tf

    from catsdogs.data.augment import AlternatingFlips
    from catsdogs.data.datasets import ImageData
    from catsdogs.models.presets import Preset
    from catsdogs.training.distribute import Placement

DEFAULT_DATA = "data/cats_and_dogs"  # the small real sample shipped with the repo
MONITOR = "val_accuracy"  # what "best model" means
ADAPT_IMAGES = 5000  # training images a preset's adapt reads at most (adapt_sample)


@dataclasses.dataclass
class Prepared:
    """What a run needs before its model is built: data, pipelines, loss."""

    preset: Preset
    data: ImageData
    train_ds: tf.data.Dataset
    val_ds: tf.data.Dataset
    train_size: tf.Variable | None  # [height, width] of training batches (progressive resizing)
    flips: AlternatingFlips | None
    loss: keras.losses.Loss
    accuracy: keras.metrics.Metric
    placement: Placement
    first_batch: tuple  # this worker's first training batch (images, labels), as NumPy
    worker_batch: int  # images per step on this worker (the global batch over the workers)
    one_hot: int | None  # the class count when labels are one-hot, else None


@dataclasses.dataclass
class Run:
    """A finished (or resumed and finished) training run."""

    dir: Path
    config: cfg.TrainConfig
    class_names: list[str]
    history: list[dict]  # rows of history.csv
    metrics: dict  # metrics.json

    @property
    def model_path(self):
        return self.dir / runs.MODEL_FILE


def resolve_config(config):
    """Fill what the user left to defaults: preset by dataset, data, and the preset's recipe."""
    from catsdogs.models.presets import DEFAULT_PRESET, get_preset  # Keras: not for --help

    preset = get_preset(config.preset or DEFAULT_PRESET[config.dataset])
    preset.check_weights(config.weights)  # before minutes of decoding, not after
    if config.width != 1 and preset.pretrainable:
        raise CatsDogsError(f"preset {preset.name!r} is a keras.applications backbone, whose "
                            "widths catsdogs cannot change", where="--width",
                            fix="drop --width, or scale a seed, fast, resnet or air preset")
    data = config.data
    if config.dataset == "folder" and data is None and config.train_dir is None:
        data = DEFAULT_DATA
    recipe = {field.name: getattr(preset.recipe, field.name)
              for field in dataclasses.fields(preset.recipe) if getattr(config, field.name) is None}
    resolved = _absolute_paths(dataclasses.replace(config, preset=preset.name, data=data,
                                                   **recipe))
    if resolved.fine_tune_epochs and resolved.fine_tune_learning_rate is None:
        # the second stage's rate: a tenth of the head's (stages.py), recorded in config.json
        resolved = dataclasses.replace(resolved,
                                       fine_tune_learning_rate=resolved.learning_rate / 10)
    if resolved.keep_epoch is None:
        # the last epoch where the schedule anneals (over 3 seeds it beat the best epoch chosen
        # on held-out photos: bench/RESULTS.md, "The spread over seeds"), the best where the
        # rate stays constant; a refit needs an epoch chosen
        keep = "best" if resolved.refit or resolved.schedule == "constant" else "last"
        resolved = dataclasses.replace(resolved, keep_epoch=keep)
    if resolved.calibration_minimum is None:  # recorded, so a resumed run keeps its photos
        resolved = dataclasses.replace(resolved,
                                       calibration_minimum=datasets.MIN_CALIBRATION_IMAGES)
    preset.check_progressive(resolved.progressive_start)
    if resolved.downloads_cifar10 and resolved.image_size not in (None, 32):
        raise CatsDogsError("the downloaded CIFAR-10 images are 32x32 arrays", where="--image-size",
                            fix="drop --image-size, or write them as image files with "
                                "`catsdogs download cifar10 --into DIR` and pass --data DIR")
    features.check(resolved)
    return resolved


def _absolute_paths(config):
    """`config` with its files and folders as absolute paths: config.json then names them
    however the run is resumed, calibrated, pruned or exported from another folder (relative,
    they named a folder under the one it was trained from)."""
    return dataclasses.replace(config, **{
        name: cfg.absolute_setting(name, getattr(config, name)) for name in cfg.PATH_SETTINGS})


# ---------------------------------------------------------------- the steps of a run


def loss_and_accuracy(num_classes, label_smoothing, mixing=False):
    """Binary cross-entropy for two classes (one sigmoid unit), sparse categorical for more;
    categorical on one-hot labels when smoothing or `mixing` (MixUp/CutMix blend labels), as
    Keras' sparse loss takes neither.

    Returns:
        (loss, accuracy metric, one_hot): one_hot tells the pipeline to one-hot the labels.
    """
    import keras

    if num_classes == 2:
        from catsdogs.training.metrics import blended_binary_accuracy

        accuracy = blended_binary_accuracy() if mixing else keras.metrics.BinaryAccuracy(name="accuracy")
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing), accuracy, False
    if label_smoothing or mixing:
        return (keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
                keras.metrics.CategoricalAccuracy(name="accuracy"), True)
    return (keras.losses.SparseCategoricalCrossentropy(),
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"), False)


def balanced_class_weights(labels, num_classes):
    """{class: total / (classes x count)}: every class weighs the same in the loss overall."""
    import numpy as np

    counts = np.bincount(labels, minlength=num_classes)
    return {i: len(labels) / (num_classes * count) for i, count in enumerate(counts) if count}


def _prepare(config, placement, decoded=None):
    """Seeds, decoded data (`decoded`: datasets.DecodedSources, pixels an earlier run of this
    process decoded) and tf.data pipelines for `config` (nothing written yet)."""
    import keras
    import numpy as np

    from catsdogs.backends import pipeline_value, tensorflow_trains
    from catsdogs.data.augment import AlternatingFlips, build_augmenter, build_batch_mixer
    from catsdogs.data.datasets import load_image_data
    from catsdogs.data.tf_pipeline import make_dataset, read_errors_raised
    from catsdogs.models.presets import preset_of
    from catsdogs.training.distribute import common_count, distribute

    keras.utils.set_random_seed(config.seed)
    preset = preset_of(config)
    data = load_image_data(config, preset.image_size, (placement.worker, placement.workers),
                           decoded)
    if placement.workers > 1:  # every worker must run the same number of steps
        data.train = data.train.subset(np.arange(common_count(placement, len(data.train))))
        data.val = data.val.subset(np.arange(common_count(placement, len(data.val))))
    mixer = build_batch_mixer(config.mixup, config.cutmix, config.rand_augment, seed=config.seed)
    loss, accuracy, one_hot = loss_and_accuracy(len(data.class_names), config.label_smoothing,
                                                mixing=bool(config.mixup or config.cutmix))
    classes = len(data.class_names) if one_hot else None
    augmenter = build_augmenter(config.augment, seed=config.seed)
    worker_batch = config.batch_size * placement.replicas // placement.workers
    train_size = None
    if config.progressive_start < 1:
        train_size = pipeline_value(preset.image_size, "int32")
    flips = None
    if config.augment.alternate_flips:
        flips = AlternatingFlips(len(data.train), seed=config.seed)
    train_ds = make_dataset(data.train, worker_batch, augmenter, shuffle_seed=config.seed,
                            one_hot=classes, resize_to=train_size, flips=flips, mixer=mixer)
    val_ds = make_dataset(data.val, worker_batch, one_hot=classes)
    with read_errors_raised(data):
        first_batch = tuple(np.asarray(part) for part in (
            next(iter(train_ds)) if tensorflow_trains() else train_ds[0]))
    return Prepared(preset, data, distribute(placement, train_ds), distribute(placement, val_ds),
                    train_size, flips, loss, accuracy, placement, first_batch, worker_batch,
                    classes)


def backup_folder(run_dir):
    """Where a run (or a worker, in its own folder) keeps its resume state."""
    return Path(run_dir) / runs.CHECKPOINTS_DIR / "backup"


def _start_run_folder(data, run_dir, resumed, chooses=True):
    """Print class names and counts; save them (class_names.json, dataset.json) and the skipped
    files; warn about leakage and imbalance (doctor's cheap checks). A resumed run must see the
    classes and splits it started with. Returns the photos' roles (photos.json)."""
    from catsdogs.data.doctor import quick_warnings

    summary = data.summary()
    for split in summary["counts"]:
        counts = ", ".join(f"{name} {n}" for name, n in summary["counts"][split].items())
        log().info(f"{split:>10}: {counts}  ({summary['sources'][split]})")
    roles = data.photo_roles(chooses)
    names_file = run_dir / runs.CLASS_NAMES_FILE
    if resumed:  # refused before any record of the run is written over
        check_same_photos(run_dir, roles, fix="resume with the photos the run started with, "
                                              "or start a new run on these")
        # a run killed before it wrote its class names has none to compare: written below
        if names_file.exists() and cfg.load_json(names_file) != data.class_names:
            raise CatsDogsError("the data's classes differ from the run's class_names.json",
                                where=names_file, fix="resume with the data the run started with")
    runs.write_csv(run_dir / runs.SKIPPED_FILE, ["path", "reason"], data.skipped)
    if data.skipped:
        log().warning("\n".join([f"Skipped {len(data.skipped)} unusable file(s); all of them in "
                                 f"{run_dir / runs.SKIPPED_FILE}"] + name_some(
            [f"{display(path)}: {reason}" for path, reason in data.skipped])))
    runs.write_json(run_dir / runs.DATASET_FILE, summary)
    runs.write_json(run_dir / runs.PHOTOS_FILE, roles)
    for line in quick_warnings(data):
        log().warning(line)
    runs.write_json(names_file, data.class_names)
    return roles


def _build_model(config, prepared):
    """The preset's model, compiled under the distribution strategy; (model, steps per epoch)."""
    data, placement, preset = prepared.data, prepared.placement, prepared.preset
    steps_per_epoch = -(-len(data.train) // prepared.worker_batch)
    with placement.strategy.scope():
        if config.prune_from:  # compression: the run's model, narrowed (prune.py)
            from catsdogs.training.prune import pruned_model

            model = student = pruned_model(config, data.class_names)
        else:
            model = student = _start_model(config, preset, data.class_names)
            if config.width != 1:  # a width sweep (bench/scaling.py): the same graph, wider
                from catsdogs.training.prune import scale_widths

                model = student = scale_widths(model, config.width)
        if config.teacher:  # compression: fit inside a Distiller (distill.py)
            from catsdogs.training.distill import make_distiller

            model = make_distiller(student, config, data.class_names)
        _compile(model, config, prepared, steps_per_epoch, student)
        # a resumed run's weights replace these at on_train_begin; a pruned one keeps its own,
        # a started one those it started from
        if preset.adapt is not None and not config.prune_from and config.weights == "none":
            preset.adapt(student, adapt_sample(data.train, config.seed))
    return model, steps_per_epoch


def adapt_sample(split, seed, count=None):
    """At most `count` (ADAPT_IMAGES) of `split`'s images, drawn at random by `seed` without
    replacement, in file order: what a preset's `adapt` sets its layers from.

    A bounded sample, not every training image: from a disk cache (or --cache none) reading
    them all would hold them all in memory at once, the memory the cache is there to save.
    It is enough: the one adapt, models.presets.whiten_patches, takes the covariance of 2x2
    patches (12 numbers) over at most its own 5000 images; 5000 images give it 5000 x (h/2) x
    (w/2) patches (1.3 million at 32x32), and even counted as 5000 samples the covariance's
    entries are within about sqrt(2/5000) = 2% of the whole data's. airbench whitens from 5000
    CIFAR-10 training images as well."""
    count = ADAPT_IMAGES if count is None else count
    if len(split) <= count:
        return split.pixels
    import numpy as np

    return split.gather(np.sort(np.random.default_rng(seed).choice(len(split), count,
                                                                   replace=False)))


def _start_model(config, preset, class_names):
    """The preset's model as --weights starts it; its body frozen for the first stage."""
    from catsdogs.models.transfer import start_model
    from catsdogs.training.stages import set_stage, staged

    model, note = start_model(preset, class_names, config.weights)
    if note:
        log().info(f"Weights: {note}")
    if staged(config):
        set_stage(model, 1)
    return model


def _compile(model, config, prepared, steps_per_epoch, student):
    """Compile with a new optimizer for `config` (again for a second stage: stages.py)."""
    from catsdogs.models import optim

    with prepared.placement.strategy.scope():
        model.compile(optimizer=optim.make_optimizer(config, steps_per_epoch, student,
                                                     prepared.placement.replicas),
                      loss=prepared.loss, metrics=[prepared.accuracy],
                      steps_per_execution=config.steps_per_execution)


def _best_so_far(run_dir, history_rows):
    """What model.keras holds; with no model.keras (a run of an older catsdogs killed between
    its history and its first save) the next epoch's model is kept whatever its accuracy."""
    if not (run_dir / runs.MODEL_FILE).exists():
        return -math.inf
    return max((float(r[MONITOR]) for r in history_rows if r.get(MONITOR)), default=-math.inf)


def _callbacks(config, run_dir, prepared, steps_per_epoch, history):
    """The run's Keras callbacks, in the order they must run at each epoch's end."""
    import keras

    from catsdogs.backends import tensorflow_trains, why_not_tensorflow
    from catsdogs.training import callbacks

    found = []
    if prepared.train_size is not None:
        found.append(callbacks.ProgressiveResizing(prepared.train_size, config.total_epochs,
                                                   config.progressive_start,
                                                   prepared.preset.image_size))
    if prepared.flips is not None:
        found.append(callbacks.FlipEpoch(prepared.flips))
    if config.lookahead:  # an epoch's last step takes the average: validated and saved
        found.append(callbacks.Lookahead(steps_per_epoch, config.epochs))
    if config.ema:  # validation, and everything after it at the epoch's end, see the average
        # (so the resume backup holds the average as the weights and the raw weights in the
        # optimizer's average slots: a resumed run trains on from the average, and its average
        # restarts near it; the two differ little at the end of an epoch)
        found.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    best = _best_so_far(run_dir, history.rows)
    found += [
        keras.callbacks.TerminateOnNaN(),
        # the model, then history, then the backup: a kill between any two of them redoes an
        # epoch (whose model may be kept, whose history row is replaced), and never records an
        # epoch whose better model was not kept; a backup ahead of history would resume past
        # an epoch history never recorded (a gap)
        callbacks.BestModelCheckpoint(run_dir / runs.MODEL_FILE, MONITOR, best=best,
                                      every_epoch=config.keep_epoch == "last"),
        history,
        callbacks.AtomicBackupAndRestore(backup_folder(run_dir)),
    ]
    if tensorflow_trains():  # TensorBoard's summaries are TensorFlow's (backends.py)
        found += [
            keras.callbacks.TensorBoard(log_dir=str(run_dir / runs.LOGS_DIR), write_graph=True),
            callbacks.TrainingImagesToTensorBoard(run_dir / runs.LOGS_DIR,
                                                  prepared.first_batch[0]),
            callbacks.HParamsToTensorBoard(run_dir / runs.LOGS_DIR, tensorboard_hparams(config),
                                           best_so_far=best),
        ]
    else:
        log().info(f"TensorBoard logs: none ({why_not_tensorflow()}; history.csv and plots/ "
                   "hold the curves)")
    # its predict() would wait on workers that do not call it
    if prepared.placement.workers == 1 and tensorflow_trains():
        found.append(callbacks.ConfusionMatrixToTensorBoard(
            run_dir / runs.LOGS_DIR, prepared.data.val.pixel_view(), prepared.data.val.labels,
            prepared.data.class_names, config.total_epochs))
    if config.patience:
        found.append(keras.callbacks.EarlyStopping(MONITOR, patience=config.patience, mode="max"))
    return found


def tensorboard_hparams(config):
    """The settings a run is compared by in TensorBoard's HParams dashboard."""
    from catsdogs.models.presets import preset_of

    side = preset_of(config).image_size[0]
    return {"preset": config.preset, "optimizer": config.optimizer,
            "learning_rate": config.learning_rate, "batch_size": config.batch_size,
            "epochs": config.epochs, "image_size": side, "schedule": config.schedule,
            "weight_decay": config.weight_decay, "label_smoothing": config.label_smoothing,
            "progressive_start": config.progressive_start, "width": config.width,
            "mixup": config.mixup, "cutmix": config.cutmix, "rand_augment": config.rand_augment,
            "ema": config.ema, "precise_bn": config.precise_bn, "seed": config.seed}


def _raise_if_nan(rows, config, run_dir):
    """A loss that became NaN ends the run with one line; the best model so far stays."""
    nan_epoch = next((int(r["epoch"]) for r in rows if not math.isfinite(float(r["loss"]))), None)
    if nan_epoch is None:
        return
    kept = ("the best model so far is kept in model.keras" if (run_dir / runs.MODEL_FILE).exists()
            else "no model was saved")
    raise RunFailed(f"training loss became NaN in epoch {nan_epoch}", where=run_dir,
                        fix=f"lower --learning-rate (it was {config.learning_rate}); {kept}")


def _fit(config, run_dir, prepared, resumed, extra_callbacks=(), test=True):
    """Build, compile and fit; return the Run. Resumed runs continue from their backup."""
    from catsdogs.data.tf_pipeline import read_errors_raised
    from catsdogs.training import callbacks
    from catsdogs.training.distill import student_of
    from catsdogs.training.distribute import multi_worker_fit
    from catsdogs.training.stages import fit_in_stages

    data = prepared.data
    # the chief checks the classes; a worker's folder may be gone (it finished before the
    # chief failed), and its classes are the chief's
    roles = _start_run_folder(data, run_dir, resumed and prepared.placement.is_chief,
                              chooses_on_validation(config))
    for start in (config.prune_from, config.teacher, config.weights):
        if start and Path(start).is_dir():  # a run folder (--weights may also be a file)
            warn_if_the_start_trained_on_held_out(start, roles)
    model, steps_per_epoch = _build_model(config, prepared)
    history = callbacks.HistoryCSV(run_dir / runs.HISTORY_FILE)
    fit_callbacks = _callbacks(config, run_dir, prepared, steps_per_epoch, history)
    live = console.live_progress()  # else one plain line per epoch (or none with --quiet)
    if not live and console.chatty():
        fit_callbacks.append(callbacks.EpochLog(config.total_epochs))
    with read_errors_raised(data), console.progress_to_stderr(), \
            multi_worker_fit(model, prepared.placement, prepared.first_batch), \
            callbacks.InterruptAtBatchEnd() as interrupt:
        options = dict(verbose=1 if live else 0, shuffle=False,  # the pipeline shuffles
                       class_weight=balanced_class_weights(data.train.labels,
                                                           len(data.class_names))
                       if config.class_weight == "auto" else None)
        fit = functools.partial(model.fit, prepared.train_ds, validation_data=prepared.val_ds,
                                **options)
        fit_in_stages(model, fit, config, [interrupt, *fit_callbacks, *extra_callbacks],
                      recompile=lambda stage_config: _compile(model, stage_config, prepared,
                                                              steps_per_epoch, model),
                      head_fit=features.head_fit(model, prepared, config, options)
                      if features.used(config, (data.storage or {}).get("mode", "ram")) else None)
    _raise_if_nan(history.rows, config, run_dir)
    if not prepared.placement.is_chief:  # its folder held only resume state: gone with the run
        remove_worker_folder(run_dir)
        return None
    # compression: a Distiller's parameters would count the teacher's
    run = _finish(config, run_dir, data, history.rows, student_of(model).count_params(), test)
    if prepared.placement.workers > 1:  # the run is finished: no worker resumes it any more
        shutil.rmtree(run_dir / WORKERS_DIR, ignore_errors=True)
    return run


def test_once(model, data):
    """With a selection split, the data's own validation split is a test split: the best
    model is measured on it once, here, and nothing was chosen on it."""
    if data.test is None:
        return {}
    from catsdogs.inference.runtimes import keras_probabilities

    probabilities = keras_probabilities(model, data.test.pixel_view())
    accuracy = float((probabilities.argmax(axis=1) == data.test.labels).mean())
    return {"test_accuracy": accuracy, "test_images": len(data.test),
            "test_split": data.sources["test"]}


def _precise_bn(config, run_dir, model, train):
    """--precise-bn: the kept model's BatchNorm statistics recomputed over the training photos
    (precise_bn.py) and model.keras replaced with it in one step. The same weights give the
    same statistics, so a run killed after this and resumed does it again to the same end.
    Returns the number of layers recomputed (0: off, or none in the model)."""
    if not config.precise_bn:
        return 0
    from catsdogs.training.precise_bn import recompute_statistics

    count = recompute_statistics(model, train.pixel_view(), config.batch_size)
    if count:
        with runs.atomic_path(run_dir / runs.MODEL_FILE) as temp:
            model.save(temp)
        print(f"BatchNorm statistics of {count} trainable layers recomputed over the "
              f"{len(train)} training photos, un-augmented (--precise-bn)")
    return count


def _finish(config, run_dir, data, rows, parameters, test=True):
    """After fit: SavedModel of the best model, plots, metrics.json; drop the resume backup.
    `test=False` leaves the test split unread (a tuning trial: tune.py measures the best once)."""
    import keras

    from catsdogs import plots
    from catsdogs.inference.calibrate import calibrate_run
    from catsdogs.training import callbacks

    best = max(rows, key=lambda r: float(r[MONITOR]))
    kept = rows[-1] if config.keep_epoch == "last" else best
    # compile=False: the optimizer is not needed, and a run begun by an older catsdogs names it
    # by a module path that may have moved
    best_model = keras.saving.load_model(run_dir / runs.MODEL_FILE, safe_mode=True, compile=False)
    recomputed = _precise_bn(config, run_dir, best_model, data.train)
    # the temperature is fitted on photos that chose nothing (datasets.set_aside_calibration);
    # saved_model/ is written with it inside
    calibration = calibrate_run(
        run_dir, best_model, *((data.calibration.pixel_view(), data.calibration.labels)
                               if data.calibration is not None else (None, None)),
        data.class_names, fitted_on=f"calibration ({data.sources.get('calibration')})")
    plots.training_curves(rows, run_dir / runs.PLOTS_DIR / "training_curves.png",
                          title=f"{config.preset} on {data.sources['train']}")
    metrics = {
        "kept": config.keep_epoch, "kept_epoch": int(kept["epoch"]),
        "kept_val_accuracy": float(kept[MONITOR]),
        "best_epoch": int(best["epoch"]), "best_val_accuracy": float(best[MONITOR]),
        "best_val_loss": float(best["val_loss"]), "final_val_accuracy": float(rows[-1][MONITOR]),
        "epochs_run": len(rows), "epochs_planned": config.total_epochs,
        "train_seconds": round(sum(float(r["seconds"]) for r in rows), 1),  # all sessions
        "train_images": len(data.train), "validation_images": len(data.val),
        "best_epoch_chosen_on": data.sources["validation"],
        **(test_once(best_model, data) if test else {}),
        "parameters": parameters, "precise_bn_layers": recomputed,
        "temperature": calibration["temperature"],
        "temperature_decision": calibration["decision"],
        "calibration_images": calibration["images"],
        "val_ece_before_calibration": calibration.get("ece_before"),
        "val_ece_after_calibration": calibration.get("ece_after"),  # on the photos T fitted
        "val_ece_after_calibration_cross_fitted": calibration.get("ece_after_cross_fitted"),
    }
    runs.write_json(run_dir / runs.METRICS_FILE, metrics)
    callbacks.remove_backup(run_dir / runs.CHECKPOINTS_DIR)
    print(f"Best {MONITOR} {metrics['best_val_accuracy']:.4f} at epoch {metrics['best_epoch']} "
          f"of {len(rows)} ({metrics['train_seconds']:.1f} s of training)")
    if not chooses_on_validation(config):
        print(f"Kept the last epoch ({metrics['kept_epoch']}, {MONITOR} "
              f"{metrics['kept_val_accuracy']:.4f}): nothing was chosen on held-out photos")
    if "test_accuracy" in metrics:
        print(f"Test accuracy {metrics['test_accuracy']:.4f} on {metrics['test_images']} images "
              f"no choice was made on ({metrics['test_split']})")
    if calibration["images"]:
        print(f"Calibration on {calibration['images']} photos that chose nothing: "
              f"{calibration['decision']}; expected calibration error "
              f"{calibration['ece_before']:.4f} -> {calibration['ece_after']:.4f} there, "
              f"{calibration['ece_after_cross_fitted']:.4f} on photos T was not fitted on "
              "(fitted on halves)")
    else:
        print(f"Calibration: {calibration['decision']}")
    if (run_dir / runs.SAVED_MODEL_DIR).exists():
        print(f"Model:       {run_dir / runs.MODEL_FILE}  (SavedModel: {run_dir / runs.SAVED_MODEL_DIR})")
    else:  # trained without TensorFlow (backends.py)
        print(f"Model:       {run_dir / runs.MODEL_FILE}")
    if (run_dir / runs.LOGS_DIR).exists():
        print(f"TensorBoard: tensorboard --logdir {run_dir / runs.LOGS_DIR}")
    return Run(run_dir, config, data.class_names, rows, metrics)


# ---------------------------------------------------------------- the public functions


def train(config, callbacks=(), test=True, decoded=None):
    """Train a model as `config` says and write a new run folder.

    Args:
        config: a TrainConfig; fields left None take the preset's defaults.
        callbacks: Keras callbacks added to the run's own (tune.py's deadline).
        test: measure the test split (with a selection split) at the end; False leaves it
            unread, for runs whose caller measures only the one it picks.
        decoded: a datasets.DecodedSources shared by the runs of one search, so that the
            photos are decoded once, not once per run.

    Returns:
        Run: the run folder, history and metrics.

    Raises:
        CatsDogsError: bad data, bad settings, or a loss that became NaN.

    Example:
        >>> run = train(TrainConfig(data="data/cats_and_dogs", epochs=2))  # doctest: +SKIP
        >>> run.metrics["best_val_accuracy"]  # doctest: +SKIP
    """
    from catsdogs.data.datasets import check_sources

    given = config
    config = resolve_config(config)
    worker = cluster_from_environment()[0] if config.strategy == "multiworker" else 0
    if config.strategy == "multiworker" and config.run_dir is None:
        raise CatsDogsError("--strategy multiworker needs --run-dir: every worker must name the "
                            "same run folder", where="--run-dir", fix="give the same --run-dir to "
                                                                      "every worker")
    if config.run_dir is not None and worker == 0:
        runs.refuse_used_run_dir(config.run_dir, ours=(WORKERS_DIR,))
        _check_run_dir_outside_data(config)
    _check_default_data(given)
    check_sources(config)  # what a user can fix is found before TensorFlow loads
    _check_writable(config)
    placement = _placement(config)
    # the shares a resume or calibrate cuts again; none but a multi-worker run's (a pruned
    # one inherits its source's settings)
    config = dataclasses.replace(config, workers=placement.workers
                                 if config.strategy == "multiworker" else None)
    check_image_size(config)  # builds a model: after the placement, which comes first
    log().info(f"Settings: {json.dumps(cfg.to_dict(config))}")
    if config.weights == "imagenet" and placement.is_chief:
        from catsdogs.models.presets import get_preset

        # offline: said before the photos are decoded and before a run folder holds a failed
        # start
        get_preset(config.preset).get_imagenet_weights()
    prepared = _prepare(config, placement, decoded)  # bad data fails here, before any folder
    if not placement.is_chief:
        folder = worker_folder(config.run_dir, placement.worker)
        with runs.run_folder_lock(folder):
            return _fit(config, folder, prepared, resumed=False)
    existed = config.run_dir is not None and Path(config.run_dir).exists()
    run_dir = runs.new_run_dir(run_label(config), config.run_dir, ours=(WORKERS_DIR,))
    with runs.run_folder_lock(run_dir), continue_hint(f"continue with {resume_command(run_dir)}"):
        # another process may have started it meanwhile: refused before anything is removed
        runs.refuse_used_run_dir(run_dir, ours=(WORKERS_DIR,))
        with _no_failed_start(run_dir, existed, kept=set(os.listdir(run_dir))):
            runs.write_json(run_dir / runs.CONFIG_FILE, cfg.run_config_dict(config))
            log().info(f"Run folder: {run_dir}")
            run = _fit(config, run_dir, prepared, resumed=False, extra_callbacks=callbacks,
                       test=test)
    if config.refit:
        _refit(run)
    return run


@contextlib.contextmanager
def _no_failed_start(run_dir, existed, kept):
    """A run refused before its first epoch ended (weights that do not fit, a model that
    cannot be built) leaves no folder behind: one holding config.json would refuse the same
    command with the mistake fixed, and `--resume` would repeat the mistake. What the run
    made goes; `kept`, the entries the folder held before (a user's .git or .gitkeep, which an
    "empty" folder may hold, an augmentation preview), and the folders of a multi-worker run's
    other workers, still in use, stay, as does a folder the user made. config.json goes
    last: a kill meanwhile leaves a run that never ended an epoch, which finish_run clears."""
    try:
        yield
    except CatsDogsError:
        if not runs.read_csv(run_dir / runs.HISTORY_FILE):
            with contextlib.suppress(OSError):  # the refusal is what the user must see
                for entry in run_dir.iterdir():
                    if entry.name in (WORKERS_DIR, runs.LOCK_FILE, runs.CONFIG_FILE, *kept):
                        continue
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
                (run_dir / runs.CONFIG_FILE).unlink(missing_ok=True)
                if not existed:
                    shutil.rmtree(run_dir)
        raise


def resume_command(run_dir):
    """The command that continues the run in `run_dir`, as a user would type it."""
    return f"catsdogs train --resume {shlex.quote(str(run_dir))}"


def finish_run(config, callbacks=(), test=True, decoded=None):
    """`config`'s run in its run_dir, finished however an earlier process left it: kept if it
    finished (metrics.json is its last write: a backup a kill left beside it is removed),
    resumed if it was killed after an epoch, else trained anew (killed before its first epoch
    ended, a run holds nothing to keep: its folder is emptied, under its lock, so a process
    still in it is never cut off). For the runs a command makes inside its own folder: folds,
    seeds, trials; `callbacks`, `test` and `decoded` as for `train`."""
    from catsdogs.training.callbacks import remove_backup

    run_dir = Path(config.run_dir)
    if (run_dir / runs.METRICS_FILE).exists():
        remove_backup(run_dir / runs.CHECKPOINTS_DIR)
        log().info(f"{run_dir}: finished before, kept")
        return
    if (run_dir / runs.CONFIG_FILE).exists():
        if runs.read_csv(run_dir / runs.HISTORY_FILE):
            resume(run_dir, callbacks=callbacks, test=test, decoded=decoded)
            return
        with runs.run_folder_lock(run_dir):  # a run of ours that never ended an epoch
            shutil.rmtree(run_dir, ignore_errors=True)
    train(config, callbacks=callbacks, test=test, decoded=decoded)


def _refit(run):
    """--refit: train again on the training photos and those that chose the epoch, for the
    chosen number of epochs, keeping the last, into RUN_DIR/refit/ (a run folder of its own:
    `train --resume RUN_DIR/refit` continues it). Nothing in it is chosen on held-out photos."""
    kept, head = run.metrics["kept_epoch"], run.config.epochs
    config = dataclasses.replace(run.config, refit=False, refit_union=True, keep_epoch="last",
                                 patience=0, epochs=min(kept, head),
                                 fine_tune_epochs=max(0, kept - head),  # both stages up to it
                                 run_dir=str(run.dir / "refit"))
    log().info(f"Refit: {config.total_epochs} epochs on the training photos and those that "
               f"chose the epoch, into {config.run_dir}")
    refit = train(config)
    run.metrics["refit"] = str(refit.dir)
    runs.write_json(run.dir / runs.METRICS_FILE, run.metrics)
    return refit


def resume(run_dir, callbacks=(), test=True, decoded=None):
    """Continue an interrupted run from its last finished epoch, with its saved settings
    (a config.json of any earlier catsdogs version is upgraded first: config.upgrade);
    `callbacks`, `test` and `decoded` as for `train`."""
    run_dir = runs.existing_run_dir(run_dir)
    config = cfg.read_run_config(run_dir / runs.CONFIG_FILE)
    worker, workers = cluster_from_environment() if config.strategy == "multiworker" else (0, 1)
    if config.strategy == "multiworker" and config.workers and workers != config.workers:
        raise CatsDogsError(f"the run was trained by {config.workers} workers and would "
                            f"continue with {workers}: each worker's share of the photos, and "
                            "so the splits, would be cut anew", where=run_dir,
                            fix=f"resume it with {config.workers} workers, as it started")
    folder = worker_folder(run_dir, worker)
    with (runs.run_folder_lock(folder),  # before anything is read: a second resume stops here
          continue_hint(f"continue with {resume_command(run_dir)}")):
        if (run_dir / runs.METRICS_FILE).exists() and not (run_dir / runs.CHECKPOINTS_DIR).exists():
            raise CatsDogsError("this run already finished", where=run_dir,
                                fix="start a new run, or raise --epochs in a new one")
        placement = _placement(config)
        runs.remove_stale_temporaries(folder)
        if placement.workers > 1:
            take_chief_resume_state(placement, run_dir, backup_folder)
        done = runs.read_history(folder / runs.HISTORY_FILE)  # damaged: one line, before data
        log().info(f"Resuming {run_dir} after epoch {len(done)} of {config.total_epochs}")
        run = _fit(config, folder, _prepare(config, placement, decoded), resumed=True,
                   extra_callbacks=callbacks, test=test)
    if config.refit and run is not None:
        _refit(run)
    return run


def run_label(config):
    """The start of a run folder's default name: its preset, and what made it, so a pruned or
    distilled run does not pass for a fresh one in runs/."""
    return config.preset + ("-pruned" if config.prune_from else "") + \
        ("-distilled" if config.teacher else "")


def _check_run_dir_outside_data(config):
    """A run folder inside the photos it trains on becomes a class of the next run (its plots
    and exports as photos): refused before the data is read."""
    for folder in (config.data, config.train_dir, config.val_dir):
        runs.check_outside(config.run_dir, folder, "--run-dir")


def _check_default_data(config):
    """No --data, and the default folder is not where the command runs: the line names the
    flag, not only a path the user never typed."""
    if (config.dataset == "folder" and config.data is None and config.train_dir is None
            and not Path(DEFAULT_DATA).is_dir()):
        raise CatsDogsError(f"no --data given, and its default {DEFAULT_DATA}/ is not in this "
                            "folder", where=Path.cwd(),
                            fix="pass --data FOLDER (class sub-folders), or run from the "
                                "repository's root for its sample")


def check_image_size(config):
    """--image-size: a side the preset's layers (at progressive resizing's first epoch too)
    cannot take is one line before anything is decoded."""
    from catsdogs.models.presets import preset_of
    from catsdogs.training.progressive import side_for_epoch

    if config.image_size is None:  # the preset's own size: its layers take it
        return
    preset = preset_of(config)
    preset.check_size(side_for_epoch(0, config.total_epochs, config.progressive_start,
                                     preset.image_size[0]))


def _check_writable(config):
    """A run folder the machine will not let us write (read-only, no permission) is one line
    before any image is decoded, not after."""
    runs.check_writable(config.run_dir or runs.default_run_dir(config.preset).parent)


def _placement(config):
    """The tf.distribute placement, made before any other TensorFlow work (distribute.py)."""
    from catsdogs.training.distribute import make_placement

    return make_placement(config.strategy)


def label_titles(labels, class_names):
    """A title per training label: its class name; a blended label (MixUp, CutMix) names
    its larger class and that class's share, e.g. "dogs 0.70"."""
    import numpy as np

    labels = np.asarray(labels, np.float64)
    if labels.ndim == 1:
        return [class_names[int(label)] for label in labels]
    if labels.shape[1] == 1:  # one sigmoid: the share of the second class
        labels = np.concatenate([1 - labels, labels], axis=1)
    titles = []
    for row in labels:
        top = int(row.argmax())
        titles.append(f"{class_names[top]} {row[top]:.2f}" if row[top] < 0.99 else class_names[top])
    return titles


def preview_augmentation(config, count=32):
    """Write plots/augmentation.png: the first training images, each augmented once."""
    import numpy as np

    from catsdogs import plots

    config = resolve_config(config)
    _check_writable(config)
    if config.run_dir is not None:  # before the data is decoded
        runs.refuse_used_run_dir(config.run_dir)
        _check_run_dir_outside_data(config)
    prepared = _prepare(config, _placement(config))
    data, train_ds = prepared.data, prepared.train_ds
    run_dir = runs.new_run_dir(config.preset, config.run_dir)
    images, labels = [], []
    for batch_images, batch_labels in train_ds:
        images.append(batch_images.numpy())
        labels.append(batch_labels.numpy())
        if sum(len(b) for b in images) >= count:
            break
    images, labels = np.concatenate(images)[:count], np.concatenate(labels)[:count]
    path = run_dir / runs.PLOTS_DIR / runs.AUGMENTATION_PREVIEW
    plots.image_grid(images, label_titles(labels, data.class_names), path,
                     title=f"Augmented training images ({config.preset})")
    print(f"Augmentation preview: {path}")
    return path
