"""Decoded splits -> tf.data pipelines of augmented batches, and the store's own errors raised
out of them; host_pipeline.py takes the same steps where Keras does not run on TensorFlow."""

import contextlib

@contextlib.contextmanager
def read_errors_raised(data):
    """Raise the error the store of one of `data`'s splits raised reading pixels in a tf.data
    pipeline (a photo of `--cache none` that no longer decodes: streamed.DecodeOnRead), not
    the TensorFlow error that carried it out: tf.numpy_function passes on only its text, in a
    many-line error with a traceback, which would be one `error: internal:` line. (The host
    pipeline raises the store's own error.)"""
    from catsdogs.backends import tensorflow_trains

    if not tensorflow_trains():
        yield
        return
    import tensorflow as tf

    try:
        yield
    except tf.errors.OpError:
        splits = (data.train, data.val, data.test, data.calibration)
        failure = next(filter(None, (getattr(split.store, "failure", None)
                                     for split in splits if split is not None)), None)
        if failure is None:
            raise
        raise failure from None


def make_dataset(split, batch_size, augmenter=None, shuffle_seed=None, one_hot=None,
                 resize_to=None, flips=None, mixer=None):
    """A tf.data pipeline of (float pixels 0..255, label) batches from a decoded split.

    Order of steps, and why:
    - the decoded uint8 pixels are already in memory or in a disk cache (cache.py): they are
      the cache, so no step decodes or resizes again after the first pass (with --cache none
      the batch's files are decoded where a disk cache's rows would be read);
    - shuffle indices, not images: reshuffling 4-byte ints each epoch costs nothing, where a
      shuffle buffer of images would copy every image once more per epoch;
    - batch, then gather: one vectorised gather per batch instead of one per image; from a
      disk cache, the batch's rows are read from its file (memory stays a few batches,
      whatever the number of images), in the same order, so the batches are the same;
    - augment whole batches in a parallel `map`: the layers vectorise over the batch, and the
      CPU augments the next batches while the model trains on this one; XLA compiles the
      augmentation into one fused loop (4x the images/s of TensorFlow's own ops on a 2-core
      CPU: bench/RESULTS.md, "Input pipeline");
    - prefetch last, so the model never waits for the pipeline;
    - tf.data's autotuning off (parallel maps then use every core, prefetch sizes its own
      buffer; the pipeline bench is unchanged): with it on (TensorFlow 2.21), Keras dropping
      an epoch's iterator waits for the autotuner's thread to end its timed sleep, which
      cancelling does not cut short; up to a third of CIFAR-10 epochs stalled 25-55 s, no CPU
      in use (gdb during a stall: the main thread in RootDataset::Iterator's destructor, the
      autotuner's in Model::OptimizeLoop's wait; bench/history/tf-data-stalls.md).

    `one_hot=K` gives one-hot labels of K classes (for losses that smooth labels).
    `resize_to`, a tf.Variable [height, width], scales every batch (after augmentation) to the
    size it holds when the batch is made: progressive resizing (progressive.py).
    `flips`, an augment.AlternatingFlips, mirrors each batch's images due in this epoch, on the
    gathered pixels (it needs their indices), before the augmenter.
    `mixer`, an augment.build_batch_mixer step, follows the augmenter (MixUp and CutMix mix
    the labels too).

    Without TensorFlow, a host_pipeline.SplitBatches takes the same steps.
    """
    from catsdogs.backends import tensorflow_trains

    if not tensorflow_trains():
        from catsdogs.data.host_pipeline import SplitBatches

        return SplitBatches(split, batch_size, augmenter, shuffle_seed, one_hot, resize_to, flips,
                            mixer)
    import tensorflow as tf

    labels = tf.constant(split.labels)
    if split.on_disk:
        shape = (None, *split.store.shape[1:])

        def read(batch_indices):
            images = tf.numpy_function(split.gather, [batch_indices], tf.uint8, stateful=False)
            return tf.ensure_shape(images, shape)
    else:
        pixels = tf.constant(split.pixels)

        def read(batch_indices):
            return tf.gather(pixels, batch_indices)

    indices = tf.data.Dataset.range(len(split))
    if shuffle_seed is not None:
        indices = indices.shuffle(len(split), seed=shuffle_seed, reshuffle_each_iteration=True)

    def gather(batch_indices):
        batch_labels = tf.gather(labels, batch_indices)
        if one_hot:
            batch_labels = tf.one_hot(batch_labels, one_hot)
        images = read(batch_indices)
        if flips is not None:
            images = flips(images, batch_indices)
        return tf.cast(images, tf.float32), batch_labels

    dataset = indices.batch(batch_size).map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    if augmenter is not None:
        augment = tf.function(lambda x: augmenter(x, training=True), jit_compile=True)
        dataset = dataset.map(lambda x, y: (augment(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    if mixer is not None:
        dataset = dataset.map(mixer, num_parallel_calls=tf.data.AUTOTUNE)
    if resize_to is not None:
        def resize(images, batch_labels):
            size = resize_to.read_value()
            images = tf.cond(tf.reduce_all(size == tf.shape(images)[1:3]), lambda: images,
                             lambda: tf.image.resize(images, size, antialias=True))
            return images, batch_labels

        dataset = dataset.map(resize, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)
