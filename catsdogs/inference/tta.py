"""Test-time augmentation: the views of a batch, and batched prediction that averages them.

Shared by predict and evaluate (and anything that wants probabilities for decoded pixels), so
the views are defined once.
"""

import numpy as np

from catsdogs.errors import CatsDogsError

TTA_MODES = ("flip", "shift")


def tta_mode(tta):
    """The TTA_MODES name for a `tta` argument: None (off), a mode, or True (the flip, as before
    there were modes). Checked here, before any image is decoded or predicted."""
    mode = "flip" if tta is True else tta or None
    if mode is not None and mode not in TTA_MODES:
        raise CatsDogsError(f"unknown test-time augmentation {mode!r}", where="--tta",
                            fix=f"use one of {', '.join(TTA_MODES)}")
    return mode


def tta_views(batch, mode):
    """(weight, view) pairs whose weighted probabilities make a test-time-augmented prediction;
    `mode` is one of TTA_MODES (tta_mode checks it once per call, not per batch).

    "flip": the batch and its mirror image, half each. "shift": airbench's views: those two
    (half), and each moved diagonally by a pixel both ways (the other half), edges repeated as
    ImageDataGenerator's "nearest" fill does in training; the pixel grows with the image
    (1 px per 32). On CIFAR-10, +0.2 to +0.7 points over flips alone (bench/RESULTS.md,
    "Test-time augmentation").
    """
    mirrored = batch[:, :, ::-1]
    if mode == "flip":
        return [(0.5, batch), (0.5, mirrored)]
    height, width = batch.shape[1:3]
    step = max(1, round(height / 32))
    views = [(0.25, batch), (0.25, mirrored)]
    for view in (batch, mirrored):
        padded = np.pad(view, ((0, 0), (step, step), (step, step), (0, 0)), mode="edge")
        views += [(0.125, padded[:, :height, :width]), (0.125, padded[:, 2 * step:, 2 * step:])]
    return views


def averaged_views(predict, pixels, mode, classes=0, batch_size=64):
    """Raw class probabilities (n, classes) of `predict` (float32 pixels -> probabilities) for
    decoded pixels, in batches: the plain view (`mode` None), or each batch's views of `mode`
    through it as one batch, their probabilities averaged by the views' weights. `classes`:
    the width of the result for no pixels."""
    out = []
    for start in range(0, len(pixels), batch_size):
        batch = np.asarray(pixels[start:start + batch_size], np.float32)
        if mode is None:
            out.append(predict(batch))
            continue
        weights, views = zip(*tta_views(batch, mode))
        probs = predict(np.concatenate(views)).reshape(len(views), len(batch), -1)
        out.append(np.tensordot(np.array(weights, np.float32), probs, axes=1))
    return np.concatenate(out) if out else np.zeros((0, classes))


def predict_arrays(classifier, pixels, batch_size=64, tta=None, calibrated=True):
    """Probabilities (n, classes) for decoded pixels, in batches.

    `tta`: None for the plain view, or one of TTA_MODES (True means "flip"); each batch's views
    go through the model as one batch. The views' raw probabilities are averaged, then the
    temperature fitted for those views applied (`Classifier.temperature_for`; unless
    `calibrated=False`), the same way everywhere."""
    mode = tta_mode(tta)
    raw = averaged_views(lambda batch: classifier.probabilities(batch, calibrated=False),
                         pixels, mode, len(classifier.class_names), batch_size)
    return classifier.tempered(raw, mode) if calibrated else raw
