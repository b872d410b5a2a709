"""Precise BatchNorm statistics: after training, every BatchNormalization layer's moving mean
and variance recomputed as the plain average over the training photos, un-augmented, at full
size, with the final weights.

Why: during training the moving averages follow weights that kept changing and images that
were augmented (rotated, zoomed, brightened) and, with progressive resizing, smaller; the model
is then used on plain photos at full size, with weights that may be an average (--ema) no batch
ever ran through. Wu & Johnson, "Rethinking 'Batch' in BatchNorm" (2021) call the recomputation
PreciseBN (fvcore's `update_bn_stats`; PyTorch's `torch.optim.swa_utils.update_bn` does it for
averaged weights). Keras has no counterpart, so this is one in Keras' own terms: the layers run
in training mode on each batch, with their momentum set so that after batch k the moving
statistics are the mean of the first k batches' statistics.
"""

import numpy as np


def layers_of(layer, kind):
    """Every layer of class `kind` in `layer`, nested models included, in order."""
    found = [layer] if isinstance(layer, kind) else []
    for inner in getattr(layer, "layers", []):
        found += layers_of(inner, kind)
    return found


def recompute_statistics(model, pixels, batch_size=32):
    """Set the moving statistics of `model`'s trainable BatchNormalization layers to their
    mean over `pixels` (n, h, w, 3; 0..255, as the model takes them) in batches of
    `batch_size`, each batch weighted by its images, with Dropout off as in inference (so the
    result is the same every time). Frozen layers (a frozen or fine-tuned pretrained body, whose
    BatchNorm stays in inference mode) keep theirs: Keras updates only trainable ones. The
    weights are untouched. Returns the number of layers recomputed (0: nothing to do)."""
    import keras

    norms = [layer for layer in layers_of(model, keras.layers.BatchNormalization)
             if layer.trainable]
    if not norms or not len(pixels):
        return 0
    dropouts = layers_of(model, keras.layers.Dropout)
    momenta, rates = [layer.momentum for layer in norms], [layer.rate for layer in dropouts]
    try:
        for layer in dropouts:
            layer.rate = 0.0
        for seen in range(0, len(pixels), batch_size):
            batch = np.asarray(pixels[seen:seen + batch_size], np.float32)
            for layer in norms:  # 0 for the first batch: its statistics
                layer.momentum = seen / (seen + len(batch))
            model(batch, training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
        for layer, rate in zip(dropouts, rates):
            layer.rate = rate
    return len(norms)
