"""Every Keras callback of a training run, in one place.

Where Keras' own fall short of "nothing torn, nothing lost", they are wrapped:

- `ModelCheckpoint` truncates the old file before writing the new one: a kill mid-save leaves
  no good model. `BestModelCheckpoint` writes beside it and swaps it in.
- `BackupAndRestore` writes its weights and its epoch counter as two separate files: a kill
  between them resumes from a mismatched pair. `AtomicBackupAndRestore` swaps both in at once.
- `CSVLogger` appends: a resumed run repeats the epochs it redoes, and a kill mid-write tears
  the file. `HistoryCSV` rewrites it whole, keeping one row per epoch.

What Keras has no callback for: `ProgressiveResizing` (the training image size per epoch),
`FlipEpoch` (airbench's alternating flips), `Lookahead` (airbench's weight averaging) and
`TrainingImagesToTensorBoard`.
"""

import json
import math
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from catsdogs import runs
from catsdogs.errors import CatsDogsError
from catsdogs.training.progressive import side_for_epoch


def _finite(logs, key):
    value = (logs or {}).get(key)
    return value is not None and math.isfinite(float(value))


class BestModelCheckpoint(keras.callbacks.Callback):
    """Save the model when `monitor` improves, atomically; never after a non-finite loss.

    Args:
        path: the `.keras` file to keep the best model in.
        monitor: a key of the epoch logs, higher is better (e.g. "val_accuracy").
        best: the best value seen before this fit (for resumed runs).
    """

    def __init__(self, path, monitor="val_accuracy", best=-math.inf):
        super().__init__()
        self.path, self.monitor, self.best = Path(path), monitor, best

    def on_epoch_end(self, epoch, logs=None):
        if not (_finite(logs, "loss") and _finite(logs, self.monitor)):
            return  # a NaN model must never replace a good one
        if logs[self.monitor] > self.best:
            self.best = float(logs[self.monitor])
            with runs.atomic_path(self.path) as temp:
                self.model.save(temp)


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore (weights, optimizer state, epoch), with the pair of files it
    writes swapped in as one folder, so a kill at any moment leaves a consistent backup.
    The backup is kept after training stops (Keras deletes it, even after a NaN stop);
    `train` removes it once a run finishes cleanly."""

    def __init__(self, backup_dir):
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=False)

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
            metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen}
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
        self.rows = runs.read_csv(self.path)
        self._started = None

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
               "seconds": round(time.perf_counter() - self._started, 3)}
        self.rows = [r for r in self.rows if int(r["epoch"]) < epoch + 1] + [row]
        header = list(dict.fromkeys(key for r in self.rows for key in r))
        runs.write_csv(self.path, header, [[r.get(k, "") for k in header] for r in self.rows])


class TrainingImagesToTensorBoard(keras.callbacks.Callback):
    """Write a grid of augmented training images to TensorBoard once, at the start of training,
    so a user can see what the model is fed."""

    def __init__(self, log_dir, images, max_images=16):
        super().__init__()
        self.log_dir, self.images = Path(log_dir), np.asarray(images[:max_images])

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        writer = tf.summary.create_file_writer(str(self.log_dir / "train"))
        with writer.as_default():
            pixels = np.clip(self.images, 0, 255).astype(np.uint8)
            tf.summary.image("training images (augmented)", pixels, step=0,
                             max_outputs=len(pixels))
        writer.close()


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
            print(f"Progressive resizing: training on {size[0]}x{size[1]} images from epoch {epoch + 1}")
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


def remove_backup(backup_dir):
    shutil.rmtree(backup_dir, ignore_errors=True)
