"""Making models: the training run, its Keras callbacks, progressive resizing and where it
runs (tf.distribute). May use inference (the SavedModel writer) and everything below."""
