"""Stage one on features computed once (Keras' transfer-learning guide, "fast feature extraction").

While the body is frozen, an image's features (the head's input) are the same every epoch:
the body runs once over the training and validation images, and the head trains on its
outputs, epochs in the time the slow path takes to run the body once. Stage two, if any, goes
on with the full model, whose head layer is the one that trained.

The run's callbacks see the full model (Keras' `fit` takes a ready CallbackList): what they
save, back up, restore and plot is the model the slow path would have, history.csv gets the
same columns, and the resume backup is the same on either path. `RelayToHead` passes their
stop requests and a resumed epoch on to the head model Keras fits. The features come from
the body as the resume backup restores it, and their time counts in the first epoch's seconds.

Dropout layers right before the head act on the features each step, as on the slow path: they
belong to the head model here. BatchNorm layers of a frozen body run in inference mode on
either path.
"""

import math
import time

from catsdogs.console import log
from catsdogs.errors import CatsDogsError


EACH_WORKER = "each worker trains on its own batches"  # why multiworker training cannot


def _blocker(config):
    """Why stage one cannot train on features computed once, or ""."""
    if not config.freezes_body_first:
        return "needs a frozen body: --weights other than none, or --fine-tune-epochs"
    if config.teacher is not None:
        return "with a teacher: the teacher sees each augmented batch"
    if config.strategy == "multiworker":
        return f"with --strategy multiworker: {EACH_WORKER}"
    if config.ema or config.lookahead:
        return "with --ema or --lookahead: weight averages are kept on the slow path only"
    if config.progressive_start is not None and config.progressive_start < 1:
        return "with --progressive-start: the features would have one image size"
    return ""


def _augments(config):
    augment = config.augment
    return bool((augment is not None and not augment.is_identity) or config.mixup
                or config.cutmix or config.rand_augment)


def check(config):
    """--cache-features asked for where it cannot work: one line, before any image is decoded."""
    reason = _blocker(config)
    if config.cache_features and reason:
        raise CatsDogsError(f"--cache-features {reason}", where="--cache-features",
                            fix="drop --cache-features")


def check_local_workers(config):
    """--cache-features with --local-workers: one line from the launcher, before any worker
    starts. Its settings say multiworker only once handed to the workers, where check() would
    refuse them after TensorFlow loads, naming a --strategy the user never typed."""
    if config.cache_features:
        raise CatsDogsError(f"--cache-features with --local-workers: {EACH_WORKER}",
                            where="--cache-features", fix="drop --cache-features")


def used(config, pixels_in="ram"):
    """Whether stage one trains on features computed once: as --cache-features says; by
    default when nothing changes the images between epochs (no augmentation) and the pixels
    are in memory (`pixels_in`, the storage mode the data loaded with): where they went to a
    disk cache or nowhere because they did not fit, every image's features in memory could
    bring back what that avoided (at 32x32 with 512 features, two thirds of the pixels)."""
    if _blocker(config):
        return False
    if config.cache_features is not None:
        return config.cache_features
    return not _augments(config) and pixels_in == "ram"


def split_at_features(model):
    """(extractor, head model) of a preset's model: pixels -> features, features -> probabilities.

    The features are the head's input, before the Dropout layers right in front of it; the head
    model holds those Dropout layers and the head, the same layer objects as `model`, so what
    it learns is `model`'s. Each layer's first call is its call in `model`.
    """
    import keras

    from catsdogs.models.transfer import head_of

    head = head_of(model)
    trailing, features = [head], head.input
    while True:
        dropout = next((layer for layer in model.layers
                        if isinstance(layer, keras.layers.Dropout) and layer.output is features),
                       None)
        if dropout is None:
            break
        trailing.insert(0, dropout)
        features = dropout.input
    extractor = keras.Model(model.input, features, name=f"{model.name}_features")
    inputs = x = keras.Input(shape=features.shape[1:], name="features")
    for layer in trailing:
        x = layer(x)
    return extractor, keras.Model(inputs, x, name=f"{model.name}_head")


def _features(extractor, split, batch_size):
    """The extractor's outputs for every image of `split`, in order (float32, one row each)."""
    from catsdogs.data.tf_pipeline import make_dataset

    return extractor.predict(make_dataset(split, batch_size), verbose=0)


def _feature_split(split, features):
    from catsdogs.data.datasets import Split

    return Split(features, split.labels, [])


def head_fit(model, prepared, config, fit_options):
    """A stage-one `fit(epochs, callbacks, initial_epoch=0)` that trains `model`'s head on
    features computed once.

    Args:
        model: the compiled full model, its body frozen (stages.set_stage(model, 1)).
        prepared: train.Prepared (the decoded splits, the batch, the placement, loss and metric).
        config: the run's TrainConfig (seed, augmentation).
        fit_options: the slow path's `model.fit` keyword arguments but its data (verbose,
            class_weight, shuffle).
    """

    def fit(epochs, callbacks, initial_epoch=0):
        import keras

        from catsdogs.data.tf_pipeline import make_dataset
        from catsdogs.training.callbacks import AtomicBackupAndRestore, HistoryCSV, RelayToHead
        from catsdogs.training.distribute import distribute

        data, batch, placement = prepared.data, prepared.worker_batch, prepared.placement
        extractor, head = split_at_features(model)
        accuracy = prepared.accuracy
        with placement.strategy.scope():  # the optimizer is the full model's: one state
            head.compile(optimizer=model.optimizer, loss=prepared.loss,
                         metrics=[type(accuracy).from_config(accuracy.get_config())],
                         steps_per_execution=model.steps_per_execution)
        backup = next(c for c in callbacks if isinstance(c, AtomicBackupAndRestore))
        backup.set_model(model)
        backup.on_train_begin()  # the body a resumed run trains on (fit restores it again)
        started = time.perf_counter()
        train_features = _features(extractor, data.train, batch)
        val_features = _features(extractor, data.val, batch)
        seconds = time.perf_counter() - started
        next(c for c in callbacks if isinstance(c, HistoryCSV)).charge(seconds)
        log().info(f"Features: the frozen body ran once over {len(data.train) + len(data.val)} "
                   f"images in {seconds:.1f} s; the head trains on its "
                   f"{train_features.shape[-1]} outputs per image"
                   + ("; augmentation starts with stage two" if _augments(config) else ""))
        train_ds = make_dataset(_feature_split(data.train, train_features), batch,
                                shuffle_seed=config.seed, one_hot=prepared.one_hot)
        val_ds = make_dataset(_feature_split(data.val, val_features), batch,
                              one_hot=prepared.one_hot)
        verbose = fit_options.get("verbose", "auto")
        relayed = keras.callbacks.CallbackList(
            [*callbacks, RelayToHead(head)], add_history=True, add_progbar=verbose != 0,
            model=model, verbose=verbose, epochs=epochs,
            steps=math.ceil(len(data.train) / batch))
        head.fit(distribute(placement, train_ds), validation_data=distribute(placement, val_ds),
                 epochs=epochs, initial_epoch=initial_epoch, callbacks=relayed, **fit_options)

    return fit
