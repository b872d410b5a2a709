"""Which of TensorFlow's parts a run can use: training runs on any Keras backend.

With Keras on TensorFlow (the default), a run uses tf.data, tf.distribute, TensorBoard's
summaries and the SavedModel. On another backend (`KERAS_BACKEND=jax` on a GPU machine, with
or without TensorFlow installed), training takes the same steps without them: the input
pipeline is a keras.utils.PyDataset (data/host_pipeline.py), whose augmentation runs in the
backend's ops (tf.data would trace them as TensorFlow graphs, which JAX's ops cannot be), one
device trains, and the TensorBoard logs and saved_model/ are left out with one line saying so.
"""

import importlib.util


def tensorflow_trains():
    """Whether Keras runs on TensorFlow here: its backend is `tensorflow` and the package is
    installed (Keras is imported, TensorFlow is not)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return False
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ValueError, ImportError):  # a stand-in module without a spec; an import hook's refusal
        return False


class HostValue:
    """A value a callback sets and the host pipeline reads: the part of tf.Variable's interface
    (assign, read_value) that progressive resizing and alternating flips use."""

    def __init__(self, value):
        self.value = value

    def assign(self, value):
        self.value = value

    def read_value(self):
        return self.value


def pipeline_value(value, dtype):
    """A value callbacks set and the input pipeline reads for every batch: a tf.Variable that
    tf.data's graph reads, else a HostValue."""
    if not tensorflow_trains():
        return HostValue(value)
    import tensorflow as tf

    return tf.Variable(value, trainable=False, dtype=dtype)


def why_not_tensorflow():
    """The reason a run leaves TensorFlow's parts out, for the lines that say so."""
    import keras

    backend = keras.backend.backend()
    return (f"Keras runs on {backend} here, not TensorFlow" if backend != "tensorflow"
            else "TensorFlow is not installed")
