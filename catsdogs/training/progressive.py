"""Progressive resizing: train the first epochs on smaller images, ending at full size.

A convolution's cost grows with the pixel count, so an epoch at 0.6x the side costs about a
third of one at full size; a network that pools globally learns the same filters at either
size. Starting small and growing (fastai's "progressive resizing", used in the DAWNBench
ImageNet records) buys more epochs in the same minutes. Validation, checkpoints and the saved
model always use the full size, so every reported accuracy is the one users get.

The size lives in a tf.Variable that the training pipeline reads for every batch; a Keras
callback (callbacks.ProgressiveResizing) sets it at the start of each epoch (Keras makes each epoch's iterator after
`on_epoch_begin`, so no batch of an epoch is made at the previous epoch's size). On resume,
Keras calls the callback with the resumed epoch, so the schedule continues where it stopped.
"""

RAMP = 0.75  # fraction of the epochs over which the side grows; the rest train at full size
STEP = 8  # sides are multiples of this many pixels


def side_for_epoch(epoch, epochs, start, full):
    """Image side (pixels) for 0-based `epoch` of `epochs`: `start` x `full` at the first
    epoch, growing linearly to `full` at RAMP of the epochs; the last epoch is always full size."""
    ramp_epochs = min(round(RAMP * epochs), epochs - 1)
    if epoch >= ramp_epochs:
        return full
    fraction = start + (1.0 - start) * epoch / ramp_epochs
    return min(full, max(STEP, round(fraction * full / STEP) * STEP))
