"""Images in: the one decoder, class folders and splits, tf.data pipelines, augmentation,
archives and downloads, and the dataset doctor. Uses only config, runs, errors and plots."""
