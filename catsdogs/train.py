"""Train a CNN on class folders or CIFAR-10 and write a run folder.

    python -m catsdogs.train                                  # seed-catsdogs on data/cats_and_dogs
    python -m catsdogs.train --data ../shared/data/cats_and_dogs --epochs 30
    python -m catsdogs.train --dataset cifar10 --data ../shared/data/cifar10
    python -m catsdogs.train --resume runs/seed-catsdogs-20261124-101500
    python -m catsdogs.train --list-presets
    python -m catsdogs.train --preview-augmentation --rotation-range 30

The run folder (runs/<preset>-<time>/) gets config.json, class_names.json, dataset.json,
history.csv, skipped.csv, logs/ (TensorBoard), model.keras (best epoch by validation accuracy),
saved_model/, plots/training_curves.png and metrics.json.
"""

import dataclasses
import json
import math
import sys
from pathlib import Path

from catsdogs import config as cfg
from catsdogs import runs
from catsdogs.callable_module import make_callable
from catsdogs.errors import CatsDogsError, run_command

DEFAULT_DATA = "data/cats_and_dogs"  # the small real sample shipped with the repo
MONITOR = "val_accuracy"  # what "best model" means
# settings newer than some run folders: a config.json without them resumes with these values,
# which are what those runs trained with
ADDED_LATER = {"progressive_start": 1.0, "steps_per_execution": 1, "optimizer": "adam",
               "lookahead": False}


@dataclasses.dataclass
class Prepared:
    """What a run needs before its model is built: data, pipelines, loss."""

    preset: object
    data: object
    train_ds: object
    val_ds: object
    train_size: object  # tf.Variable [height, width] of training batches (progressive.py)
    flips: object  # augment.AlternatingFlips, or None
    loss: object
    accuracy: object
    placement: object  # distribute.Placement


@dataclasses.dataclass
class Run:
    """A finished (or resumed and finished) training run."""

    dir: Path
    config: cfg.TrainConfig
    class_names: list
    history: list  # rows of history.csv as dicts
    metrics: dict  # metrics.json

    @property
    def model_path(self):
        return self.dir / runs.MODEL_FILE


def resolve_config(config):
    """Fill what the user left to defaults: preset by dataset, data, and the preset's recipe."""
    from catsdogs.models import DEFAULT_PRESET, get_preset  # Keras: not for --help

    preset = get_preset(config.preset or DEFAULT_PRESET[config.dataset])
    preset.check_weights(config.weights)  # before minutes of decoding, not after
    data = config.data
    if config.dataset == "folder" and data is None and config.train_dir is None:
        data = DEFAULT_DATA
    recipe = {field.name: getattr(preset.recipe, field.name)
              for field in dataclasses.fields(preset.recipe) if getattr(config, field.name) is None}
    resolved = dataclasses.replace(config, preset=preset.name, data=data, **recipe)
    preset.check_progressive(resolved.progressive_start)
    return resolved


# ---------------------------------------------------------------- the training run


def loss_and_accuracy(num_classes, label_smoothing):
    """Binary cross-entropy for two classes (one sigmoid unit), sparse categorical for more;
    categorical on one-hot labels when smoothing, as Keras' sparse loss cannot smooth.

    Returns:
        (loss, accuracy metric, one_hot): one_hot tells the pipeline to one-hot the labels.
    """
    import keras

    if num_classes == 2:
        return (keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing),
                keras.metrics.BinaryAccuracy(name="accuracy"), False)
    if label_smoothing:
        return (keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
                keras.metrics.CategoricalAccuracy(name="accuracy"), True)
    return (keras.losses.SparseCategoricalCrossentropy(),
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"), False)


def balanced_class_weights(labels, num_classes):
    """{class: total / (classes x count)}: every class weighs the same in the loss overall."""
    import numpy as np

    counts = np.bincount(labels, minlength=num_classes)
    return {i: len(labels) / (num_classes * count) for i, count in enumerate(counts) if count}


def _prepare(config, placement):
    """Seeds, decoded data and tf.data pipelines for `config` (nothing written yet)."""
    import keras
    import tensorflow as tf

    from catsdogs.augment import AlternatingFlips, build_augmenter
    from catsdogs.data import load_image_data, make_dataset
    from catsdogs.distribute import shard_by_data
    from catsdogs.models import get_preset

    keras.utils.set_random_seed(config.seed)
    preset = get_preset(config.preset)
    data = load_image_data(config, preset.image_size)
    loss, accuracy, one_hot = loss_and_accuracy(len(data.class_names), config.label_smoothing)
    classes = len(data.class_names) if one_hot else None
    augmenter = build_augmenter(config.augment, seed=config.seed)
    global_batch = config.batch_size * placement.replicas
    train_size = None
    if config.progressive_start < 1:
        train_size = tf.Variable(preset.image_size, trainable=False, dtype=tf.int32)
    flips = None
    if config.augment.alternate_flips:
        flips = AlternatingFlips(len(data.train), seed=config.seed)
    train_ds = make_dataset(data.train, global_batch, augmenter, shuffle_seed=config.seed,
                            one_hot=classes, resize_to=train_size, flips=flips)
    val_ds = make_dataset(data.val, global_batch, one_hot=classes)
    return Prepared(preset, data, shard_by_data(train_ds), shard_by_data(val_ds), train_size,
                    flips, loss, accuracy, placement)


def _report_data(data, run_dir):
    """Print class names and counts; save them (dataset.json) and the skipped files; warn
    about leakage and imbalance (doctor's cheap checks)."""
    from catsdogs.doctor import quick_warnings

    summary = data.summary()
    for split in ("train", "validation"):
        counts = ", ".join(f"{name} {n}" for name, n in summary["counts"][split].items())
        print(f"{split:>10}: {counts}  ({summary['sources'][split]})")
    runs.write_csv(run_dir / runs.SKIPPED_FILE, ["path", "reason"], data.skipped)
    if data.skipped:
        print(f"Skipped {len(data.skipped)} unusable file(s); see {run_dir / runs.SKIPPED_FILE}")
    runs.write_json(run_dir / runs.DATASET_FILE, summary)
    for line in quick_warnings(data):
        print(line)


def _fit(config, run_dir, prepared, resumed):
    """Build, compile and fit; return the Run. Resumed runs continue from their backup."""
    import keras

    from catsdogs import augment, callbacks, optim, progressive

    preset, data, train_ds, val_ds = prepared.preset, prepared.data, prepared.train_ds, prepared.val_ds
    _report_data(data, run_dir)
    names_file = run_dir / runs.CLASS_NAMES_FILE
    if resumed and json.loads(names_file.read_text()) != data.class_names:
        raise CatsDogsError("the data's classes differ from the run's class_names.json",
                            where=names_file, fix="resume with the data the run started with")
    runs.write_json(names_file, data.class_names)

    placement = prepared.placement
    with placement.strategy.scope():
        model = preset.build(len(data.class_names), config.weights)
        steps_per_epoch = -(-len(data.train) // (config.batch_size * placement.replicas))
        model.compile(optimizer=optim.make_optimizer(config, steps_per_epoch, model,
                                                     placement.replicas),
                      loss=prepared.loss, metrics=[prepared.accuracy],
                      steps_per_execution=config.steps_per_execution)
        if preset.adapt is not None:  # a resumed run's weights replace these at on_train_begin
            preset.adapt(model, data.train.pixels)
    history = callbacks.HistoryCSV(run_dir / runs.HISTORY_FILE)
    # What model.keras holds; with no model.keras (a run of an older catsdogs killed between
    # its history and its first save) the next epoch's model is kept whatever its accuracy.
    best_so_far = -math.inf
    if (run_dir / runs.MODEL_FILE).exists():
        best_so_far = max((float(r[MONITOR]) for r in history.rows if r.get(MONITOR)),
                          default=-math.inf)
    first_batch = next(iter(train_ds))[0].numpy()
    fit_callbacks = [] if prepared.train_size is None else [progressive.ProgressiveResizing(
        prepared.train_size, config.epochs, config.progressive_start, preset.image_size)]
    if prepared.flips is not None:
        fit_callbacks.append(augment.FlipEpoch(prepared.flips))
    if config.lookahead:  # an epoch's last step takes the average: validated and saved
        fit_callbacks.append(optim.Lookahead(steps_per_epoch, config.epochs))
    fit_callbacks += [
        keras.callbacks.TerminateOnNaN(),
        # the best model before the backup and history: a kill between them then redoes an epoch
        # whose model may be kept, never records an epoch whose better model was not
        callbacks.BestModelCheckpoint(run_dir / runs.MODEL_FILE, MONITOR, best=best_so_far),
        callbacks.AtomicBackupAndRestore(run_dir / runs.CHECKPOINTS_DIR / "backup"),
        history,
        keras.callbacks.TensorBoard(log_dir=str(run_dir / runs.LOGS_DIR), write_graph=False),
        callbacks.TrainingImagesToTensorBoard(run_dir / runs.LOGS_DIR, first_batch),
    ]
    if config.patience:
        fit_callbacks.append(keras.callbacks.EarlyStopping(MONITOR, patience=config.patience,
                                                           mode="max"))
    model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=fit_callbacks,
              shuffle=False,  # the pipeline shuffles
              class_weight=balanced_class_weights(data.train.labels, len(data.class_names))
              if config.class_weight == "auto" else None)

    rows = history.rows
    nan_epoch = next((int(r["epoch"]) for r in rows if not math.isfinite(float(r["loss"]))), None)
    if nan_epoch is not None:
        kept = ("the best model so far is kept in model.keras" if (run_dir / runs.MODEL_FILE).exists()
                else "no model was saved")
        raise CatsDogsError(f"training loss became NaN in epoch {nan_epoch}", where=run_dir,
                            fix=f"lower --learning-rate (it was {config.learning_rate}); {kept}")
    return _finish(config, run_dir, data, rows, model)


def _finish(config, run_dir, data, rows, model):
    """After fit: SavedModel of the best model, plots, metrics.json; drop the resume backup."""
    import keras

    from catsdogs import callbacks, plots
    from catsdogs.export import write_saved_model

    best = max(rows, key=lambda r: float(r[MONITOR]))
    best_model = keras.saving.load_model(run_dir / runs.MODEL_FILE, safe_mode=True)
    write_saved_model(best_model, run_dir / runs.SAVED_MODEL_DIR, data.class_names)
    plots.training_curves(rows, run_dir / runs.PLOTS_DIR / "training_curves.png",
                          title=f"{config.preset} on {data.sources['train']}")
    metrics = {
        "best_epoch": int(best["epoch"]), "best_val_accuracy": float(best[MONITOR]),
        "best_val_loss": float(best["val_loss"]), "final_val_accuracy": float(rows[-1][MONITOR]),
        "epochs_run": len(rows), "epochs_planned": config.epochs,
        "train_seconds": round(sum(float(r["seconds"]) for r in rows), 1),  # all sessions
        "train_images": len(data.train), "validation_images": len(data.val),
        "parameters": model.count_params(),
    }
    runs.write_json(run_dir / runs.METRICS_FILE, metrics)
    callbacks.remove_backup(run_dir / runs.CHECKPOINTS_DIR)
    print(f"Best {MONITOR} {metrics['best_val_accuracy']:.4f} at epoch {metrics['best_epoch']} "
          f"of {len(rows)} ({metrics['train_seconds']:.1f} s of training)")
    print(f"Model:       {run_dir / runs.MODEL_FILE}  (SavedModel: {run_dir / runs.SAVED_MODEL_DIR})")
    print(f"TensorBoard: tensorboard --logdir {run_dir / runs.LOGS_DIR}")
    return Run(run_dir, config, data.class_names, rows, metrics)


def train(config):
    """Train a model as `config` says and write a new run folder.

    Args:
        config: a TrainConfig; fields left None take the preset's defaults.

    Returns:
        Run: the run folder, history and metrics.

    Raises:
        CatsDogsError: bad data, bad settings, or a loss that became NaN.

    Example:
        >>> run = train(TrainConfig(data="data/cats_and_dogs", epochs=2))  # doctest: +SKIP
        >>> run.metrics["best_val_accuracy"]  # doctest: +SKIP
    """
    config = resolve_config(config)
    placement = _placement(config)
    print("Settings:", json.dumps(cfg.to_dict(config)))
    if config.run_dir is not None:
        runs.refuse_used_run_dir(config.run_dir)
    prepared = _prepare(config, placement)  # bad data fails here, before any folder is made
    run_dir = runs.new_run_dir(config.preset, config.run_dir)
    runs.write_json(run_dir / runs.CONFIG_FILE, cfg.to_dict(config))
    print(f"Run folder: {run_dir}")
    return _fit(config, run_dir, prepared, resumed=False)


def resume(run_dir):
    """Continue an interrupted run from its last finished epoch, with its saved settings."""
    run_dir = runs.existing_run_dir(run_dir)
    config = cfg.from_dict(cfg.TrainConfig, cfg.load_json(run_dir / runs.CONFIG_FILE),
                           source=run_dir / runs.CONFIG_FILE)
    config = dataclasses.replace(config, **{name: value for name, value in ADDED_LATER.items()
                                            if getattr(config, name) is None})
    placement = _placement(config)
    runs.remove_stale_temporaries(run_dir)
    done = runs.read_csv(run_dir / runs.HISTORY_FILE)
    if (run_dir / runs.METRICS_FILE).exists() and not (run_dir / runs.CHECKPOINTS_DIR).exists():
        raise CatsDogsError("this run already finished", where=run_dir,
                            fix="start a new run, or raise --epochs in a new one")
    print(f"Resuming {run_dir} after epoch {len(done)} of {config.epochs}")
    return _fit(config, run_dir, _prepare(config, placement), resumed=True)


def _placement(config):
    """The tf.distribute placement, made before any other TensorFlow work (distribute.py)."""
    from catsdogs.distribute import make_placement

    return make_placement(config.strategy)


def preview_augmentation(config, count=32):
    """Write plots/augmentation.png: the first training images, each augmented once."""
    import numpy as np

    from catsdogs import plots

    config = resolve_config(config)
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
    if labels.ndim == 2:  # one-hot (label smoothing)
        labels = labels.argmax(axis=1)
    path = run_dir / runs.PLOTS_DIR / "augmentation.png"
    plots.image_grid(images, [data.class_names[i] for i in labels], path,
                     title=f"Augmented training images ({config.preset})")
    print(f"Augmentation preview: {path}")
    return path


# ---------------------------------------------------------------- command line


def build_parser():
    parser = cfg.command_parser("train", __doc__)
    actions = parser.add_argument_group("actions")
    actions.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    actions.add_argument("--list-presets", action="store_true", help="list presets and exit")
    actions.add_argument("--preview-augmentation", action="store_true",
                         help="write plots/augmentation.png in a new run folder and exit")
    actions.add_argument("--config", metavar="FILE.json", help="settings file; flags override it")
    cfg.add_flags(parser, cfg.TrainConfig)
    return parser


def config_from_args(args):
    """defaults <- preset defaults <- --config file <- flags, as one TrainConfig."""
    from catsdogs.models import DEFAULT_PRESET, get_preset

    from_file = cfg.load_json(args.config) if args.config else {}
    cfg.check_keys(cfg.TrainConfig, from_file, source=args.config)
    flags = cfg.given_flags(args, cfg.TrainConfig)
    merged = cfg.merge(from_file, flags)
    dataset = merged.get("dataset", "folder")
    preset = get_preset(merged.get("preset") or DEFAULT_PRESET.get(dataset, "seed-catsdogs"))
    base = {"augment": cfg.to_dict(preset.recipe.augment)}
    return cfg.TrainConfig(**cfg.merge(base, merged))


def main(argv=None):
    try:
        return run_command(lambda: _run(build_parser().parse_args(argv)))
    except KeyboardInterrupt:
        print("\ninterrupted: continue with python -m catsdogs.train --resume RUN_DIR", file=sys.stderr)
        return 130


def _run(args):
    if args.list_presets:
        from catsdogs.models import describe_presets

        print("\n".join(describe_presets()))
    elif args.resume:
        if cfg.given_flags(args, cfg.TrainConfig) or args.config:
            raise CatsDogsError("--resume takes its settings from the run's config.json",
                                where=args.resume, fix="drop the other flags")
        resume(args.resume)
    elif args.preview_augmentation:
        preview_augmentation(config_from_args(args))
    else:
        train(config_from_args(args))
    return 0


make_callable(__name__, train)


if __name__ == "__main__":
    raise SystemExit(main())
