"""Every Keras callback of a training run, in one place.

Where Keras' own fall short of "nothing torn, nothing lost", they are wrapped:

- `ModelCheckpoint` truncates the old file before writing the new one: a kill mid-save leaves
  no good model. `BestModelCheckpoint` writes beside it and swaps it in.
- `BackupAndRestore` writes its weights and its epoch counter as two separate files: a kill
  between them resumes from a mismatched pair. `AtomicBackupAndRestore` swaps both in at once.
- `CSVLogger` appends: a resumed run repeats the epochs it redoes, and a kill mid-write tears
  the file. `HistoryCSV` rewrites it whole, keeping one row per epoch.

What Keras has no callback for: `InterruptAtBatchEnd` (Ctrl-C that always stops the run),
`RelayToHead` (stage one on features computed once),
`ProgressiveResizing` (the training image size per epoch),
`FlipEpoch` (airbench's alternating flips), `Lookahead` (airbench's weight averaging),
`TrainingImagesToTensorBoard` and `EpochLog` (one plain line per epoch).
"""

import json
import math
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import keras
import numpy as np

from catsdogs import runs
from catsdogs.console import log
from catsdogs.errors import CatsDogsError
from catsdogs.inference.evaluate import confusion_matrix
from catsdogs.training.distill import student_of
from catsdogs.training.progressive import side_for_epoch

# TensorBoard folders of our own images under logs/, beside Keras' train/ and validation/: a
# live TensorBoard follows only the newest events file of a folder, so a file of ours in
# Keras' folders would stop its curves from updating until TensorBoard restarts
TRAINING_IMAGES_DIR, VALIDATION_IMAGES_DIR = "train_images", "validation_images"


def _finite(logs, key):
    value = (logs or {}).get(key)
    return value is not None and math.isfinite(float(value))


class BestModelCheckpoint(keras.callbacks.Callback):
    """Save the model when `monitor` improves (or, with `every_epoch`, after every epoch: a
    run that keeps its last epoch), atomically; never after a non-finite loss.
    A distilling run saves its student alone, not the Distiller (compression: distill.py).

    Args:
        path: the `.keras` file to keep the best model in.
        monitor: a key of the epoch logs, higher is better (e.g. "val_accuracy").
        best: the best value seen before this fit (for resumed runs).
        every_epoch: save each epoch's model whatever `monitor` says.
    """

    def __init__(self, path, monitor="val_accuracy", best=-math.inf, every_epoch=False):
        super().__init__()
        self.path, self.monitor, self.best = Path(path), monitor, best
        self.every_epoch = every_epoch

    def on_epoch_end(self, epoch, logs=None):
        if not (_finite(logs, "loss") and _finite(logs, self.monitor)):
            return  # a NaN model must never replace a good one
        if self.every_epoch or logs[self.monitor] > self.best:
            self.best = float(logs[self.monitor])
            with runs.atomic_path(self.path) as temp:
                student_of(self.model).save(temp)


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore (weights, optimizer state, epoch), with the pair of files it
    writes swapped in as one folder, so a kill at any moment leaves a consistent backup.
    The backup is kept after training stops (Keras deletes it, even after a NaN stop);
    `train` removes it once a run finishes cleanly. `stage` (training/stages.py) is written
    into its metadata, so the stage a backup belongs to is swapped in with its weights."""

    def __init__(self, backup_dir):
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=False)
        self.stage = {}

    def saved_metadata(self):
        """The backup's metadata (epoch, stage), or {} when there is none yet."""
        runs.recover_dir(self.backup_dir)
        try:
            return json.loads(Path(self._training_metadata_path).read_text())
        except (OSError, ValueError):
            return {}

    def save_now(self, epochs_done):
        """Back up the model as it is, as after `epochs_done` epochs."""
        self._current_epoch, self._last_batch_seen = epochs_done, 0
        self._save_model()

    def on_train_begin(self, logs=None):
        runs.recover_dir(self.backup_dir)
        try:
            super().on_train_begin(logs)
        except ValueError as error:  # Keras: the saved weights do not match the model's layers
            raise CatsDogsError(f"the run's resume state does not fit the preset's network "
                                f"({type(error).__name__})", where=self.backup_dir,
                                fix="the preset changed since this run began (another catsdogs "
                                    "version); start a new run") from None

    def on_epoch_end(self, epoch, logs=None):
        if _finite(logs, "loss"):  # resuming from NaN weights would only fail again
            super().on_epoch_end(epoch, logs)

    def _save_model(self):
        def write(folder):
            folder.mkdir(parents=True)
            weights = folder / Path(self._weights_path).name
            self.model.save_weights(str(weights))
            metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen,
                        **self.stage}
            (folder / Path(self._training_metadata_path).name).write_text(json.dumps(metadata))

        runs.replace_dir(self.backup_dir, write)


class HistoryCSV(keras.callbacks.Callback):
    """history.csv with one row per finished epoch (1-based), rewritten atomically each epoch.

    Rows of epochs at or after the one a resumed fit restarts from are dropped, so a run
    killed and resumed any number of times has no gaps and no repeats.
    """

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)
        self.rows = runs.read_history(self.path)
        self._started, self._charged = None, 0.0

    def charge(self, seconds):
        """Count `seconds` of work done for the epochs before they began (features computed
        once: training/features.py) in the next epoch's row."""
        self._charged += seconds

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._started + self._charged
        self._charged = 0.0
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
               "seconds": round(seconds, 3)}
        self.rows = [r for r in self.rows if int(r["epoch"]) < epoch + 1] + [row]
        header = list(dict.fromkeys(key for r in self.rows for key in r))
        runs.write_csv(self.path, header, [[r.get(k, "") for k in header] for r in self.rows])


class RelayToHead(keras.callbacks.Callback):
    """Stage one on features computed once (training/features.py) fits a head model while the
    run's callbacks see the full one: pass the full model's stop requests (TerminateOnNaN,
    EarlyStopping) and resumed epoch (BackupAndRestore's) on to the head model. Last in the
    list, so it runs after the callbacks it relays."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def on_train_begin(self, logs=None):
        self.head._initial_epoch = self.model._initial_epoch
        self.model.stop_training = False

    def on_train_batch_end(self, batch, logs=None):
        self.head.stop_training = self.model.stop_training

    on_epoch_end = on_train_batch_end

    def on_train_end(self, logs=None):
        self.head.history = self.model.history  # what the head model's fit returns


class TrainingImagesToTensorBoard(keras.callbacks.Callback):
    """Write a grid of augmented training images to TensorBoard once, at the start of training,
    so a user can see what the model is fed."""

    def __init__(self, log_dir, images, max_images=16):
        super().__init__()
        self.log_dir, self.images = Path(log_dir), np.asarray(images[:max_images])

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        writer = tf.summary.create_file_writer(str(self.log_dir / TRAINING_IMAGES_DIR))
        with writer.as_default():
            pixels = np.clip(self.images, 0, 255).astype(np.uint8)
            tf.summary.image("training images (augmented)", pixels, step=0,
                             max_outputs=len(pixels))
        writer.close()


class ConfusionMatrixToTensorBoard(keras.callbacks.Callback):
    """A confusion-matrix image in TensorBoard's Images tab every `every` epochs and at the last,
    on up to `max_images` validation images (spread over the split): cheap next to an epoch,
    and it shows which classes the model confuses while it trains."""

    def __init__(self, log_dir, pixels, labels, class_names, epochs, every=None, max_images=1000):
        super().__init__()
        picks = np.linspace(0, len(labels) - 1, min(max_images, len(labels))).astype(int)
        self.pixels, self.labels = pixels[picks], np.asarray(labels)[picks]
        self.log_dir, self.class_names, self.epochs = Path(log_dir), list(class_names), epochs
        self.every = every or max(1, epochs // 10)
        self.writer = None  # one for the run, made at the first image

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every and epoch + 1 != self.epochs:
            return
        import tensorflow as tf

        from catsdogs import plots

        out = self.model.predict(self.pixels.astype(np.float32), batch_size=256, verbose=0)
        predicted = (out[:, 0] > 0.5).astype(int) if out.shape[-1] == 1 else out.argmax(axis=1)
        matrix = confusion_matrix(self.labels, predicted, len(self.class_names))
        accuracy = float(np.trace(matrix) / max(1, matrix.sum()))
        figure = plots.confusion_matrix_figure(matrix, self.class_names, title=(
            f"epoch {epoch + 1}: {len(self.labels)} validation images, accuracy {accuracy:.1%}"))
        image = tf.io.decode_png(plots.png_bytes(figure), channels=3)[None]
        self.writer = self.writer or tf.summary.create_file_writer(
            str(self.log_dir / VALIDATION_IMAGES_DIR))
        with self.writer.as_default():
            tf.summary.image("confusion matrix", image, step=epoch)
        self.writer.flush()

    def on_train_end(self, logs=None):  # a two-stage run calls fit twice: a new one for each
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class HParamsToTensorBoard(keras.callbacks.Callback):
    """TensorBoard's HParams dashboard: the run's settings beside its best and final validation
    accuracy, so `tensorboard --logdir runs/` compares every run in one table.

    The settings go through TensorBoard's own hparams summaries (its `KerasCallback` writes only
    those, so the two metrics are scalars written here, updated each epoch: a killed run shows
    what it reached). `best_so_far` carries a resumed run's best from history.csv.
    """

    METRICS = (("best_val_accuracy", None), ("final_val_accuracy", None),
               ("epoch_accuracy", "validation"), ("epoch_loss", "validation"))

    def __init__(self, log_dir, hparams, best_so_far=-math.inf):
        super().__init__()
        self.log_dir, self.hparams, self.best = str(log_dir), dict(hparams), best_so_far

    def on_train_begin(self, logs=None):
        import tensorflow as tf
        from tensorboard.plugins.hparams import api as hp

        self.writer = tf.summary.create_file_writer(self.log_dir)  # one for the run
        with self.writer.as_default():
            hp.hparams_config(hparams=[hp.HParam(name) for name in self.hparams],
                              metrics=[hp.Metric(tag, group=group) for tag, group in self.METRICS])
            hp.hparams(self.hparams, trial_id=Path(self.log_dir).parent.name)

    def on_epoch_end(self, epoch, logs=None):
        if not _finite(logs, "val_accuracy"):
            return
        import tensorflow as tf

        self.best = max(self.best, float(logs["val_accuracy"]))
        with self.writer.as_default():
            tf.summary.scalar("best_val_accuracy", self.best, step=epoch)
            tf.summary.scalar("final_val_accuracy", float(logs["val_accuracy"]), step=epoch)
        self.writer.flush()  # a killed run shows what it reached

    def on_train_end(self, logs=None):
        self.writer.close()


class InterruptAtBatchEnd(keras.callbacks.Callback):
    """Ctrl-C during fit raises KeyboardInterrupt at the end of the running batch, in this
    callback's frame, where it always reaches the command (exit code 130, the resume line).

    Python raises it in whatever Python code the main thread runs next; during fit that can
    be a destructor TensorFlow runs (a tf.data iterator's `__del__`), where it is printed as
    "Exception ignored" and lost: a run on a loaded machine once trained on to its last epoch
    after Ctrl-C. A second Ctrl-C raises at once, as without this callback.

    Used as a context around `fit` too, so the old handler comes back when fit ends by an
    exception (no `on_train_end` then): else a notebook's next Ctrl-C would only set a flag.
    """

    def __init__(self):
        super().__init__()
        self._requested, self._previous = False, None

    def on_train_begin(self, logs=None):
        if threading.current_thread() is threading.main_thread():  # where signals go
            self._previous = signal.signal(signal.SIGINT, self._request)

    def _request(self, signum, frame):
        signal.signal(signal.SIGINT, self._previous)
        self._requested = True

    def _raise_if_requested(self, *_, **__):
        if self._requested:
            self._requested = False
            raise KeyboardInterrupt

    on_train_batch_end = on_test_batch_end = on_epoch_end = _raise_if_requested

    def on_train_end(self, logs=None):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.on_train_end()


class ProgressiveResizing(keras.callbacks.Callback):
    """Set the training pipeline's image size (a tf.Variable [height, width]) each epoch, and
    record it as `image_side` in the epoch's logs (history.csv, TensorBoard)."""

    def __init__(self, size_variable, epochs, start, full_size):
        super().__init__()
        self.size_variable, self.epochs, self.start = size_variable, epochs, start
        self.full_size = tuple(full_size)
        self.size = None  # (height, width) of this epoch's training images

    def size_for_epoch(self, epoch):
        return tuple(side_for_epoch(epoch, self.epochs, self.start, full) for full in self.full_size)

    def on_epoch_begin(self, epoch, logs=None):
        size = self.size_for_epoch(epoch)
        if size != self.size:
            log().info(f"Progressive resizing: training on {size[0]}x{size[1]} images from "
                       f"epoch {epoch + 1}")
        self.size = size
        self.size_variable.assign(size)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["image_side"] = self.size[0]


class FlipEpoch(keras.callbacks.Callback):
    """Tell an AlternatingFlips which epoch the next batches belong to."""

    def __init__(self, flips):
        super().__init__()
        self.flips = flips

    def on_epoch_begin(self, epoch, logs=None):
        self.flips.epoch.assign(epoch)


class Lookahead(keras.callbacks.Callback):
    """airbench's lookahead: every `every` steps the weights (BatchNorm statistics too) move to
    a running average of themselves, whose weight grows as progress^3 up to `decay`: free to
    move early, averaged late. The last step of each epoch takes the average, so validation,
    model.keras and the resume backup all see it (airbench's epochs end the same way).

    Progress is the optimizer's step count, which resume restores; the average restarts from
    the restored weights (themselves an epoch-end average).
    """

    def __init__(self, steps_per_epoch, epochs, every=5, decay=0.95 ** 5):
        super().__init__()
        self.steps_per_epoch, self.total_steps = steps_per_epoch, max(1, steps_per_epoch * epochs)
        self.every, self.decay = every, decay
        self.averaged, self.average, self.last_step = None, None, 0

    def on_train_batch_end(self, batch, logs=None):
        if self.average is None:  # now, not at train begin: after a resume's restore
            self.averaged = [w for w in self.model.weights if "float" in str(w.dtype)]
            self.average = [keras.ops.convert_to_numpy(w) for w in self.averaged]
        weights = self.averaged
        step = int(self.model.optimizer.iterations)
        if step - self.last_step >= self.every:
            self.last_step = step
            weight = self.decay * min(1.0, step / self.total_steps) ** 3
            for i, variable in enumerate(weights):
                self.average[i] = (weight * self.average[i]
                                   + (1 - weight) * keras.ops.convert_to_numpy(variable))
                variable.assign(self.average[i])
        if batch + 1 >= self.steps_per_epoch:
            for variable, average in zip(weights, self.average):
                variable.assign(average)


class EpochLog(keras.callbacks.Callback):
    """One plain line per epoch on stderr, for logs that are files: Keras' `verbose=2` prints
    two (the "Epoch 3/30" header apart from its numbers), its `verbose=1` a bar redrawn with
    carriage returns and colour codes."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs, self._started = epochs, None

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        numbers = "  ".join(f"{key} {float(value):.4f}" for key, value in (logs or {}).items()
                            if key != "learning_rate")
        log().info(f"epoch {epoch + 1}/{self.epochs}  {numbers}  "
                   f"{time.perf_counter() - self._started:.1f} s")


def remove_backup(backup_dir):
    """Delete a finished run's resume state: renamed first (one step), so a kill while the
    files go never leaves half a backup under the name `--resume` trusts; what a kill leaves
    under the hidden name goes at the next call (finish_run calls it for a finished run)."""
    backup_dir = Path(backup_dir)
    if backup_dir.exists():
        os.replace(backup_dir, backup_dir.with_name(f".{backup_dir.name}.tmp-{os.getpid()}"))
    for going in backup_dir.parent.glob(f".{backup_dir.name}.tmp-*"):  # a killed call's too
        shutil.rmtree(going, ignore_errors=True)
