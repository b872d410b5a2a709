"""Transfer learning's two stages in one run: the head alone on a frozen body, then the body
unfrozen at a lower rate (Keras' transfer-learning guide; fastai's `fine_tune`).

Stage two recompiles with a new optimizer: its state belongs to the new set of trainable
weights, and its schedule spans the second stage's steps. BatchNorm layers never train again:
frozen, Keras runs them in inference mode, so the small new batches do not overwrite the
statistics the body was trained with. A frozen-by-design layer (the patch-whitening stem) stays
frozen.

One run folder, one history.csv (a `stage` column). The resume backup records its stage and the
epoch stage two began at, swapped in with the weights (callbacks.AtomicBackupAndRestore), so a
resumed run rebuilds the stage its backup was saved in.
"""

import dataclasses
import math

import keras

from catsdogs.config import UNFREEZE_ALL
from catsdogs.models.presets import WHITENING_LAYER
from catsdogs.models.transfer import body_layers, head_of
from catsdogs.training.callbacks import AtomicBackupAndRestore, HistoryCSV

STAGE_KEY, HEAD_EPOCHS_KEY = "stage", "head_epochs"


def staged(config):
    """A run freezes its body first when it starts from weights or asks for a second stage."""
    return config.freezes_body_first


def second_stage_config(config):
    """The settings stage two's optimizer is made from: its own rate (train.resolve_config
    fills the default, a tenth of the head's) and length."""
    return dataclasses.replace(config, epochs=config.fine_tune_epochs,
                               learning_rate=config.fine_tune_learning_rate)


def set_stage(model, stage, unfreeze=UNFREEZE_ALL):
    """Stage 1: only the head trains. Stage 2: the body's last `unfreeze` layers with weights
    (BatchNorm not counted) or all of them train too; BatchNorm layers never. Recompile after."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):  # a frozen container hides its layers' own flags
            layer.trainable = True
    body = body_layers(model)
    trained = []
    if stage == 2:
        trained = [layer for layer in body
                   if not isinstance(layer, keras.layers.BatchNormalization)
                   and layer.name != WHITENING_LAYER]
        if unfreeze != UNFREEZE_ALL:
            trained = trained[-int(unfreeze):]
    chosen = {id(layer) for layer in trained}
    for layer in body:
        layer.trainable = id(layer) in chosen
    head_of(model).trainable = True


class StageColumn(keras.callbacks.Callback):
    """Record the running stage in each epoch's logs (history.csv's `stage` column)."""

    def __init__(self):
        super().__init__()
        self.stage = 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[STAGE_KEY] = self.stage


def fit_in_stages(model, fit, config, callbacks, recompile, head_fit=None):
    """Fit `model` as `config` says: one stage, or the head's epochs then the body's.

    Args:
        fit: `model.fit` with the data bound; called with epochs, initial_epoch, callbacks.
        callbacks: the run's callbacks (an AtomicBackupAndRestore and a HistoryCSV among them).
        recompile: (config) -> None: compile the model again with an optimizer for `config`.
        head_fit: stage one's fit when it trains on features computed once (features.py);
            None: `fit`.
    """
    head_fit = head_fit or fit
    if not config.fine_tune_epochs:
        head_fit(epochs=config.epochs, callbacks=callbacks)
        return
    backup = next(c for c in callbacks if isinstance(c, AtomicBackupAndRestore))
    history = next(c for c in callbacks if isinstance(c, HistoryCSV))
    column = StageColumn()
    callbacks = [column, *callbacks]  # before history.csv's row is written
    saved = backup.saved_metadata()
    if saved.get(STAGE_KEY) != 2:
        head_fit(epochs=config.epochs, callbacks=callbacks)
        if not history.rows or not math.isfinite(float(history.rows[-1]["loss"])):
            return  # a NaN stops the run (train._raise_if_nan), not a second stage
        # the last epoch's number, not the row count: a worker resumed from the chief's
        # backup (distribute.take_chief_resume_state) may lack rows of epochs before it
        saved = {STAGE_KEY: 2, HEAD_EPOCHS_KEY: int(float(history.rows[-1]["epoch"]))}
        _enter_stage_two(model, config, recompile, backup, saved)
        backup.save_now(saved[HEAD_EPOCHS_KEY])  # a kill from here on resumes in stage two
    else:
        _enter_stage_two(model, config, recompile, backup, saved)
    column.stage = 2
    start = saved[HEAD_EPOCHS_KEY]
    fit(initial_epoch=start, epochs=start + config.fine_tune_epochs, callbacks=callbacks)


def _enter_stage_two(model, config, recompile, backup, saved):
    """Unfreeze, compile a new optimizer for the new trainable set, and mark the backup."""
    set_stage(model, 2, config.unfreeze)
    recompile(second_stage_config(config))
    model.optimizer.build(model.trainable_variables)  # its slots exist before any backup of it
    backup.stage = dict(saved)
