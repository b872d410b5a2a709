"""Training and validation batches without TensorFlow: a keras.utils.PyDataset taking the
steps of the tf.data pipeline (tf_pipeline.make_dataset), where Keras does not run on
TensorFlow (backends.py).

Each step as there: indices shuffled each epoch (a full permutation, seeded), one gather per
batch from memory or the disk cache, AlternatingFlips on the gathered pixels, the augmenter on
the whole batch, then the mixer, then the progressive size. The augmenter, mixer and resize
run as the backend's ops (on its device); the epoch-dependent values (flips' epoch, the size)
are set by the same callbacks, which Keras calls before it asks for the epoch's first batch.
On JAX the augmenter is one compiled program (`compiled_augmenter`), as XLA compiles it inside
tf.data: called op by op from Python it cost 8x the time per batch (88 against 11 ms for 32
images at 112x112 on a 2-core CPU), and on a GPU the CPU that dispatches the ops was what
limited training.
"""

import math

import keras
import numpy as np


def compiled_augmenter(augmenter):
    """`augmenter(images, training=True)` as one call: on JAX a jitted stateless call whose random
    state (the layers' seed generators, their non-trainable variables) goes in and comes back
    out, written back after each batch; elsewhere the layers as they are."""
    if keras.backend.backend() != "jax":
        return lambda images: augmenter(images, training=True)
    import jax

    @jax.jit
    def augment(trainable, state, images):
        return augmenter.stateless_call(trainable, state, images, training=True)

    def call(images):
        if not augmenter.built:  # the first batch builds the layers, op by op
            return augmenter(images, training=True)
        images, state = augment([v.value for v in augmenter.trainable_variables],
                                [v.value for v in augmenter.non_trainable_variables], images)
        for variable, value in zip(augmenter.non_trainable_variables, state):
            variable.assign(value)
        return images

    return call


class SplitBatches(keras.utils.PyDataset):
    """(float pixels 0..255, labels) batches of a decoded split; see make_dataset's docstring
    for the arguments (`resize_to` and `flips.epoch` are backends.HostValue here)."""

    def __init__(self, split, batch_size, augmenter=None, shuffle_seed=None, one_hot=None,
                 resize_to=None, flips=None, mixer=None):
        super().__init__(workers=1, use_multiprocessing=False)
        self.split, self.batch_size, self.one_hot = split, batch_size, one_hot
        self.augment = None if augmenter is None else compiled_augmenter(augmenter)
        self.mixer, self.resize_to, self.flips = mixer, resize_to, flips
        self.shuffle = None if shuffle_seed is None else np.random.default_rng(shuffle_seed)
        self.order = np.arange(len(split))
        self._reshuffle()

    def _reshuffle(self):
        if self.shuffle is not None:
            self.order = self.shuffle.permutation(len(self.split))

    def __len__(self):
        return math.ceil(len(self.split) / self.batch_size)

    def __getitem__(self, index):
        indices = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        labels = self.split.labels[indices]
        if self.one_hot:
            labels = np.eye(self.one_hot, dtype=np.float32)[labels]
        images = self.split.gather(indices)
        if self.flips is not None:
            images = self.flips.on_host(images, indices)
        images = images.astype(np.float32)
        if self.augment is not None:
            images = self.augment(images)
        if self.mixer is not None:
            images, labels = self.mixer(images, labels)
        if self.resize_to is not None:
            size = tuple(int(side) for side in self.resize_to.read_value())
            if size != tuple(images.shape[1:3]):
                images = keras.ops.image.resize(images, size, antialias=True)
        return images, labels

    def on_epoch_end(self):
        self._reshuffle()
