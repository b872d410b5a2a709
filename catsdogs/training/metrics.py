"""Training metrics Keras lacks for blended labels.

With MixUp or CutMix a one-sigmoid model trains on labels such as 0.7 (70 % of the second
class). Keras' BinaryAccuracy compares the rounded prediction with the label itself, so a
blended label never counts as right and the training accuracy reads about a third. Here the
label is rounded first: a prediction is right when it names the label's larger share.
"""

import keras


@keras.saving.register_keras_serializable(package="catsdogs")
def majority_binary_accuracy(y_true, y_pred):
    """Binary accuracy against each label's larger share (0/1 labels: plain binary accuracy)."""
    y_pred = keras.ops.convert_to_tensor(y_pred)
    y_true = keras.ops.round(keras.ops.cast(y_true, y_pred.dtype))
    return keras.metrics.binary_accuracy(y_true, y_pred)


def blended_binary_accuracy():
    """The `accuracy` metric of a one-sigmoid model trained on blended labels."""
    return keras.metrics.MeanMetricWrapper(majority_binary_accuracy, name="accuracy")
